"""`infrawatch-agent`: the entry point. Logging, config, signals and wiring happen here and nowhere else."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, cast

import structlog

from agent import iam, logs
from agent.aggregate import Aggregator, Datum
from agent.catalogue import METRICS
from agent.cloudwatch_rules import NETWORK_ERRORS, REJECTED_CODES, standard_units
from agent.collectors import Collector
from agent.collectors.cpu import CpuCollector
from agent.collectors.cwagent_cpu import CwagentCpuCollector
from agent.collectors.diskio import DiskIOCollector
from agent.collectors.gpu import build_gpu_collector
from agent.collectors.memory import MemoryCollector
from agent.collectors.netstat import NetstatCollector
from agent.collectors.network import NetworkCollector
from agent.collectors.storage import StorageCollector
from agent.commandline import CommandParser, version
from agent.config import AgentConfig, load, warnings
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
from agent.samples import Sample
from agent.schema import ConfigError
from agent.sdnotify import Notifier, ServiceStatus, Watchdog
from agent.selfstats import AgentStats, ProcessUsage
from agent.spool import Spool, open_spool
from agent.statsd.service import StatsdService, start_statsd
from agent.wakeup import WakeupFlag

log = structlog.get_logger()

EXIT_OK = 0
EXIT_NOT_DELIVERED = 1  # --once: CloudWatch did not accept everything that was collected
EXIT_INVALID = 2
NETWORK_ERROR_CODES = frozenset(error.__name__ for error in NETWORK_ERRORS)
# STS and CloudWatch codes for credentials that exist but are not accepted, or lack the permission.
REFUSED_CREDENTIAL_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
    "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch", "InvalidSignatureException",
})


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


DESCRIPTION = """\
Collects this host's CPU, memory, storage, disk, network and NVIDIA GPU metrics, and the StatsD metrics
of jobs running on it, and publishes them to Amazon CloudWatch (and, when enabled, on a Prometheus /metrics
endpoint).

As a service it runs until SIGTERM, re-reads its config on SIGHUP, and keeps what CloudWatch has not
accepted in a spool to send later. Every config key has a default, so --config is optional."""

EPILOG = """\
examples:
  infrawatch-agent --once --dry-run --format table    this host's readings, printed; nothing is sent
  infrawatch-agent --once --config agent.toml         publish one cycle with your AWS credentials
  infrawatch-agent check-config --config agent.toml   validate a config file
  infrawatch-agent print-iam-policy --config agent.toml > policy.json

exit codes:
  0  done (with --once: everything collected was delivered)
  1  with --once: what was collected was not delivered; the last line on stderr says why
  2  invalid config or command line: one line per problem"""


def parser() -> CommandParser:
    root = CommandParser(prog="infrawatch-agent", description=DESCRIPTION, epilog=EPILOG,
                         example="infrawatch-agent --once --dry-run --format table")
    config_help = "the TOML config file (default: every key at its default)"
    root.add_argument("--config", type=Path, metavar="PATH", help=config_help)
    root.add_argument("--once", action="store_true",
                      help="collect twice a second apart, publish once, and exit (for a first try or a deploy check)")
    root.add_argument("--dry-run", action="store_true",
                      help="print each PutMetricData request on stdout instead of sending it (logs go to stderr)")
    root.add_argument("--format", choices=("json", "table"), default="json",
                      help="how --dry-run prints requests: json, one request per line (default), or a table")
    root.add_argument("--fake-gpus", type=int, default=0, metavar="N",
                      help="for demos and tests only: read N simulated H100 GPUs instead of NVML")
    commands = root.add_subparsers(dest="command", title="commands (optional)", metavar="[COMMAND]")
    check = commands.add_parser(
        "check-config", help="validate a config file: exit 0 if valid (warnings on stderr), 2 if not",
        description="Validate a config file: exit 0 if it is valid (risky settings are warned about on stderr), "
        "2 if not, with one line per problem.",
        example="infrawatch-agent check-config --config /etc/infrawatch/agent.toml", with_version=False,
    )
    check.add_argument("path", type=Path, nargs="?", metavar="PATH",
                       help="the config file (same as --config; neither: the defaults are checked)")
    policy = commands.add_parser(
        "print-iam-policy", help="print the least-privilege IAM policy the config needs",
        description="Print the least-privilege IAM policy (JSON) the agent needs with this config.",
        example="infrawatch-agent print-iam-policy --config agent.toml", with_version=False,
    )
    policy.add_argument("--with-ssm", metavar="PARAMETER", default=None,
                        help="also let the instance read its config from this SSM Parameter Store name, as the SSM "
                        "rollout does (docs/rollout.md)")
    for command in (check, policy):  # --config is also accepted after the command
        command.add_argument("--config", type=Path, metavar="PATH", default=argparse.SUPPRESS, help=config_help)
    root.commands["check-config"] = check
    return root


def config_path_of(command_line: CommandParser, args: argparse.Namespace) -> Path | None:
    """--config before or after the command, or check-config's positional path (the older form)."""
    if args.command != "check-config":
        return cast("Path | None", args.config)
    check = command_line.commands["check-config"]
    if args.path is not None and args.config is not None and args.path != args.config:
        check.error(f"got two files, {args.path} and --config {args.config}: give one")
    return cast("Path | None", args.path or args.config)  # none: the defaults, as the agent would run


def main(argv: list[str] | None = None) -> int:
    command_line = parser()
    args = command_line.parse_args(argv)
    config_path = config_path_of(command_line, args)
    try:
        config = load(config_path)
    except ConfigError as error:
        return invalid(error)
    if args.command == "check-config":
        name = config_path or "no --config, every key at its default"
        print(f"{name}: valid")
        for warning in warnings(config):
            print(f"{name}: warning: {warning}", file=sys.stderr)
        return EXIT_OK
    if args.command == "print-iam-policy":
        sys.stdout.write(iam.render(config, args.with_ssm))
        return EXIT_OK
    # --dry-run's requests are the output: logs stay out of stdout so it can be piped (to jq, say).
    log_stream = sys.stderr if args.dry_run else None
    logs.configure(config.log_level, stream=log_stream)
    if args.once:
        return start(args, config, config_path, None, log_stream)
    signals = Signals().install()  # before startup's slow steps: NVML, IMDS
    try:
        return start(args, config, config_path, signals, log_stream)
    finally:
        signals.close()


def start(args: argparse.Namespace, config: AgentConfig, config_path: Path | None, signals: Signals | None,
          log_stream: TextIO | None) -> int:
    """Build the collectors and the client, then run once (`signals` None: --once) or until stopped."""
    try:
        collectors = build_collectors(config, fake_gpus=args.fake_gpus)
    except ConfigError as error:
        return invalid(error)
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
        if signals is None:
            return run_once(config, client, collectors, host=host)
        return run_forever(config, client, collectors, host, signals, config_path,
                           rebuild=lambda new: build_collectors(new, fake_gpus=args.fake_gpus),
                           durable=not args.dry_run, log_stream=log_stream)
    finally:
        close_collectors(collectors)  # run_forever leaves the current set in this list


def invalid(error: ConfigError) -> int:
    for problem in error.problems:
        print(problem, file=sys.stderr)
    return EXIT_INVALID


def running_version() -> list[Sample]:
    """AgentVersion: 1 per flush, the installed distribution's version as a dimension."""
    return [METRICS["AgentVersion"].sample(1, Component="agent", Version=version())]


def build_agent(config: AgentConfig, client: MetricsClient, stats: AgentStats, collectors: list[Collector],
                plan: DimensionPlan, submit: Any = None, spool: Spool | None = None,
                snapshot: Snapshot | None = None, retry_sleep: Callable[[float], None] | None = None,
                monotonic: Callable[[], float] = time.monotonic,
                wall_clock: Callable[[], float] = time.time) -> tuple[Agent, Publisher]:
    namer = Namer(config.naming, config.collect.interval)
    standard_units()  # botocore's model, read at start-up (before freeze_heap) rather than in the first flush
    aggregator = Aggregator(high_resolution=config.publish.high_resolution, on_drop=stats.add_dropped,
                            on_merge=stats.add_merged, publish_as=namer.datum)
    publisher = Publisher(client, config.namespace, stats=stats,
                          retry_deadline=retry_deadline(config.publish.interval),
                          # Rows carry this config's namespace: a reload to another never re-labels them.
                          on_undeliverable=functools.partial(spool.put, namespace=config.namespace)
                          if spool is not None else None,
                          sleep=retry_sleep, monotonic=monotonic)
    gauges = [ProcessUsage().samples, *([spool.samples] if spool is not None else []),
              *([running_version] if config.version_series else [])]
    agent = Agent(collectors=collectors, aggregator=aggregator, stats=stats,
                  submit=submit or publisher.publish, plan=plan, gauges=gauges, wall_clock=wall_clock,
                  keeps=MetricExclusions(config.exclude_metrics).keeps if config.exclude_metrics else None,
                  # Off, nobody scrapes: no copy of every series' latest reading (at 20,000 StatsD series the
                  # agent's peak RSS went from 148.6 to 130.4 MB without it, bench/statsd_memory.py).
                  observe=snapshot.update if snapshot is not None and config.prometheus.enabled else None,
                  sample_as=namer.sample_stage,
                  # Below a bucket (10-59 s at standard resolution) the user asked for faster delivery: each
                  # flush then still sends the open minute so far.
                  hold_open=config.publish.interval >= aggregator.bucket_seconds)
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
             sleep: Callable[[float], None] = time.sleep, host: HostContext | None = None,
             retry_sleep: Callable[[float], None] | None = None, monotonic: Callable[[], float] = time.monotonic,
             err: TextIO | None = None) -> int:
    """Two collections a second apart (rates need a previous reading), then one synchronous flush.

    EXIT_OK when CloudWatch accepted every datapoint; else EXIT_NOT_DELIVERED with one line on `err`
    (stderr) saying how many were not and why: deploy checks rely on it."""
    host = host or HostContext(config.ec2)
    stats = AgentStats()
    plan = host.plan(config)
    handed: list[Datum] = []
    agent, publisher = build_agent(config, client, stats, collectors, plan, submit=handed.extend,
                                   retry_sleep=retry_sleep, monotonic=monotonic)
    agent.collect()
    sleep(1.0)
    agent.collect()
    host.wait_for_group(config.ec2.tag_wait)
    plan.stop_holding()
    agent.flush(final=True)
    publisher.publish(handed)
    if isinstance(client, PrintingClient):
        # JSON output is one request per line, for jq and the like: the summary goes beside it, on stderr.
        print(client.cost_line(config.publish.interval),
              file=sys.stdout if client.output_format == "table" else err or sys.stderr)
    total = sum(datum.datapoints for datum in handed)
    if stats.published == total:
        return EXIT_OK
    print(f"infrawatch-agent: not delivered: {total - stats.published} of {total} datapoints "
          f"({undelivered_reason(stats, client)})", file=err or sys.stderr)
    return EXIT_NOT_DELIVERED


def undelivered_reason(stats: AgentStats, client: MetricsClient) -> str:
    """Each error code the requests failed with, and what it means for someone running --once by hand."""
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", "the CloudWatch endpoint")
    hints = []
    for code in sorted(stats.publish_errors):
        if code == "NoCredentialsError":
            hint = "no AWS credentials: use a profile (AWS_PROFILE), AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, " \
                   "or an instance role"
        elif code in NETWORK_ERROR_CODES:
            hint = f"could not reach {endpoint}"
        elif code in REFUSED_CREDENTIAL_CODES:
            hint = "the credentials were refused, or may not call cloudwatch:PutMetricData " \
                   "(infrawatch-agent print-iam-policy prints the policy)"
        elif code in REJECTED_CODES:
            hint = "CloudWatch rejected the data as invalid (the publish_rejected log line names the datum)"
        else:
            hint = "see the publish_failed log line"
        hints.append(f"{code}: {hint}")
    return "; ".join(hints) or "see the log lines above"


HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Signals:
    """SIGTERM, SIGINT and SIGHUP as flags. Installed before startup's slow steps (IMDS, NVML), so a signal
    that arrives while the agent starts is kept: the agent then stops (or reloads) after its first
    collection, as it would later on."""

    def __init__(self) -> None:
        self.flag = WakeupFlag()  # threading.Event.set could deadlock in a signal handler
        self._received: list[int] = []
        self._previous: dict[int, Any] = {}

    def install(self) -> Signals:
        self._previous = {signum: signal.signal(signum, self._handle) for signum in HANDLED}
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        # Only a list and a flag: logging here could re-enter a stdout write the signal interrupted, and the
        # agent may not be built yet (a signal during startup).
        self._received.append(signum)
        self.flag.set()

    def close(self) -> None:
        """The handlers from before `install` again (Python's own, or a test runner's)."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self.flag.close()

    def take(self) -> list[int]:
        """The signals received since the last call, in order; clears the flag first, so a signal arriving
        meanwhile sets it again and is kept for the next turn."""
        self.flag.clear()
        taken = []
        while self._received:
            taken.append(self._received.pop(0))
        return taken


def freeze_heap() -> int:
    """Move what start-up (or a reload) built out of the cyclic garbage collector's sight; returns how many
    objects that is.

    Modules, botocore's service model, the collectors and the agent live until the next reload, yet every full
    collection walked them all again, and the objects the agent keeps for a second or a minute (snapshot
    entries, the minute's distributions) trigger one every few seconds at 1 s collection: 1.8 ms of CPU a
    second of the 15 ms the Prometheus bench's workload costs (bench/prometheus_scrape.py). Unfrozen and
    collected first, so what the previous build left in reference cycles is freed, not kept for good.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


MAX_RANDOM_PHASE = 30  # seconds: a closed minute reaches CloudWatch within this of its end (15 s on average)


def flush_phase(config: AgentConfig, draw: Callable[[], float] = random.random) -> float:
    """Seconds past each wall-clock multiple of publish.interval at which this host flushes: publish.phase, or
    when it is negative a random one, so a fleet's requests spread, drawn with `draw` (uniform in [0, 1)).

    The random phase is in [0, min(publish.interval, 30)) s, not the whole interval: a flush holds the open
    minute back (`Agent.flush`), so a phase late in the minute would keep every closed minute from CloudWatch
    for that long (30 s on average at [0, 60)). Over 30 s a fleet's peak request rate stays about what it was
    for hosts of 1,000 datums or more (each sends half the requests) and doubles for hosts of one request a
    flush (docs/configuration.md, "How it publishes")."""
    if config.publish.phase >= 0:
        return config.publish.phase
    return draw() * min(config.publish.interval, MAX_RANDOM_PHASE)


def prometheus_snapshot(config: AgentConfig, monotonic: Callable[[], float] = time.monotonic) -> Snapshot:
    """The latest readings the endpoint serves. A gauge goes stale after three of its updates missed: the
    self-metrics are read once per flush, StatsD gauges once per statsd.flush_interval."""
    return Snapshot(stale_after=3 * max(config.publish.interval, config.statsd.flush_interval), monotonic=monotonic)


def run_forever(config: AgentConfig, client: MetricsClient, collectors: list[Collector], host: HostContext,
                signals: Signals, config_path: Path | None = None,
                rebuild: Callable[[AgentConfig], list[Collector]] = build_collectors, durable: bool = True,
                log_stream: TextIO | None = None, monotonic: Callable[[], float] = time.monotonic,
                wall_clock: Callable[[], float] = time.time, draw: Callable[[], float] = random.random) -> int:
    """Run until SIGTERM/SIGINT; `durable`: spool what cannot be delivered (not for --dry-run).

    On SIGTERM or SIGINT, and on a SIGHUP whose file is valid, the StatsD listener hands over what the
    kernel holds, the agent collects once more and flushes: nothing received is lost. A valid new file then
    replaces the agent and `collectors` (in place); an invalid one is logged and the same agent carries on
    without a pause. The spool is opened once, from the config at start: a reload keeps it and its [spool]
    settings. `monotonic` and `wall_clock` drive the loop, the aggregator's timestamps and StatsD's windows;
    `draw` (uniform in [0, 1)) picks the flush phase at each start and reload (`flush_phase`).
    """
    stats = AgentStats()
    snapshot = prometheus_snapshot(config)
    try:
        endpoint = replace_endpoint(None, config, snapshot)
    except EndpointError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID

    def listen(current: AgentConfig) -> StatsdService | None:
        return start_statsd(current, on_drop=stats.add_dropped, on_merge=stats.add_merged,
                            on_error=lambda: stats.add_collector_error("statsd"), monotonic=monotonic,
                            wall_clock=wall_clock)

    statsd = listen(config)
    watchdog = Watchdog(notifier := Notifier())
    status = ServiceStatus(notifier, watchdog)
    reloader = ConfigReloader(config_path)
    spool = open_spool(config.spool, stats, config.namespace) if durable else None
    worker_slot: list[PublishWorker] = []
    stopping: list[int] = []
    reloaded: list[tuple[AgentConfig, list[Collector]]] = []

    def on_stop() -> bool:
        """True to carry on (no signal, or a reload refused); else the run ends with a last collection."""
        signums = signals.take()
        stopping.extend(signum for signum in signums if signum != signal.SIGHUP)
        if not stopping:
            result = reloader.reload(rebuild) if signums else None
            if result is None:
                return True
            reloaded.append(result)
        plan.stop_holding()  # the last flush publishes what waited for the Auto Scaling group, with what is known
        if statsd is not None:
            statsd.close()  # hands over what the kernel holds; a new listener may want the same port
        return False

    agent: Agent | None = None
    while True:
        if agent is None:
            if watchdog.interval is not None and config.collect.interval >= watchdog.interval:
                # Pings come once per collection: they would arrive too late and systemd would kill us.
                log.warning("watchdog_too_short", ping_every_s=watchdog.interval,
                            collect_interval=config.collect.interval, hint="raise WatchdogSec in a drop-in")
            plan = host.plan(config)
            running = [*collectors, *([statsd] if statsd is not None else [])]
            agent, publisher = build_agent(config, client, stats, running, plan,
                                           submit=lambda datums: worker_slot[0].submit(datums), spool=spool,
                                           snapshot=snapshot, wall_clock=wall_clock)
            replayer = (Replayer(spool, publisher, requests_per_second=config.spool.replay_requests_per_second)
                        if spool is not None else None)
            worker_slot[:] = [PublishWorker(publisher, replayer)]
            freeze_heap()
        phase = flush_phase(config, draw)
        agent.run(signals.flag, collect_interval=config.collect.interval, publish_interval=config.publish.interval,
                  flush_phase=phase, monotonic=monotonic, on_cycle=status.cycle_done, on_stop=on_stop)
        if stopping:
            log.info("stop_requested", signal=signal.Signals(stopping[0]).name)
            break
        status.reloading()
        flushed = worker_slot[0].close(config.shutdown_timeout)
        close_collectors(collectors)
        config, collectors[:] = reloaded.pop()
        statsd = listen(config)
        endpoint = replace_endpoint(endpoint, config, snapshot)
        logs.configure(config.log_level, stream=log_stream)
        log.info("config_applied", namespace=config.namespace, naming=config.naming, flushed=flushed)
        agent = None
    status.stopping()
    finished = worker_slot[0].close(config.shutdown_timeout)
    if spool is not None:
        spool.close()
    if endpoint is not None:
        endpoint.close()
    log.info("agent_stopped", flushed=finished, collected=stats.collected, published=stats.published,
             dropped=dict(stats.dropped), spooled=spool.datapoints if spool is not None else 0)
    return EXIT_OK
