"""`infrawatch-agent`: the entry point. Logging, config, signals and wiring happen here and nowhere else."""

from __future__ import annotations

import argparse
import random
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from agent import logs
from agent.aggregate import Aggregator
from agent.collectors import Collector
from agent.collectors.cpu import CpuCollector
from agent.collectors.diskio import DiskIOCollector
from agent.collectors.memory import MemoryCollector
from agent.collectors.network import NetworkCollector
from agent.collectors.storage import StorageCollector
from agent.config import HOST_DIMENSION, AgentConfig, load
from agent.dryrun import PrintingClient
from agent.filters import NameFilter
from agent.loop import Agent, PublishWorker
from agent.publisher import MetricsClient, Publisher
from agent.samples import Dimensions
from agent.schema import ConfigError
from agent.selfstats import AgentStats

log = structlog.get_logger()

EXIT_OK = 0
EXIT_INVALID = 2


def build_collectors(config: AgentConfig) -> list[Collector]:
    collectors: list[Collector] = []
    if config.cpu.enabled:
        collectors.append(CpuCollector(per_core=config.cpu.per_core))
    if config.memory.enabled:
        collectors.append(MemoryCollector())
    if config.storage.enabled:
        collectors.append(StorageCollector(
            mounts=NameFilter(config.storage.include_mounts, config.storage.exclude_mounts),
            fstypes=NameFilter(config.storage.include_fstypes, config.storage.exclude_fstypes),
            timeout=config.storage.timeout,
        ))
    if config.diskio.enabled:
        collectors.append(DiskIOCollector(
            devices=NameFilter(config.diskio.include_devices, config.diskio.exclude_devices),
            partitions=config.diskio.partitions,
        ))
    if config.network.enabled:
        collectors.append(NetworkCollector(
            interfaces=NameFilter(config.network.include_interfaces, config.network.exclude_interfaces),
        ))
    return collectors


def host_dimensions(config: AgentConfig) -> Dimensions:
    return tuple(sorted(((HOST_DIMENSION, socket.gethostname()), *config.dimensions)))


def cloudwatch_client() -> Any:
    """boto3's client with the standard SDK configuration; retries are ours (tenacity), not botocore's."""
    import boto3
    from botocore.config import Config

    return boto3.client("cloudwatch", config=Config(
        retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=15,
    ))


def retry_deadline(publish_interval: int) -> float:
    """Retries end well before the next flush, so a backlog never builds up behind one request."""
    return publish_interval * 0.5


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="infrawatch-agent", description=__doc__)
    root.add_argument("--config", type=Path, help="TOML config file (default: every key at its default)")
    root.add_argument("--once", action="store_true", help="run one collect→publish cycle and exit")
    root.add_argument("--dry-run", action="store_true", help="print each PutMetricData request, send nothing")
    root.add_argument("--format", choices=("json", "table"), default="json", help="--dry-run output format")
    commands = root.add_subparsers(dest="command")
    check = commands.add_parser("check-config", help="validate a config file: exit 0 if valid, 2 if not")
    check.add_argument("path", type=Path)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config_path = args.path if args.command == "check-config" else args.config
    try:
        config = load(config_path)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    if args.command == "check-config":
        print(f"{config_path}: valid")
        return EXIT_OK
    logs.configure(config.log_level)
    client: MetricsClient = PrintingClient(sys.stdout, args.format) if args.dry_run else cloudwatch_client()
    if args.once:
        return run_once(config, client)
    return run_forever(config, client)


def build_agent(config: AgentConfig, client: MetricsClient, stats: AgentStats,
                submit: Any = None) -> tuple[Agent, Publisher]:
    aggregator = Aggregator(high_resolution=config.publish.high_resolution, on_drop=stats.add_dropped)
    publisher = Publisher(client, config.namespace, stats=stats,
                          retry_deadline=retry_deadline(config.publish.interval))
    agent = Agent(collectors=build_collectors(config), aggregator=aggregator, stats=stats,
                  submit=submit or publisher.publish, host_dimensions=host_dimensions(config))
    return agent, publisher


def run_once(config: AgentConfig, client: MetricsClient, sleep: Any = time.sleep) -> int:
    """Two collections a second apart (rates need a previous reading), then one synchronous flush."""
    stats = AgentStats()
    agent, _ = build_agent(config, client, stats)
    agent.collect()
    sleep(1.0)
    agent.collect()
    agent.flush()
    if isinstance(client, PrintingClient):
        print(client.cost_line(config.publish.interval))
    return EXIT_OK


def run_forever(config: AgentConfig, client: MetricsClient) -> int:
    stats = AgentStats()
    stop = threading.Event()
    worker_slot: list[PublishWorker] = []
    agent, publisher = build_agent(config, client, stats, submit=lambda datums: worker_slot[0].submit(datums))
    worker_slot.append(PublishWorker(publisher))

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("stop_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    agent.run(stop, collect_interval=config.collect.interval, publish_interval=config.publish.interval,
              flush_phase=random.uniform(0, config.publish.interval))
    finished = worker_slot[0].close(config.shutdown_timeout)
    log.info("agent_stopped", flushed=finished, collected=stats.collected, published=stats.published,
             dropped=dict(stats.dropped))
    return EXIT_OK
