"""The agent's configuration: TOML, every key defaulted, validated once at load into frozen dataclasses."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from agent.catalogue import CATALOGUE, METRICS
from agent.cloudwatch_rules import MAX_DIMENSIONS, dimensions_problem, namespace_problem
from agent.fleet import DEFAULT_ROLLUP_METRICS, HOST, IDENTITY_DIMENSIONS
from agent.naming import DEFAULT_NAMESPACE, HOST_DIMENSION_NAMES, PROFILES, profile, published_dimensions
from agent.prometheus import address_problem as endpoint_address_problem
from agent.schema import ConfigError, build, load_toml, render, section, setting
from agent.sdnotify import UNIT_WATCHDOG_SEC
from agent.statsd.address import split_host_port
from agent.statsd.collector import DEFAULT_BYTE_COUNTERS, MAX_SERIES, MINUTE
from agent.statsd.parser import TAG_KEY

HOST_DIMENSION = "InstanceId"  # the per-host dimension on EC2 by default (`Host` off EC2)
CATALOGUE_DIMENSIONS = frozenset(
    name for metric in CATALOGUE for name in metric.dimensions + metric.optional_dimensions
)
# Dimensions the agent sets on a series itself: the host's identity and the self-metrics' Component.
# Set by the agent on every series; `host` is how cwagent publishes `Host` (HOST_DIMENSION_NAMES).
AGENT_DIMENSIONS = frozenset({HOST, *IDENTITY_DIMENSIONS, "Component"}) | HOST_DIMENSION_NAMES


def static_dimensions_problem(value: tuple[tuple[str, str], ...], reserved: frozenset[str]) -> str | None:
    """Static dimensions: none the agent sets itself (`reserved`), each as CloudWatch accepts it."""
    for name, _ in value:
        if name in reserved:
            return f'dimension "{name}" is set by the agent and cannot be overridden'
    return dimensions_problem(value)


def _dimensions_problem(value: tuple[tuple[str, str], ...]) -> str | None:
    return static_dimensions_problem(value, AGENT_DIMENSIONS | CATALOGUE_DIMENSIONS)


def _identity_problem(value: tuple[str, ...]) -> str | None:
    for name in value:
        if name not in IDENTITY_DIMENSIONS:
            return f'"{name}" is not one of {", ".join(IDENTITY_DIMENSIONS)}'
    if len(set(value)) != len(value):
        return "names a dimension twice"
    return None


def _metrics_problem(value: tuple[str, ...]) -> str | None:
    unknown = [name for name in value if name not in METRICS]
    return f'"{unknown[0]}" is not in the metric catalogue' if unknown else None


def _path_problem(value: str) -> str | None:
    return None if value else "must not be empty"


def _exclusions_problem(value: tuple[str, ...]) -> str | None:
    if any(fnmatchcase("Heartbeat", pattern) for pattern in value):
        return "must not exclude Heartbeat: the heartbeat alarm and availability are computed from it"
    return None


@dataclass(frozen=True)
class CollectConfig:
    interval: int = setting(10, "Seconds between two samples of every collector.", range=(1, 300), unit="seconds")


@dataclass(frozen=True)
class PublishConfig:
    interval: int = setting(
        60, "Seconds between two PutMetricData flushes. At 60 s or more (or with publish.high_resolution) a flush "
        "sends the minutes (seconds) that have ended, each series whole, and holds the current one for the next; "
        "below 60 s it also sends what the current minute has so far.",
        range=(10, 300), unit="seconds",
    )
    high_resolution: bool = setting(
        False, "Publish with StorageResolution=1: one datum per series per second (billed as high resolution)."
    )
    phase: float = setting(
        -1.0,
        "Seconds past each wall-clock multiple of publish.interval at which this host flushes: at a 60 s "
        "interval, how long after a minute ends it reaches CloudWatch. Negative: a random phase in "
        "[0, min(publish.interval, 30)) drawn at start and at each reload, so a fleet's requests spread.",
        range=(-1, 299), unit="seconds",
    )


@dataclass(frozen=True)
class CpuConfig:
    enabled: bool = setting(True, "Collect CPU utilization, iowait and steal.")
    per_core: bool = setting(False, "Also publish one series per core (each is a billed metric).")


@dataclass(frozen=True)
class MemoryConfig:
    enabled: bool = setting(True, "Collect memory and swap utilization.")


DEFAULT_IGNORED_FSTYPES = (
    "tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "nsfs",
    "tracefs", "autofs", "fuse.*", "ramfs", "devpts", "mqueue", "debugfs", "securityfs", "pstore",
    "bpf", "configfs", "hugetlbfs", "fusectl", "binfmt_misc", "efivarfs", "rpc_pipefs", "nfsd",
)


@dataclass(frozen=True)
class StorageConfig:
    enabled: bool = setting(
        True, "Collect space and inode utilization per filesystem (bind mounts and sandbox mounts are not extra "
        "series; docs/data-loss.md, Collectors)."
    )
    include_mounts: tuple[str, ...] = setting(
        (), "Mount point globs to keep, matched against the mount point that names each filesystem (MountPath); "
        "empty keeps all."
    )
    exclude_mounts: tuple[str, ...] = setting((), "Mount point globs to skip, matched as include_mounts.")
    include_fstypes: tuple[str, ...] = setting((), "Filesystem type globs to keep even if ignored by default.")
    exclude_fstypes: tuple[str, ...] = setting(DEFAULT_IGNORED_FSTYPES, "Filesystem type globs to skip.")
    timeout: float = setting(
        2.0, "Seconds a cycle waits for statvfs answers before skipping the mounts that did not answer (hung NFS).",
        range=(0.05, 30), unit="seconds",
    )


@dataclass(frozen=True)
class DiskIOConfig:
    enabled: bool = setting(True, "Collect read/write bytes and operations per second per block device.")
    include_devices: tuple[str, ...] = setting((), "Device name globs to keep; empty keeps all.")
    exclude_devices: tuple[str, ...] = setting(("loop*", "ram*", "zram*", "sr*", "fd*"), "Device name globs to skip.")
    partitions: bool = setting(False, "Also publish partitions, not only whole disks (each is a billed metric).")


# Loopback and container plumbing: one veth per container or pod would be 4 billed series each. Kubernetes
# CNIs name the host side of a pod's veth eni<hash> (AWS VPC CNI), cali<hash> (Calico) and lxc<hash>
# (Cilium). Globs are case-sensitive, so EC2's own enX0 (Xen, AL2023) is kept.
DEFAULT_EXCLUDED_INTERFACES = (
    "lo", "veth*", "docker*", "br-*", "virbr*", "cni*", "flannel*", "ifb*", "eni*", "cali*", "lxc*",
)


@dataclass(frozen=True)
class NetworkConfig:
    enabled: bool = setting(True, "Collect bytes and packets per second per network interface.")
    include_interfaces: tuple[str, ...] = setting((), "Interface name globs to keep; empty keeps all.")
    exclude_interfaces: tuple[str, ...] = setting(
        DEFAULT_EXCLUDED_INTERFACES,
        "Interface name globs to skip (loopback, container and Kubernetes pod plumbing by default).",
    )


def _address_problem(value: str) -> str | None:
    try:
        split_host_port(value)
    except ValueError as error:
        return str(error)
    return None


def _dimension_keys_problem(value: tuple[str, ...]) -> str | None:
    for key in value:
        if key in AGENT_DIMENSIONS:  # a tag of that name would give a datum the same dimension twice
            return f'"{key}" is set by the agent'
        if not TAG_KEY.fullmatch(key):
            return f'"{key}" must be 1..255 of A-Z a-z 0-9 _ . - /'
    return None


def _flush_interval_problem(value: int) -> str | None:
    if MINUTE % value:
        divisors = [str(d) for d in range(1, MINUTE + 1) if MINUTE % d == 0]
        return f"must divide a minute ({', '.join(divisors[:-1])} or {divisors[-1]}) so that no flush window " \
               "straddles two minutes"
    return None


@dataclass(frozen=True)
class StatsdConfig:
    enabled: bool = setting(True, "Listen for StatsD/DogStatsD metrics from jobs on this host.")
    address: str = setting(
        "127.0.0.1:8125", 'UDP "host:port" to listen on; loopback keeps other hosts out.',
        check=_address_problem,
    )
    dimension_keys: tuple[str, ...] = setting(
        (), "DogStatsD tag keys that become dimensions (each value is a billed metric); others are dropped.",
        check=_dimension_keys_problem,
    )
    max_series: int = setting(
        1000, "Distinct name + dimensions kept; lines of further series are dropped and counted. At most "
        "what fits the unit's MemoryHigh with every series live.",
        range=(1, MAX_SERIES),
    )
    byte_counters: tuple[str, ...] = setting(
        DEFAULT_BYTE_COUNTERS, "Counter name globs published in Bytes and Bytes/Second instead of Count."
    )
    expire_after: float = setting(
        300.0, "Seconds without a line after which a series is no longer published (counters publish 0 until "
        "then) and stops counting toward max_series.", range=(10, 86_400), unit="seconds",
    )
    # Etsy StatsD's flushInterval (10,000 ms), DogStatsD's flush and Telegraf's statsd input (its interval)
    # all default to 10 s: a job's counters are summed over 10 s windows, whatever the agent samples at.
    flush_interval: int = setting(
        10, "Seconds between two StatsD flushes, at wall-clock multiples (a divisor of 60): series are drained "
        "at the first collection in each, so their windows do not follow a faster collect.interval. Drained at "
        "every collection when collect.interval is at least this, or with publish.high_resolution (a longer "
        "window would leave 1 s buckets empty). Etsy StatsD, DogStatsD and Telegraf flush every 10 s.",
        range=(1, MINUTE), unit="seconds", check=_flush_interval_problem,
    )


@dataclass(frozen=True)
class PrometheusConfig:
    enabled: bool = setting(
        False, "Serve the latest readings on a Prometheus /metrics endpoint (text format and OpenMetrics)."
    )
    address: str = setting(
        "127.0.0.1:9400", 'TCP "host:port" of the endpoint; loopback unless allow_remote.', check=_address_problem
    )
    allow_remote: bool = setting(
        False, "Allow an address beyond loopback; put the endpoint behind node-level auth first."
    )


@dataclass(frozen=True)
class GpuConfig:
    enabled: str | bool = setting(
        "auto",
        '"auto": collect when NVML and a driver are present, else log once and go on; '
        "true: their absence is a startup error; false: never touch NVML.",
        choices=("auto", True, False),
    )
    uuid_dimension: bool = setting(
        False, "Add the GPUUUID dimension to per-GPU series (each UUID is a billed metric). Not with "
        'naming = "cwagent": the CloudWatch agent drops uuid, so its series have none.',
    )
    name_dimension: bool = setting(False, "Add the GPUName dimension to per-GPU series (a billed metric per name).")


@dataclass(frozen=True)
class SpoolConfig:
    enabled: bool = setting(
        True, "Keep datums CloudWatch has not accepted in an SQLite file and replay them; off: count them dropped."
    )
    path: str = setting(
        "/var/lib/infrawatch/spool.db",
        "The spool file (the unit's state directory). If its directory cannot be written, the agent warns once "
        "and runs without a spool.",
        check=_path_problem,
    )
    max_bytes: int = setting(
        256 * 1024 * 1024, "Most bytes the spool's database may hold; when full, the oldest datums are dropped.",
        range=(1024 * 1024, 64 * 1024**3), unit="bytes",
    )
    replay_requests_per_second: float = setting(
        5.0, "Most PutMetricData requests per second that replay spooled datums, after live data.",
        range=(0.1, 100), unit="requests/second",
    )


@dataclass(frozen=True)
class Ec2Config:
    identity: bool = setting(
        True, "Ask the instance metadata service (IMDSv2) who this host is; false: not on EC2, use the hostname."
    )
    imds_timeout: float = setting(1.0, "Seconds one IMDS request may take to connect and to answer.",
                                  range=(0.05, 10), unit="seconds")
    imds_attempts: int = setting(2, "Attempts per IMDS request.", range=(1, 5))
    identity_wait: float = setting(
        3.0, "Most seconds startup waits for the identity; without an answer the host counts as not on EC2.",
        range=(0.1, 30), unit="seconds",
    )
    tag_wait: float = setting(
        30.0, "Most seconds samples are held while the Auto Scaling group is looked up; then they are "
        "published with what is known.", range=(0, 300), unit="seconds",
    )
    describe_tags: bool = setting(
        True, "When the Auto Scaling group is needed and IMDS does not serve instance tags, ask "
        "ec2:DescribeTags (needs that permission).",
    )


@dataclass(frozen=True)
class AgentConfig:
    naming: str = setting(
        "native", "Naming profile: native, or cwagent for the CloudWatch agent's names, units and dimensions.",
        choices=PROFILES,
    )
    namespace: str = setting(
        "", "CloudWatch namespace of every metric; unset: the naming profile's (InfraWatch, or CWAgent).",
        check=namespace_problem,
    )
    dimensions: tuple[tuple[str, str], ...] = setting(
        (), "Static dimensions added to every series, as a table of name = value.", check=_dimensions_problem
    )
    append_dimensions: tuple[str, ...] = setting(
        ("InstanceId",), f"EC2 identity dimensions every series carries, of {', '.join(IDENTITY_DIMENSIONS)}; "
        f"each value is a billed metric. Not on EC2, or empty: {HOST} = the hostname.", check=_identity_problem,
    )
    aggregate_dimensions: tuple[tuple[str, ...], ...] = setting(
        (), 'Fleet roll-ups: each list is a dimension set the aggregate_metrics are also published with, '
        'e.g. [["AutoScalingGroupName"], ["InstanceType"]]; each roll-up series is a billed metric.',
    )
    aggregate_metrics: tuple[str, ...] = setting(
        DEFAULT_ROLLUP_METRICS, "Metrics published once more per aggregate_dimensions set.", check=_metrics_problem
    )
    exclude_metrics: tuple[str, ...] = setting(
        (), "Metric names (globs, catalogue or StatsD) never published, to save their cost: each series is a "
        "billed metric, e.g. [\"GPUPCIe*\", \"GPUSMClock\"].", check=_exclusions_problem,
    )
    version_series: bool = setting(
        False, "Publish AgentVersion (dimension Version) every flush, to follow a fleet's rollout "
        "(provision-alarms --fleet-status); a billed metric per host and version.",
    )
    shutdown_timeout: float = setting(
        10.0, "Seconds the last flush may take on SIGTERM/SIGINT (keep below the unit's TimeoutStopSec).",
        range=(1, 25), unit="seconds",
    )
    log_level: str = setting("info", "Lowest log level written.", choices=("debug", "info", "warning", "error"))
    collect: CollectConfig = section(CollectConfig, "Sampling.")
    publish: PublishConfig = section(PublishConfig, "Publishing to CloudWatch.")
    cpu: CpuConfig = section(CpuConfig, "CPU collector.")
    memory: MemoryConfig = section(MemoryConfig, "Memory collector.")
    storage: StorageConfig = section(StorageConfig, "Filesystem collector.")
    diskio: DiskIOConfig = section(DiskIOConfig, "Block device throughput collector.")
    network: NetworkConfig = section(NetworkConfig, "Network throughput collector.")
    gpu: GpuConfig = section(GpuConfig, "NVIDIA GPU collector (NVML, in-process).")
    spool: SpoolConfig = section(SpoolConfig, "Durable spool for datums CloudWatch has not accepted yet.")
    ec2: Ec2Config = section(Ec2Config, "EC2 identity and tags.")
    statsd: StatsdConfig = section(StatsdConfig, "StatsD listener for application throughput.")
    prometheus: PrometheusConfig = section(PrometheusConfig, "Prometheus endpoint (off by default).")

    def __post_init__(self) -> None:
        if not self.namespace:  # unset: the naming profile's namespace
            object.__setattr__(self, "namespace", DEFAULT_NAMESPACE[self.naming])


def parse(data: dict[str, Any]) -> AgentConfig:
    """Validate a TOML document; raises ConfigError listing every problem."""
    problems: list[str] = []
    config = build(AgentConfig, data, problems)
    if config.publish.interval < config.collect.interval:
        problems.append(
            f"publish.interval: must be at least collect.interval ({config.collect.interval}), "
            f"got {config.publish.interval}"
        )
    problems += _dimension_problems(config)
    if config.naming == "cwagent" and config.gpu.uuid_dimension:
        # Refused rather than ignored: a dimension the operator asked for must not silently go missing.
        problems.append('gpu.uuid_dimension: must be false with naming = "cwagent" (the CloudWatch agent '
                        "publishes no uuid dimension), got true")


    if config.publish.phase >= config.publish.interval:
        problems.append(
            f"publish.phase: must be below publish.interval ({config.publish.interval}), "
            f"got {config.publish.phase:g}"
        )
    static = {name for name, _ in config.dimensions} & set(config.statsd.dimension_keys)
    if static:
        problems.append(
            f"statsd.dimension_keys: {', '.join(sorted(static))} already set by the static dimensions, "
            f"got {render(config.statsd.dimension_keys)}"
        )
    if config.prometheus.enabled and not problems:
        problem = endpoint_address_problem(config.prometheus.address, config.prometheus.allow_remote)
        if problem:
            problems.append(f"prometheus.address: {problem}, got {render(config.prometheus.address)}")
    if problems:
        raise ConfigError(problems)
    return config


def _dimension_problems(config: AgentConfig) -> list[str]:
    problems = []
    # The most dimensions one series carries besides the host's, under this profile and GPU config.
    naming = profile(config.naming)
    optional = {"GPUUUID"} if config.gpu.uuid_dimension else set()
    optional |= {"GPUName"} if config.gpu.name_dimension else set()
    widest = max(len(published_dimensions(config.naming, metric.name, host=(), optional=optional))
                 for metric in CATALOGUE if naming.publishes(metric.name))
    room = MAX_DIMENSIONS - max(len(config.append_dimensions), 1) - widest
    if len(config.dimensions) > room:
        problems.append(f"dimensions: at most {room} static dimensions fit CloudWatch's {MAX_DIMENSIONS} "
                        f"with these append_dimensions, got {render(dict(config.dimensions))}")
    known = {HOST, *IDENTITY_DIMENSIONS, *CATALOGUE_DIMENSIONS, *(name for name, _ in config.dimensions)}
    for names in config.aggregate_dimensions:
        unknown = [name for name in names if name not in known]
        if unknown:
            problems.append(f'aggregate_dimensions: "{unknown[0]}" is not a host, static or metric dimension, '
                            f"got {render(list(names))}")
        elif len(set(names)) != len(names) or len(names) > MAX_DIMENSIONS:
            problems.append(f"aggregate_dimensions: each set names up to {MAX_DIMENSIONS} distinct dimensions, "
                            f"got {render(list(names))}")
    return problems


def load(path: Path | None) -> AgentConfig:
    """The config at `path`, or every default when no file is given."""
    return parse(load_toml(path) if path is not None else {})


def warnings(config: AgentConfig) -> list[str]:
    """Valid settings that are likely mistakes, one line each (`check-config` prints them; exit 0)."""
    found = []
    if config.collect.interval >= UNIT_WATCHDOG_SEC / 2:
        # The watchdog is pinged once per collection and must hear from the agent every WatchdogSec/2.
        found.append(f"collect.interval: {config.collect.interval} s is at or above half the unit's WatchdogSec "
                     f"({UNIT_WATCHDOG_SEC} s), so systemd may kill the agent between two collections; keep it "
                     f"below {UNIT_WATCHDOG_SEC // 2} s or raise WatchdogSec in a drop-in")
    if config.statsd.enabled and not _is_loopback(split_host_port(config.statsd.address)[0]):
        found.append(f'statsd.address: "{config.statsd.address}" listens beyond loopback, so other hosts can '
                     'write metrics (each series billed) into this host\'s namespace; use "127.0.0.1:8125" unless '
                     "they must")
    return found


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False
