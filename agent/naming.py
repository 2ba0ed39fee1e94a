"""Naming profiles: how a catalogue series is named when published.

`native` publishes the catalogue's own names, units and dimensions under `InfraWatch`. `cwagent`
publishes under `CWAgent` the names, units and dimensions the Amazon CloudWatch agent uses, so AWS
Compute Optimizer (which reads memory and GPU utilization only from that agent's metrics) and
dashboards built for that agent read this agent's series unchanged.

Every catalogue entry has an explicit alias in every profile (a test checks it). An entry the
CloudWatch agent has no equivalent for is aliased `KEEP`: it keeps its catalogue name and unit, and
its dimensions follow the profile. The profile is applied in one place, where the aggregator turns
samples into datums (`Namer.datum`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.aggregate import Datum
from agent.catalogue import BYTES, COUNT, METRICS, NONE, PERCENT
from agent.samples import Dimensions

MIB = 1024 * 1024


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


KEEP = Alias()


@dataclass(frozen=True)
class Profile:
    name: str
    namespace: str
    aliases: Mapping[str, Alias]
    host_dimensions: tuple[Rename, ...] = ()  # host-level dimensions (Host, InstanceId, …) under this profile
    # Optional catalogue dimensions the collectors must set for this profile's dimension sets.
    device_dimensions: frozenset[str] = frozenset()

    def alias(self, metric: str) -> Alias:
        if metric not in METRICS:
            raise KeyError(f"{metric} is not in the metric catalogue")
        return self.aliases[metric]

    def dimensions(self, metric: str, dims: Mapping[str, str]) -> dict[str, str]:
        renames = {rename.native: rename for rename in (*self.alias(metric).dimensions, *self.host_dimensions)}
        published: dict[str, str] = {}
        for name, value in dims.items():
            rename = renames.get(name)
            if rename is None:
                published[name] = value
            else:
                published[rename.published] = rename.template.format(value)
        published.update(self.alias(metric).constant_dimensions)
        return published


NATIVE = Profile("native", "InfraWatch", {name: KEEP for name in METRICS})

_CPU_TOTAL = (("cpu", "cpu-total"),)
_STORAGE = (Rename("MountPath", "path"), Rename("Device", "device"), Rename("FSType", "fstype"))
_DISKIO = (Rename("Device", "name"),)
_NETWORK = (Rename("Interface", "interface"),)
_GPU = (Rename("GPU", "index"), Rename("GPUName", "name"))

# Names and default units from the CloudWatch agent's documentation and its metricDefaultUnit table
# (aws/amazon-cloudwatch-agent); its nvidia_smi_* series carry no unit and report memory in MiB.
CWAGENT_ALIASES: dict[str, Alias] = {
    "CPUUtilization": Alias("cpu_usage_active", PERCENT, constant_dimensions=_CPU_TOTAL),
    "CPUIOWait": Alias("cpu_usage_iowait", PERCENT, constant_dimensions=_CPU_TOTAL),
    "CPUSteal": Alias("cpu_usage_steal", PERCENT, constant_dimensions=_CPU_TOTAL),
    "CPUCoreUtilization": Alias("cpu_usage_active", PERCENT, (Rename("Core", "cpu", "cpu{}"),)),
    "MemoryUtilization": Alias("mem_used_percent", PERCENT),
    "MemoryAvailable": Alias("mem_available", BYTES),
    "SwapUtilization": Alias("swap_used_percent", PERCENT),
    "StorageUtilization": Alias("disk_used_percent", PERCENT, _STORAGE),
    "StorageInodeUtilization": Alias(dimensions=_STORAGE),  # the agent has inode counts, no percentage
    "DiskReadBytesPerSecond": Alias("diskio_read_bytes", BYTES, _DISKIO, per_interval=True),
    "DiskWriteBytesPerSecond": Alias("diskio_write_bytes", BYTES, _DISKIO, per_interval=True),
    "DiskReadOpsPerSecond": Alias("diskio_reads", COUNT, _DISKIO, per_interval=True),
    "DiskWriteOpsPerSecond": Alias("diskio_writes", COUNT, _DISKIO, per_interval=True),
    "NetworkReceiveBytesPerSecond": Alias("net_bytes_recv", BYTES, _NETWORK, per_interval=True),
    "NetworkTransmitBytesPerSecond": Alias("net_bytes_sent", BYTES, _NETWORK, per_interval=True),
    "NetworkReceivePacketsPerSecond": Alias("net_packets_recv", COUNT, _NETWORK, per_interval=True),
    "NetworkTransmitPacketsPerSecond": Alias("net_packets_sent", COUNT, _NETWORK, per_interval=True),
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
            "PublishLatency", "SpoolDatums", "SpoolOldestAgeSeconds", "AgentCPUUtilization", "AgentMemoryRSS",
            "StatsdSeriesDropped", "StatsdParseErrors",
        )
    },
}

CWAGENT = Profile(
    "cwagent", "CWAgent", CWAGENT_ALIASES,
    # The CloudWatch agent tags a host by name ("host") only when no EC2 dimension is appended.
    host_dimensions=(Rename("Host", "host"),),
    device_dimensions=frozenset({"Device", "FSType", "GPUName"}),
)

_BY_NAME = {chosen.name: chosen for chosen in (NATIVE, CWAGENT)}
PROFILES = tuple(_BY_NAME)
DEFAULT_NAMESPACE = {name: chosen.namespace for name, chosen in _BY_NAME.items()}


def profile(name: str) -> Profile:
    if name not in _BY_NAME:
        raise KeyError(f"unknown naming profile {name!r}")
    return _BY_NAME[name]


def resolve(profile_name: str, metric: str, dimensions: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(published metric name, published dimensions) of one catalogue series under a profile."""
    chosen = profile(profile_name)
    return chosen.alias(metric).name or metric, chosen.dimensions(metric, dimensions)


class Namer:
    """Applies a profile to datums; series outside the catalogue (none in production) pass unchanged."""

    def __init__(self, profile_name: str = "native", collect_interval: float = 10.0) -> None:
        self._profile = profile(profile_name)
        self._collect_interval = collect_interval

    def datum(self, datum: Datum) -> Datum:
        if self._profile is NATIVE or datum.name not in METRICS:
            return datum
        alias = self._profile.alias(datum.name)
        scale = alias.scale * (self._collect_interval if alias.per_interval else 1.0)
        dims: Dimensions = tuple(sorted(self._profile.dimensions(datum.name, dict(datum.dimensions)).items()))
        return datum._replace(
            name=alias.name or datum.name,
            dimensions=dims,
            unit=alias.unit or datum.unit,
            values=tuple(value * scale for value in datum.values) if scale != 1.0 else datum.values,
        )
