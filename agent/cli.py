"""`infrawatch-agent`: the entry point. Logging, config, signals and wiring happen here and nowhere else."""

from __future__ import annotations

import argparse
import dataclasses
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from agent import iam, logs
from agent.aggregate import Aggregator
from agent.collectors import Collector
from agent.collectors.cpu import CpuCollector
from agent.collectors.cwagent_cpu import CwagentCpuCollector
from agent.collectors.diskio import DiskIOCollector
from agent.collectors.gpu import build_gpu_collector
from agent.collectors.memory import MemoryCollector
from agent.collectors.netstat import NetstatCollector
from agent.collectors.network import NetworkCollector
from agent.collectors.storage import StorageCollector
from agent.config import AgentConfig, load
from agent.dryrun import PrintingClient
from agent.fake_nvml import healthy_h100
from agent.filters import MetricExclusions, NameFilter
from agent.fleet import DimensionPlan
from agent.host import HostContext
from agent.loop import Agent, PublishWorker
from agent.naming import Namer, profile
from agent.nvml import Nvml
from agent.prometheus import Endpoint, EndpointError, Snapshot
from agent.publisher import MetricsClient, Publisher
from agent.reload import ConfigReloader
from agent.replay import Replayer
from agent.schema import ConfigError
from agent.sdnotify import Notifier, ServiceStatus, Watchdog
from agent.selfstats import AgentStats, ProcessUsage
from agent.spool import Spool, open_spool
from agent.statsd.service import start_statsd
from agent.wakeup import WakeupFlag

log = structlog.get_logger()

EXIT_OK = 0
EXIT_INVALID = 2


def build_collectors(config: AgentConfig, fake_gpus: int = 0) -> list[Collector]:
    """Every enabled collector. Raises ConfigError when `gpu.enabled = true` and NVML cannot be used."""
    collectors: list[Collector] = []
    naming = profile(config.naming)
    needed = naming.device_dimensions  # dimensions the naming profile publishes
    cwagent = naming.formulas == "cwagent"  # the CloudWatch agent's formulas and its extra series
    if config.cpu.enabled:
        cpu = CwagentCpuCollector if cwagent else CpuCollector
        collectors.append(cpu(per_core=config.cpu.per_core))
    if config.memory.enabled:
        collectors.append(MemoryCollector(formulas=naming.formulas))
    if config.storage.enabled:
        collectors.append(StorageCollector(
            mounts=NameFilter(config.storage.include_mounts, config.storage.exclude_mounts),
            fstypes=NameFilter(config.storage.include_fstypes, config.storage.exclude_fstypes),
            timeout=config.storage.timeout,
            device_dimensions={"Device", "FSType"} <= needed,
            inodes_free=cwagent,
        ))
    if config.diskio.enabled:
        collectors.append(DiskIOCollector(
            devices=NameFilter(config.diskio.include_devices, config.diskio.exclude_devices),
            partitions=config.diskio.partitions,
            io_time=cwagent,
        ))
    if config.network.enabled:
        collectors.append(NetworkCollector(
            interfaces=NameFilter(config.network.include_interfaces, config.network.exclude_interfaces),
        ))
        if cwagent:
            collectors.append(NetstatCollector())
    gpu_config = dataclasses.replace(config.gpu, name_dimension=True) if "GPUName" in needed else config.gpu
    gpu = build_gpu_collector(gpu_config, Nvml(healthy_h100(fake_gpus, vary=True)) if fake_gpus else None,
                              arch_dimension="GPUArch" in needed)
    if gpu is not None:
        collectors.append(gpu)
    return collectors


def close_collectors(collectors: list[Collector]) -> None:
    """Stop collector threads (the GPU collector's Xid waiter) and release drivers, once, at exit."""
    for collector in collectors:
        close = getattr(collector, "close", None)
        if close is not None:
            close()


def cloudwatch_client(region: str) -> Any:
    """boto3's client with the standard SDK configuration; retries are ours (tenacity), not botocore's."""
    import boto3
    from botocore.config import Config

    return boto3.client("cloudwatch", region_name=region, config=Config(
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
    commands.add_parser("print-iam-policy", help="print the least-privilege IAM policy the --config needs")
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
    if args.command == "print-iam-policy":
        sys.stdout.write(iam.render(config))
        return EXIT_OK
    logs.configure(config.log_level)
    try:
        collectors = build_collectors(config, fake_gpus=args.fake_gpus)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    try:
        host = HostContext(config.ec2)
        client: MetricsClient
        if args.dry_run:
            client = PrintingClient(sys.stdout, args.format)
        else:
            region = host.region()
            if region is None:
                log.error("no_region", hint="set AWS_REGION or a profile's region, or run on EC2")
                return EXIT_INVALID
            client = cloudwatch_client(region)
        if args.once:
            return run_once(config, client, collectors, host=host)
        return run_forever(config, client, collectors, host, config_path,
                           rebuild=lambda new: build_collectors(new, fake_gpus=args.fake_gpus),
                           durable=not args.dry_run)
    finally:
        close_collectors(collectors)  # run_forever leaves the current set in this list


def build_agent(config: AgentConfig, client: MetricsClient, stats: AgentStats, collectors: list[Collector],
                plan: DimensionPlan, submit: Any = None, spool: Spool | None = None,
                snapshot: Snapshot | None = None) -> tuple[Agent, Publisher]:
    namer = Namer(config.naming, config.collect.interval)
    aggregator = Aggregator(high_resolution=config.publish.high_resolution, on_drop=stats.add_dropped,
                            on_merge=stats.add_merged, publish_as=namer.datum)
    publisher = Publisher(client, config.namespace, stats=stats,
                          retry_deadline=retry_deadline(config.publish.interval),
                          on_undeliverable=spool.put if spool is not None else None)
    gauges = [ProcessUsage().samples, *([spool.samples] if spool is not None else [])]
    agent = Agent(collectors=collectors, aggregator=aggregator, stats=stats,
                  submit=submit or publisher.publish, plan=plan, gauges=gauges,
                  keeps=MetricExclusions(config.exclude_metrics).keeps if config.exclude_metrics else None,
                  # Off, nobody scrapes: no copy of every series' latest reading (at 20,000 StatsD series the
                  # agent's peak RSS went from 148.6 to 130.4 MB without it, bench/statsd_memory.py).
                  observe=snapshot.update if snapshot is not None and config.prometheus.enabled else None,
                  sample_as=namer.sample)
    return agent, publisher


def replace_endpoint(current: Endpoint | None, config: AgentConfig, snapshot: Snapshot) -> Endpoint | None:
    """The endpoint `config` asks for. At a reload, an address that cannot be listened on keeps the running
    endpoint (logged); at startup (`current` None) it raises EndpointError."""
    wanted = config.prometheus.address if config.prometheus.enabled else None
    if current is not None and current.address == wanted:
        return current
    if wanted is None:
        if current is not None:
            current.close()
        return None
    try:
        endpoint = Endpoint(wanted, snapshot)
    except EndpointError as error:
        if current is None:
            raise
        log.warning("prometheus_address_rejected", problem=str(error), kept=current.address)
        return current
    if current is not None:
        current.close()
    return endpoint


def run_once(config: AgentConfig, client: MetricsClient, collectors: list[Collector],
             sleep: Any = time.sleep, host: HostContext | None = None) -> int:
    """Two collections a second apart (rates need a previous reading), then one synchronous flush."""
    host = host or HostContext(config.ec2)
    stats = AgentStats()
    plan = host.plan(config)
    agent, _ = build_agent(config, client, stats, collectors, plan)
    agent.collect()
    sleep(1.0)
    agent.collect()
    host.wait_for_group(config.ec2.tag_wait)
    plan.stop_holding()
    agent.flush()
    if isinstance(client, PrintingClient):
        print(client.cost_line(config.publish.interval))
    return EXIT_OK


def run_forever(config: AgentConfig, client: MetricsClient, collectors: list[Collector], host: HostContext,
                config_path: Path | None = None,
                rebuild: Callable[[AgentConfig], list[Collector]] = build_collectors, durable: bool = True) -> int:
    """Run until SIGTERM/SIGINT; `durable`: spool what cannot be delivered (not for --dry-run).

    On SIGHUP the loop ends with a flush (nothing aggregated is lost); a valid new file then replaces the
    agent and `collectors` (in place), an invalid one is logged and the same agent carries on. The spool
    is opened once, from the config at start: a reload keeps it and its [spool] settings.
    """
    stats = AgentStats()
    snapshot = Snapshot(stale_after=3 * config.publish.interval)  # self-metrics are read once per flush
    try:
        endpoint = replace_endpoint(None, config, snapshot)
    except EndpointError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID
    statsd = start_statsd(config, on_drop=stats.add_dropped, on_merge=stats.add_merged,
                          on_error=lambda: stats.add_collector_error("statsd"))
    stop = WakeupFlag()  # set from signal handlers: threading.Event.set could deadlock there
    received: list[int] = []
    watchdog = Watchdog(notifier := Notifier())
    status = ServiceStatus(notifier, watchdog)
    reloader = ConfigReloader(config_path)
    spool = open_spool(config.spool, stats) if durable else None
    plan_slot: list[DimensionPlan] = []
    worker_slot: list[PublishWorker] = []

    def on_signal(signum: int, _frame: Any) -> None:
        # Only flags and events: logging here could re-enter a stdout write the signal interrupted.
        received.append(signum)
        plan_slot[0].stop_holding()
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    agent: Agent | None = None
    while True:
        if agent is None:
            if watchdog.interval is not None and config.collect.interval >= watchdog.interval:
                # Pings come once per collection: they would arrive too late and systemd would kill us.
                log.warning("watchdog_too_short", ping_every_s=watchdog.interval,
                            collect_interval=config.collect.interval, hint="raise WatchdogSec in a drop-in")
            plan_slot[:] = [host.plan(config)]
            running = [*collectors, *([statsd] if statsd is not None else [])]
            agent, publisher = build_agent(config, client, stats, running, plan_slot[0],
                                           submit=lambda datums: worker_slot[0].submit(datums), spool=spool,
                                           snapshot=snapshot)
            replayer = (Replayer(spool, publisher, requests_per_second=config.spool.replay_requests_per_second)
                        if spool is not None else None)
            worker_slot[:] = [PublishWorker(publisher, replayer)]
        phase = config.publish.phase if config.publish.phase >= 0 else random.uniform(0, config.publish.interval)
        agent.run(stop, collect_interval=config.collect.interval, publish_interval=config.publish.interval,
                  flush_phase=phase, on_cycle=status.cycle_done)
        stop.clear()
        signums = []
        while received:  # pop one by one: a signal arriving meanwhile is kept for the next turn
            signums.append(received.pop(0))
        stopping = [signum for signum in signums if signum != signal.SIGHUP]
        if stopping:
            log.info("stop_requested", signal=signal.Signals(stopping[0]).name)
            break
        reloaded = reloader.reload(rebuild) if signums else None
        if reloaded is None:
            continue
        status.reloading()
        flushed = worker_slot[0].close(config.shutdown_timeout)
        close_collectors(collectors)
        config, collectors[:] = reloaded
        if statsd is not None:
            statsd.close()  # before the new listener binds: it may want the same port
        statsd = start_statsd(config, on_drop=stats.add_dropped, on_merge=stats.add_merged,
                              on_error=lambda: stats.add_collector_error("statsd"))
        endpoint = replace_endpoint(endpoint, config, snapshot)
        logs.configure(config.log_level)
        log.info("config_applied", namespace=config.namespace, naming=config.naming, flushed=flushed)
        agent = None
    status.stopping()
    finished = worker_slot[0].close(config.shutdown_timeout)
    if spool is not None:
        spool.close()
    stop.close()
    if statsd is not None:
        statsd.close()
    if endpoint is not None:
        endpoint.close()
    log.info("agent_stopped", flushed=finished, collected=stats.collected, published=stats.published,
             dropped=dict(stats.dropped), spooled=spool.datapoints if spool is not None else 0)
    return EXIT_OK
