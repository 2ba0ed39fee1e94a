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
from agent.collectors.gpu import build_gpu_collector
from agent.collectors.memory import MemoryCollector
from agent.collectors.network import NetworkCollector
from agent.collectors.storage import StorageCollector
from agent.config import HOST_DIMENSION, AgentConfig, load
from agent.dryrun import PrintingClient
from agent.fake_nvml import healthy_h100
from agent.filters import NameFilter
from agent.loop import Agent, PublishWorker
from agent.nvml import Nvml
from agent.publisher import MetricsClient, Publisher
from agent.replay import Replayer
from agent.samples import Dimensions
from agent.schema import ConfigError
from agent.selfstats import AgentStats, ProcessUsage
from agent.spool import Spool, open_spool

log = structlog.get_logger()

EXIT_OK = 0
EXIT_INVALID = 2


def build_collectors(config: AgentConfig, fake_gpus: int = 0) -> list[Collector]:
    """Every enabled collector. Raises ConfigError when `gpu.enabled = true` and NVML cannot be used."""
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
    gpu = build_gpu_collector(config.gpu, Nvml(healthy_h100(fake_gpus, vary=True)) if fake_gpus else None)
    if gpu is not None:
        collectors.append(gpu)
    return collectors


def close_collectors(collectors: list[Collector]) -> None:
    """Stop collector threads (the GPU collector's Xid waiter) and release drivers, once, at exit."""
    for collector in collectors:
        close = getattr(collector, "close", None)
        if close is not None:
            close()


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
    root.add_argument("--fake-gpus", type=int, default=0, metavar="N",
                      help="for demos and tests only: read N simulated H100 GPUs instead of NVML")
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
    try:
        collectors = build_collectors(config, fake_gpus=args.fake_gpus)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    client: MetricsClient = PrintingClient(sys.stdout, args.format) if args.dry_run else cloudwatch_client()
    try:
        if args.once:
            return run_once(config, client, collectors)
        return run_forever(config, client, collectors, durable=not args.dry_run)
    finally:
        close_collectors(collectors)


def build_agent(config: AgentConfig, client: MetricsClient, stats: AgentStats, collectors: list[Collector],
                submit: Any = None, spool: Spool | None = None) -> tuple[Agent, Publisher]:
    aggregator = Aggregator(high_resolution=config.publish.high_resolution, on_drop=stats.add_dropped)
    publisher = Publisher(client, config.namespace, stats=stats,
                          retry_deadline=retry_deadline(config.publish.interval),
                          on_undeliverable=spool.put if spool is not None else None)
    gauges = [ProcessUsage().samples, *([spool.samples] if spool is not None else [])]
    agent = Agent(collectors=collectors, aggregator=aggregator, stats=stats,
                  submit=submit or publisher.publish, host_dimensions=host_dimensions(config), gauges=gauges)
    return agent, publisher


def run_once(config: AgentConfig, client: MetricsClient, collectors: list[Collector],
             sleep: Any = time.sleep) -> int:
    """Two collections a second apart (rates need a previous reading), then one synchronous flush."""
    stats = AgentStats()
    agent, _ = build_agent(config, client, stats, collectors)
    agent.collect()
    sleep(1.0)
    agent.collect()
    agent.flush()
    if isinstance(client, PrintingClient):
        print(client.cost_line(config.publish.interval))
    return EXIT_OK


def run_forever(config: AgentConfig, client: MetricsClient, collectors: list[Collector], durable: bool = True) -> int:
    """Run until SIGTERM/SIGINT. `durable`: spool what cannot be delivered (not for --dry-run)."""
    stats = AgentStats()
    stop = threading.Event()
    spool = open_spool(config.spool, stats) if durable else None
    worker_slot: list[PublishWorker] = []
    agent, publisher = build_agent(config, client, stats, collectors,
                                   submit=lambda datums: worker_slot[0].submit(datums), spool=spool)
    replayer = (Replayer(spool, publisher, requests_per_second=config.spool.replay_requests_per_second)
                if spool is not None else None)
    worker_slot.append(PublishWorker(publisher, replayer))

    received: list[str] = []

    def request_stop(signum: int, _frame: Any) -> None:
        # Only set the event: logging here could re-enter a stdout write the signal interrupted.
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    phase = config.publish.phase if config.publish.phase >= 0 else random.uniform(0, config.publish.interval)
    agent.run(stop, collect_interval=config.collect.interval, publish_interval=config.publish.interval,
              flush_phase=phase)
    log.info("stop_requested", signal=received[0] if received else None)
    finished = worker_slot[0].close(config.shutdown_timeout)
    if spool is not None:
        spool.close()
    log.info("agent_stopped", flushed=finished, collected=stats.collected, published=stats.published,
             dropped=dict(stats.dropped), spooled=spool.datapoints if spool is not None else 0)
    return EXIT_OK
