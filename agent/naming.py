"""Naming profiles: how a catalogue series is named when published.

`native` publishes the catalogue's own names, units and dimensions under `InfraWatch`. `cwagent`
publishes under `CWAgent` the names, units and dimensions the Amazon CloudWatch agent uses, so AWS
Compute Optimizer (which reads memory and GPU utilization only from that agent's metrics) and
dashboards built for that agent read this agent's series unchanged.

Every catalogue entry is decided in every profile (a test checks it): it has an alias, or it is
one the profile does not publish (the CloudWatch agent's extra series, `CWAGENT_ONLY`, are not published
under native; no collector built for native makes them). An entry the CloudWatch agent has no
equivalent for is aliased `KEEP`: it keeps its catalogue name and unit, and its dimensions follow the
profile.

Where the CloudWatch agent computes a series differently (`mem_used_percent`, `cpu_usage_active`,
`swap_used_percent` on a host without swap), the alias states its formula and the collectors built for
the profile compute it (`Profile.formulas`): the same series never carries a different number.

A profile is applied in two places. Its constant dimensions (`cpu=cpu-total`) join a sample before the
fleet roll-ups are cut (`Namer.sample`), so a roll-up keeps exactly the dimensions it lists, as the
CloudWatch agent's do; names, units, renamed dimensions and value conversions are applied where the
aggregator turns samples into datums (`Namer.datum`).

Application metrics (StatsD) keep their names and units; their host dimensions follow the profile like
every other series' (`Host` is `host` under cwagent).

A job must never write into a series the agent publishes for the host: `RESERVED_NAMES` holds every
name the agent publishes for itself under any profile (the catalogue's names and every alias), and a
StatsD name is refused when one of the names it would publish (`published_names`) is among them. Any
profile, not only the active one: the job's `Meter` cannot know the agent's profile, and a name accepted
today must not start writing into a host series when the operator switches profile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from agent.aggregate import Datum
from agent.catalogue import BYTES, COUNT, METRICS, MILLISECONDS, NONE, PERCENT, Formulas
from agent.samples import Dimensions, Sample

MIB = 1024 * 1024
RATE_SUFFIX = "PerSecond"  # a StatsD counter `<name>` also publishes `<name>PerSecond`


@dataclass(frozen=True)
class Rename:
    """A dimension published under another name, its value written through `template`."""

    native: str
    published: str
    template: str = "{}"


@dataclass(frozen=True)
class Alias:
    """How one catalogue entry is published under a profile."""

    name: str | None = None  # None keeps the catalogue name
    unit: str | None = None  # None keeps the catalogue unit
    dimensions: tuple[Rename, ...] = ()  # the entry's own dimensions
    constant_dimensions: tuple[tuple[str, str], ...] = ()
    scale: float = 1.0  # published value = value × scale
    # The CloudWatch agent publishes disk and network counters as deltas per collection interval; our
    # per-second rates become that delta as rate × collect.interval (exact up to the loop's jitter).
    per_interval: bool = False
    formula: str | None = None  # where the profile's collectors compute the series differently


KEEP = Alias()


@dataclass(frozen=True)
class Profile:
    name: str
    namespace: str
    aliases: Mapping[str, Alias]
    host_dimensions: tuple[Rename, ...] = ()  # host-level dimensions (Host, InstanceId, …) under this profile
    # Optional catalogue dimensions the collectors must set for this profile's dimension sets.
    device_dimensions: frozenset[str] = frozenset()
    formulas: Formulas = "native"  # which formula the collectors use where the profiles differ

    def publishes(self, metric: str) -> bool:
        return metric in self.aliases

    def alias(self, metric: str) -> Alias:
        if metric not in METRICS:
            raise KeyError(f"{metric} is not in the metric catalogue")
        if metric not in self.aliases:
            raise KeyError(f"the {self.name} naming profile does not publish {metric}")
        return self.aliases[metric]

    def renamed(self, metric: str, dims: Mapping[str, str]) -> dict[str, str]:
        """`dims` under their published names, values written through each rename's template."""
        return _renamed((*self.alias(metric).dimensions, *self.host_dimensions), dims)

    def series_dimensions(self, metric: str, optional: Iterable[str] = ()) -> tuple[str, ...]:
        """The catalogue names of the dimensions every series of `metric` carries under this profile: its own,
        then the optional ones that are configured (`optional`) or that the profile always needs."""
        entry = METRICS[metric]
        wanted = set(optional) | self.device_dimensions
        return (*entry.dimensions, *(name for name in entry.optional_dimensions if name in wanted))

    def dimensions(self, metric: str, dims: Mapping[str, str]) -> dict[str, str]:
        """The published dimensions of one series whose catalogue and host dimensions are `dims`."""
        return {**self.renamed(metric, dims), **dict(self.alias(metric).constant_dimensions)}

    def host_renamed(self, dims: Dimensions) -> Dimensions:
        """Dimensions of a series outside the catalogue (StatsD) with this profile's names for the host
        dimensions, so an application series carries the same host dimension as the host's own series."""
        return tuple(sorted(_renamed(self.host_dimensions, dict(dims)).items()))


def _renamed(renames: tuple[Rename, ...], dims: Mapping[str, str]) -> dict[str, str]:
    by_native = {rename.native: rename for rename in renames}
    published: dict[str, str] = {}
    for name, value in dims.items():
        rename = by_native.get(name)
        if rename is None:
            published[name] = value
        else:
            published[rename.published] = rename.template.format(value)
    return published


# The CloudWatch agent's further preset series (its other CPU shares, free inodes, I/O time, TCP states):
# native has its own counterparts (CPUUtilization, StorageInodeUtilization, …), and no collector built for
# native makes these.
CWAGENT_ONLY = frozenset({
    "CPUIdle", "CPUUser", "CPUSystem", "CPUCoreIdle", "CPUCoreIOWait", "CPUCoreUser", "CPUCoreSystem",
    "StorageInodesFree", "DiskIOTime", "TCPEstablished", "TCPTimeWait",
})

NATIVE = Profile("native", "InfraWatch", {name: KEEP for name in METRICS if name not in CWAGENT_ONLY})

_CPU_TOTAL = (("cpu", "cpu-total"),)
_CPU_CORE = (Rename("Core", "cpu", "cpu{}"),)
_STORAGE = (Rename("MountPath", "path"), Rename("Device", "device"), Rename("FSType", "fstype"))
_DISKIO = (Rename("Device", "name"),)
_NETWORK = (Rename("Interface", "interface"),)
# nvidia-smi XML schema v12 (drivers R525+) adds the `arch` tag; the agent drops uuid, pstate and
# compute_mode (its TagDenyList for nvidia_smi), so no GPUUUID rename: cwagent refuses gpu.uuid_dimension.
_GPU = (Rename("GPU", "index"), Rename("GPUName", "name"), Rename("GPUArch", "arch"))

_ACTIVE = "(total − idle) / total × 100: iowait counts as active (telegraf cpu input, usage_active)"

# Names and default units from the CloudWatch agent's documentation and its defaultUnits table
# (aws/amazon-cloudwatch-agent receiver/adapter/accumulator/default_unit.go); its nvidia_smi_* series
# carry no unit and report memory in MiB. The agent's own metric table is agent.cwagent.
CWAGENT_ALIASES: dict[str, Alias] = {
    "CPUUtilization": Alias("cpu_usage_active", PERCENT, constant_dimensions=_CPU_TOTAL, formula=_ACTIVE),
    "CPUIOWait": Alias("cpu_usage_iowait", PERCENT, constant_dimensions=_CPU_TOTAL),
    "CPUSteal": Alias("cpu_usage_steal", PERCENT, constant_dimensions=_CPU_TOTAL),
    "CPUIdle": Alias("cpu_usage_idle", PERCENT, constant_dimensions=_CPU_TOTAL),
    "CPUUser": Alias("cpu_usage_user", PERCENT, constant_dimensions=_CPU_TOTAL),
    "CPUSystem": Alias("cpu_usage_system", PERCENT, constant_dimensions=_CPU_TOTAL),
    "CPUCoreUtilization": Alias("cpu_usage_active", PERCENT, _CPU_CORE, formula=_ACTIVE + ", per core"),
    "CPUCoreIdle": Alias("cpu_usage_idle", PERCENT, _CPU_CORE),
    "CPUCoreIOWait": Alias("cpu_usage_iowait", PERCENT, _CPU_CORE),
    "CPUCoreUser": Alias("cpu_usage_user", PERCENT, _CPU_CORE),
    "CPUCoreSystem": Alias("cpu_usage_system", PERCENT, _CPU_CORE),
    "MemoryUtilization": Alias(
        "mem_used_percent", PERCENT,
        formula="(total − free − buffers − cached) / total × 100, cached = Cached + SReclaimable (gopsutil): "
                "shared memory (/dev/shm, Shmem) is inside Cached, so it counts as not used"),
    "MemoryAvailable": Alias("mem_available", BYTES),
    "SwapUtilization": Alias("swap_used_percent", PERCENT,
                             formula="swap used / swap total × 100; 0 on a host without swap (gopsutil)"),
    "StorageUtilization": Alias("disk_used_percent", PERCENT, _STORAGE),
    "StorageInodeUtilization": Alias(dimensions=_STORAGE),  # the agent has inode counts, no percentage
    "StorageInodesFree": Alias("disk_inodes_free", COUNT, _STORAGE),
    "DiskReadBytesPerSecond": Alias("diskio_read_bytes", BYTES, _DISKIO, per_interval=True),
    "DiskWriteBytesPerSecond": Alias("diskio_write_bytes", BYTES, _DISKIO, per_interval=True),
    "DiskReadOpsPerSecond": Alias("diskio_reads", COUNT, _DISKIO, per_interval=True),
    "DiskWriteOpsPerSecond": Alias("diskio_writes", COUNT, _DISKIO, per_interval=True),
    "DiskIOTime": Alias("diskio_io_time", MILLISECONDS, _DISKIO),
    "NetworkReceiveBytesPerSecond": Alias("net_bytes_recv", BYTES, _NETWORK, per_interval=True),
    "NetworkTransmitBytesPerSecond": Alias("net_bytes_sent", BYTES, _NETWORK, per_interval=True),
    "NetworkReceivePacketsPerSecond": Alias("net_packets_recv", COUNT, _NETWORK, per_interval=True),
    "NetworkTransmitPacketsPerSecond": Alias("net_packets_sent", COUNT, _NETWORK, per_interval=True),
    "TCPEstablished": Alias("netstat_tcp_established", COUNT),
    "TCPTimeWait": Alias("netstat_tcp_time_wait", COUNT),
    "GPUUtilization": Alias("nvidia_smi_utilization_gpu", NONE, _GPU),
    "GPUMemoryControllerUtilization": Alias("nvidia_smi_utilization_memory", NONE, _GPU),
    "GPUMemoryUsed": Alias("nvidia_smi_memory_used", NONE, _GPU, scale=1 / MIB),
    "GPUMemoryTotal": Alias("nvidia_smi_memory_total", NONE, _GPU, scale=1 / MIB),
    "GPUTemperature": Alias("nvidia_smi_temperature_gpu", NONE, _GPU),
    "GPUPowerDraw": Alias("nvidia_smi_power_draw", NONE, _GPU),
    "GPUSMClock": Alias("nvidia_smi_clocks_current_sm", NONE, _GPU),
    **{
        name: Alias(dimensions=_GPU)
        for name in (
            "GPUMemoryUtilization", "GPUMemoryTemperature", "GPUPowerLimit", "GPUPowerUtilization",
            "GPUEnergyConsumed", "GPUThrottleThermal", "GPUThrottlePowerCap", "GPUThrottleHardwareSlowdown",
            "GPUECCUncorrectableErrors", "GPURemappedRowsPending", "GPURemappedRowsFailed", "GPUPCIeReplays",
            "GPUPCIeRxBytesPerSecond", "GPUPCIeTxBytesPerSecond", "GPUNVLinkErrors", "GPUXidErrors",
            "GPULastXid", "GPUHealthy",
        )
    },
    **{
        name: KEEP
        for name in (
            "GPUCount", "HostGPUUtilization", "HostGPUMemoryUtilization", "Heartbeat", "DatapointsCollected",
            "DatapointsPublished", "DatapointsDropped", "PossibleDuplicates", "CollectorErrors", "PublishErrors",
            "PublishLatency", "SpoolDatums", "SpoolOldestAgeSeconds", "SpoolReplayStopped", "AgentCPUUtilization",
            "AgentMemoryRSS", "StatsdSeriesDropped", "StatsdParseErrors", "StorageMountsSkipped", "ValuesMerged",
            "AgentVersion",
        )
    },
}

CWAGENT = Profile(
    "cwagent", "CWAgent", CWAGENT_ALIASES,
    # The CloudWatch agent tags a host by name ("host") only when no EC2 dimension is appended.
    host_dimensions=(Rename("Host", "host"),),
    device_dimensions=frozenset({"Device", "FSType", "GPUName", "GPUArch"}),
    formulas="cwagent",
)

_BY_NAME = {chosen.name: chosen for chosen in (NATIVE, CWAGENT)}
PROFILES = tuple(_BY_NAME)
DEFAULT_NAMESPACE = {name: chosen.namespace for name, chosen in _BY_NAME.items()}


# The host dimension under each profile's name (`Host`, `host`): a StatsD tag must not become one.
HOST_DIMENSION_NAMES = frozenset(
    name
    for chosen in _BY_NAME.values()
    for rename in chosen.host_dimensions
    for name in (rename.native, rename.published)
)
RESERVED_NAMES = frozenset(METRICS) | frozenset(
    alias.name for chosen in _BY_NAME.values() for alias in chosen.aliases.values() if alias.name
)


def published_names(name: str, *, counter: bool) -> tuple[str, ...]:
    """The metric names a StatsD series `name` publishes (a counter also its rate)."""
    return (name, name + RATE_SUFFIX) if counter else (name,)


def profile(name: str) -> Profile:
    if name not in _BY_NAME:
        raise KeyError(f"unknown naming profile {name!r}")
    return _BY_NAME[name]


def resolve(profile_name: str, metric: str, dimensions: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(published metric name, published dimensions) of one catalogue series under a profile."""
    chosen = profile(profile_name)
    return chosen.alias(metric).name or metric, chosen.dimensions(metric, dimensions)


def published_dimensions(
    profile_name: str, metric: str, host: Iterable[str] = ("InstanceId",), optional: Iterable[str] = ()
) -> tuple[str, ...]:
    """The exact dimension names (sorted) of every series of `metric` the agent publishes under a profile.

    `host`: the host dimension names the agents add (their append_dimensions, or `Host` off EC2, plus the
    names of their static `dimensions`). `optional`: the catalogue's optional dimensions the agents are
    configured to set (e.g. `GPUName` with gpu.name_dimension); a profile adds those it always needs. A
    fleet roll-up publishes exactly the names its `aggregate_dimensions` set lists, renamed likewise.
    """
    chosen = profile(profile_name)
    own = chosen.series_dimensions(metric, optional)
    return tuple(sorted(chosen.dimensions(metric, dict.fromkeys([*host, *own], ""))))


class Namer:
    """Applies a profile to samples and datums; series outside the catalogue (StatsD) keep their names and
    units and take the profile's host dimension names."""

    def __init__(self, profile_name: str = "native", collect_interval: float = 10.0) -> None:
        self._profile = profile(profile_name)
        self._collect_interval = collect_interval
        # Each published metric's constant dimensions, looked up once rather than for every sample of every cycle.
        self._constants = {name: alias.constant_dimensions for name, alias in self._profile.aliases.items()}

    @property
    def sample_stage(self) -> Callable[[Sample], Sample] | None:
        """`sample`, or None under a profile that changes no sample (native): the loop then skips the pass."""
        return None if self._profile is NATIVE else self.sample

    def sample(self, sample: Sample) -> Sample:
        """The sample with the profile's constant dimensions, before roll-ups take only what they list."""
        if self._profile is NATIVE:
            return sample
        constant = self._constants.get(sample.name)
        if constant is None:
            if sample.name not in METRICS:
                return sample
            constant = self._profile.alias(sample.name).constant_dimensions  # raises: the profile does not publish it
        if not constant:
            return sample
        return Sample(sample.name, sample.value, sample.unit, tuple(sorted(sample.dimensions + constant)), sample.count)

    def datum(self, datum: Datum) -> Datum:
        if self._profile is NATIVE:
            return datum
        if datum.name not in METRICS:
            return datum._replace(dimensions=self._profile.host_renamed(datum.dimensions))
        alias = self._profile.alias(datum.name)
        scale = alias.scale * (self._collect_interval if alias.per_interval else 1.0)
        dims: Dimensions = tuple(sorted(self._profile.renamed(datum.name, dict(datum.dimensions)).items()))
        return datum._replace(
            name=alias.name or datum.name,
            dimensions=dims,
            unit=alias.unit or datum.unit,
            values=tuple(value * scale for value in datum.values) if scale != 1.0 else datum.values,
        )
