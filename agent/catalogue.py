"""The metric catalogue: every series the agent can publish, as data.

Collectors build samples through `METRICS[name].sample(...)`, so a unit or dimension can only come
from here; the README's metric table is checked against this table, and the provisioner takes alarm
metric names and dimensions from it instead of retyping them.

`dimensions` lists the per-series dimensions a collector sets. Every series also carries the host
dimensions (`InstanceId`, plus the static `dimensions` from the config), added by the agent.

Application metrics received over StatsD (`agent.statsd`) are the one exception: their names come from
the jobs that send them, so they cannot be entries here. They follow one rule instead: a counter
`<name>` publishes `<name>` (its total, Count or Bytes) and `<name>PerSecond` (Count/Second or
Bytes/Second); a timer `<name>` publishes `<name>` in Milliseconds; a histogram, distribution or gauge
`<name>` publishes `<name>` with no unit; their dimensions are the allowed DogStatsD tags. A StatsD name
that is, or whose `PerSecond` series would be, a name the agent publishes for itself under any naming
profile (`agent.naming.RESERVED_NAMES`) is refused, so a job cannot write into a host series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from agent.samples import Dimensions, Sample, dimensions

PERCENT = "Percent"
BYTES = "Bytes"
BYTES_PER_SECOND = "Bytes/Second"
COUNT = "Count"
COUNT_PER_SECOND = "Count/Second"
SECONDS = "Seconds"
MILLISECONDS = "Milliseconds"
NONE = "None"

Formulas = Literal["native", "cwagent"]
"""Which formula a collector uses where the naming profiles define a series differently (a profile's
`formulas`): `native` is the catalogue's own, `cwagent` the Amazon CloudWatch agent's (agent.naming)."""


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    dimensions: tuple[str, ...]
    formula: str
    source: str
    description: str
    optional_dimensions: tuple[str, ...] = ()  # set only when configured (each value is a billed metric)

    def sample(self, value: float, **dims: str) -> Sample:
        return self.series(**dims).sample(value)

    def series(self, **dims: str) -> Series:
        """This metric with its dimensions set: checked here once, for a collector that samples the same
        series every cycle (a GPU's) to keep and skip the check and the sorting on each sample."""
        given = set(dims)
        if not set(self.dimensions) <= given <= set(self.dimensions) | set(self.optional_dimensions):
            raise ValueError(f"{self.name} takes dimensions {self.dimensions}, got {tuple(dims)}")
        return Series(self.name, self.unit, dimensions(**dims))


class Series(NamedTuple):
    """One series of a catalogue metric (`Metric.series`), whose samples differ only in value."""

    name: str
    unit: str
    dimensions: Dimensions

    def sample(self, value: float) -> Sample:
        return Sample(self.name, float(value), self.unit, self.dimensions)


CATALOGUE: tuple[Metric, ...] = (
    # --- CPU -------------------------------------------------------------------------------------
    Metric("CPUUtilization", PERCENT, (), "busy / total × 100 over the interval",
           "/proc/stat deltas (psutil.cpu_times)", "Share of CPU time not idle or waiting on I/O, all cores."),
    Metric("CPUIOWait", PERCENT, (), "iowait / total × 100 over the interval",
           "/proc/stat deltas (psutil.cpu_times)", "Share of CPU time idle while waiting on I/O."),
    Metric("CPUSteal", PERCENT, (), "steal / total × 100 over the interval",
           "/proc/stat deltas (psutil.cpu_times)", "Share of CPU time taken by the hypervisor."),
    Metric("CPUCoreUtilization", PERCENT, ("Core",), "busy / total × 100 per core over the interval",
           "/proc/stat deltas (psutil.cpu_times percpu)", "Per-core utilization; only with cpu.per_core."),
    # The CloudWatch agent's further CPU shares (telegraf's cpu input): published under cwagent only.
    *(
        Metric(name, PERCENT, dims, formula, "/proc/stat deltas", description)
        for name, dims, formula, description in (
            ("CPUIdle", (), "idle / total × 100 over the interval", "Share of CPU time idle, iowait excluded."),
            ("CPUUser", (), "(user − guest) / total × 100 over the interval", "Share of CPU time in user mode."),
            ("CPUSystem", (), "system / total × 100 over the interval", "Share of CPU time in the kernel."),
            ("CPUCoreIdle", ("Core",), "idle / total × 100 per core", "Per-core idle share; only with cpu.per_core."),
            ("CPUCoreIOWait", ("Core",), "iowait / total × 100 per core",
             "Per-core iowait share; only with cpu.per_core."),
            ("CPUCoreUser", ("Core",), "(user − guest) / total × 100 per core",
             "Per-core user share; only with cpu.per_core."),
            ("CPUCoreSystem", ("Core",), "system / total × 100 per core",
             "Per-core kernel share; only with cpu.per_core."),
        )
    ),
    # --- Memory ----------------------------------------------------------------------------------
    Metric("MemoryUtilization", PERCENT, (), "(total − available) / total × 100",
           "/proc/meminfo (psutil.virtual_memory)", "Memory in use, counting reclaimable cache as free."),
    Metric("MemoryAvailable", BYTES, (), "MemAvailable",
           "/proc/meminfo (psutil.virtual_memory)", "Memory available to start new work without swapping."),
    Metric("SwapUtilization", PERCENT, (), "swap used / swap total × 100",
           "/proc/meminfo (SwapTotal, SwapFree)", "Swap in use; not published when the host has no swap."),
    # --- Storage ---------------------------------------------------------------------------------
    # Device and FSType are set only for naming profiles whose dimension sets need them (cwagent).
    Metric("StorageUtilization", PERCENT, ("MountPath",), "(total − free) / (used + available) × 100",
           "statvfs per filesystem (major:minor in /proc/self/mountinfo), time-bounded",
           "Filesystem space in use, as df reports it.", ("Device", "FSType")),
    Metric("StorageInodeUtilization", PERCENT, ("MountPath",), "(files − free files) / files × 100",
           "statvfs per filesystem (major:minor in /proc/self/mountinfo), time-bounded",
           "Filesystem inodes in use.", ("Device", "FSType")),
    Metric("StorageInodesFree", COUNT, ("MountPath",), "free files (f_ffree)",
           "statvfs per filesystem (major:minor in /proc/self/mountinfo), time-bounded",
           "Free inodes, as the CloudWatch agent's disk_inodes_free; published under cwagent only.",
           ("Device", "FSType")),
    # --- Disk throughput -------------------------------------------------------------------------
    Metric("DiskReadBytesPerSecond", BYTES_PER_SECOND, ("Device",), "Δ read bytes / Δ time",
           "/proc/diskstats (psutil.disk_io_counters)", "Bytes read from the block device per second."),
    Metric("DiskWriteBytesPerSecond", BYTES_PER_SECOND, ("Device",), "Δ written bytes / Δ time",
           "/proc/diskstats (psutil.disk_io_counters)", "Bytes written to the block device per second."),
    Metric("DiskReadOpsPerSecond", COUNT_PER_SECOND, ("Device",), "Δ reads / Δ time",
           "/proc/diskstats (psutil.disk_io_counters)", "Completed read operations per second."),
    Metric("DiskWriteOpsPerSecond", COUNT_PER_SECOND, ("Device",), "Δ writes / Δ time",
           "/proc/diskstats (psutil.disk_io_counters)", "Completed write operations per second."),
    Metric("DiskIOTime", MILLISECONDS, ("Device",), "Δ time spent doing I/O (io_ticks) over the collect interval",
           "/proc/diskstats (psutil.disk_io_counters busy_time)",
           "Milliseconds the device was busy, as the CloudWatch agent's diskio_io_time; published under cwagent only."),
    # --- Network throughput ----------------------------------------------------------------------
    Metric("NetworkReceiveBytesPerSecond", BYTES_PER_SECOND, ("Interface",), "Δ received bytes / Δ time",
           "/proc/net/dev (psutil.net_io_counters)", "Bytes received on the interface per second."),
    Metric("NetworkTransmitBytesPerSecond", BYTES_PER_SECOND, ("Interface",), "Δ sent bytes / Δ time",
           "/proc/net/dev (psutil.net_io_counters)", "Bytes sent on the interface per second."),
    Metric("NetworkReceivePacketsPerSecond", COUNT_PER_SECOND, ("Interface",), "Δ received packets / Δ time",
           "/proc/net/dev (psutil.net_io_counters)", "Packets received on the interface per second."),
    Metric("NetworkTransmitPacketsPerSecond", COUNT_PER_SECOND, ("Interface",), "Δ sent packets / Δ time",
           "/proc/net/dev (psutil.net_io_counters)", "Packets sent on the interface per second."),
    Metric("TCPEstablished", COUNT, (), "TCP sockets in state ESTABLISHED, IPv4 and IPv6",
           "/proc/net/tcp, /proc/net/tcp6", "As the CloudWatch agent's netstat_tcp_established; cwagent only."),
    Metric("TCPTimeWait", COUNT, (), "TCP sockets in state TIME_WAIT, IPv4 and IPv6",
           "/proc/net/tcp, /proc/net/tcp6", "As the CloudWatch agent's netstat_tcp_time_wait; cwagent only."),
    # --- GPU, per device (NVML, in-process) -------------------------------------------------------
    *(
        Metric(name, unit, ("GPU",), formula, source, description, ("GPUUUID", "GPUName", "GPUArch"))
        for name, unit, formula, source, description in (
            ("GPUUtilization", PERCENT, "time a kernel ran / sample period × 100",
             "nvmlDeviceGetUtilizationRates().gpu", "nvidia-smi utilization.gpu."),
            ("GPUMemoryControllerUtilization", PERCENT, "time memory was read or written / sample period × 100",
             "nvmlDeviceGetUtilizationRates().memory", "nvidia-smi utilization.memory."),
            ("GPUMemoryUtilization", PERCENT, "used / total × 100",
             "nvmlDeviceGetMemoryInfo", "Framebuffer memory in use."),
            ("GPUMemoryUsed", BYTES, "used", "nvmlDeviceGetMemoryInfo", "nvidia-smi memory.used, in bytes."),
            ("GPUMemoryTotal", BYTES, "total", "nvmlDeviceGetMemoryInfo", "nvidia-smi memory.total, in bytes."),
            ("GPUTemperature", NONE, "°C", "nvmlDeviceGetTemperature", "nvidia-smi temperature.gpu, degrees C."),
            ("GPUMemoryTemperature", NONE, "°C", "NVML_FI_DEV_MEMORY_TEMP",
             "HBM temperature, degrees C, where the GPU reports it."),
            ("GPUPowerDraw", NONE, "mW / 1000", "nvmlDeviceGetPowerUsage", "nvidia-smi power.draw, watts."),
            ("GPUPowerLimit", NONE, "mW / 1000", "nvmlDeviceGetEnforcedPowerLimit", "Enforced power limit, watts."),
            ("GPUPowerUtilization", PERCENT, "power draw / enforced limit × 100",
             "nvmlDeviceGetPowerUsage, nvmlDeviceGetEnforcedPowerLimit", "Power as a share of the limit."),
            ("GPUEnergyConsumed", NONE, "Δ total energy (mJ) / 1000",
             "NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Energy used in the interval, joules."),
            ("GPUSMClock", NONE, "MHz", "nvmlDeviceGetClockInfo(SM)", "nvidia-smi clocks.sm, MHz."),
            ("GPUThrottleThermal", NONE, "1 if SW or HW thermal slowdown is set, else 0",
             "nvmlDeviceGetCurrentClocksEventReasons", "Clocks held back by temperature."),
            ("GPUThrottlePowerCap", NONE, "1 if SW power cap is set, else 0",
             "nvmlDeviceGetCurrentClocksEventReasons", "Clocks held back by the power limit."),
            ("GPUThrottleHardwareSlowdown", NONE, "1 if HW slowdown or HW power brake is set, else 0",
             "nvmlDeviceGetCurrentClocksEventReasons", "Clocks held back by hardware (power brake, overheating)."),
            ("GPUECCUncorrectableErrors", COUNT, "Δ volatile uncorrectable (double-bit) ECC errors",
             "NVML_FI_DEV_ECC_DBE_VOL_TOTAL", "Uncorrectable ECC errors in the interval."),
            ("GPURemappedRowsPending", NONE, "1 if a row remap waits for the next GPU reset, else 0",
             "NVML_FI_DEV_REMAPPED_PENDING", "Reset the GPU to apply pending row remaps."),
            ("GPURemappedRowsFailed", NONE, "1 if a row remap failed, else 0", "NVML_FI_DEV_REMAPPED_FAILURE",
             "A row remap failed: the GPU needs service."),
            ("GPUPCIeReplays", COUNT, "Δ PCIe replay counter", "NVML_FI_DEV_PCIE_REPLAY_COUNTER",
             "PCIe replays in the interval (link trouble)."),
            ("GPUPCIeRxBytesPerSecond", BYTES_PER_SECOND, "Δ bytes / Δ time; else KB/s × 1024 over 20 ms",
             "NVML_FI_DEV_PCIE_COUNT_RX_BYTES, else nvmlDeviceGetPcieThroughput(RX) once a minute",
             "PCIe receive throughput."),
            ("GPUPCIeTxBytesPerSecond", BYTES_PER_SECOND, "Δ bytes / Δ time; else KB/s × 1024 over 20 ms",
             "NVML_FI_DEV_PCIE_COUNT_TX_BYTES, else nvmlDeviceGetPcieThroughput(TX) once a minute",
             "PCIe transmit throughput."),
            ("GPUNVLinkErrors", COUNT, "Σ Δ replay, recovery, CRC flit and CRC data error totals",
             "NVML_FI_DEV_NVLINK_*_ERROR_COUNT_TOTAL", "NVLink errors in the interval; only GPUs with NVLink."),
            ("GPUXidErrors", COUNT, "critical Xid events in the interval",
             "nvmlEventSetWait_v2 (nvmlEventTypeXidCriticalError)", "Critical Xid errors reported by the driver."),
            ("GPULastXid", NONE, "code of the last critical Xid", "nvmlEventSetWait_v2",
             "The most recent Xid code; published in intervals that saw one."),
            ("GPUHealthy", NONE, "1 if NVML answers for the GPU, 0 if it is lost (fell off the bus)",
             "NVML (NVMLError_GpuIsLost)", "0 when the GPU fell off the bus."),
        )
    ),
    # --- GPU, per host ---------------------------------------------------------------------------
    Metric("GPUCount", COUNT, (), "devices visible", "nvmlDeviceGetCount", "GPUs NVML can see."),
    Metric("HostGPUUtilization", PERCENT, (), "mean GPUUtilization over GPUs that report it", "GPU collector",
           "One series to alarm on a whole host's GPUs."),
    Metric("HostGPUMemoryUtilization", PERCENT, (), "mean GPUMemoryUtilization over GPUs that report it",
           "GPU collector",
           "One series to alarm on a whole host's GPU memory."),
    # --- The agent itself ------------------------------------------------------------------------
    Metric("AgentVersion", COUNT, ("Component", "Version"), "1 per publish interval", "agent",
           "The running agent's version, to follow a rollout; only with version_series (a billed metric per "
           "host and version)."),
    Metric("Heartbeat", COUNT, ("Component",), "1 per publish interval", "agent",
           "Absent when the host or the agent is down; the availability alarm watches it."),
    Metric("DatapointsCollected", COUNT, ("Component",), "samples taken in the interval", "agent",
           "Datapoints the collectors produced."),
    Metric("DatapointsPublished", COUNT, ("Component",), "datapoints acknowledged in the interval", "agent",
           "Datapoints CloudWatch accepted."),
    Metric("DatapointsDropped", COUNT, ("Component", "Reason"), "datapoints dropped in the interval", "agent",
           "Datapoints that will never be delivered, by reason."),
    Metric("PossibleDuplicates", COUNT, ("Component",), "datapoints sent again after a read timeout",
           "agent", "Datapoints CloudWatch may have stored twice: their first request timed out waiting for the "
           "answer, then they were retried or kept for replay (docs/data-loss.md)."),
    Metric("CollectorErrors", COUNT, ("Component", "Collector"), "collector runs that raised in the interval",
           "agent", "A collector failed; the others carried on."),
    Metric("PublishErrors", COUNT, ("Component", "ErrorCode"), "failed PutMetricData attempts in the interval",
           "agent", "Throttling, 5xx, connection errors and rejections, by error code."),
    Metric("PublishLatency", MILLISECONDS, ("Component",), "wall time of one PutMetricData request", "agent",
           "Latency of the CloudWatch API as this host sees it."),
    Metric("SpoolDatums", COUNT, ("Component",), "datums held in the spool at flush time", "agent spool (SQLite)",
           "Datums CloudWatch has not accepted yet, kept on disk for replay; grows during an outage."),
    Metric("SpoolOldestAgeSeconds", SECONDS, ("Component",), "now − timestamp of the oldest spooled datum",
           "agent spool (SQLite)", "How far replay is behind; absent while the spool is empty."),
    Metric("SpoolReplayStopped", COUNT, ("Component",), "1 while rows replay delivered cannot be deleted",
           "agent spool (SQLite)", "Replay is stopped (disk full): it sends nothing until the spool can delete "
           "what it delivered, so nothing is sent twice; live data is still published. Absent otherwise."),
    Metric("AgentCPUUtilization", PERCENT, ("Component",), "Δ process CPU time (user + system) / Δ wall time × 100",
           "psutil.Process().cpu_times", "CPU the agent used since the previous flush, in % of one core."),
    Metric("AgentMemoryRSS", BYTES, ("Component",), "resident set size", "psutil.Process().memory_info",
           "Memory the agent holds."),
    Metric("ValuesMerged", COUNT, ("Component",), "distinct values merged into group means in the interval",
           "agent", "Values merged to bound memory (a series past 1,500 distinct values in a minute, or all "
           "series past 100,000): SampleCount, Sum, Minimum and Maximum stay exact, percentiles approximate."),
    Metric("StorageMountsSkipped", COUNT, ("Component", "Reason"), "filesystems not read in the cycle, by reason",
           "storage collector", "Reason timeout: statvfs did not answer within storage.timeout (a hung mount, "
           "or every statvfs thread parked on one); error: statvfs failed. Absent while none is skipped."),
    # --- StatsD listener -------------------------------------------------------------------------
    Metric("StatsdSeriesDropped", COUNT, ("Component",), "lines of series not admitted in the interval",
           "StatsD listener", "Lines dropped because their series is past statsd.max_series, is named like "
           "a catalogue metric, or was first sent with another type."),
    Metric("StatsdParseErrors", COUNT, ("Component",), "malformed lines and dimension tags in the interval",
           "StatsD listener", "StatsD lines that did not parse, and dimension tags dropped from kept lines because "
           "CloudWatch would refuse their value; the first few are logged."),
)

METRICS: dict[str, Metric] = {metric.name: metric for metric in CATALOGUE}

# Metrics whose value counts events (or energy) in the interval: summed, they are a running total, which is
# what Prometheus calls a counter.
INTERVAL_COUNTS = frozenset({
    "GPUECCUncorrectableErrors", "GPUPCIeReplays", "GPUNVLinkErrors", "GPUXidErrors", "GPUEnergyConsumed",
    "DatapointsCollected", "DatapointsPublished", "DatapointsDropped", "PossibleDuplicates", "CollectorErrors",
    "PublishErrors", "StatsdSeriesDropped", "StatsdParseErrors", "DiskIOTime", "StorageMountsSkipped",
    "ValuesMerged",
})
# The physical unit of metrics published with Unit None: CloudWatch's StandardUnit has no °C, W, J or MHz.
PHYSICAL_UNITS: dict[str, str] = {
    "GPUTemperature": "celsius", "GPUMemoryTemperature": "celsius", "GPUPowerDraw": "watts",
    "GPUPowerLimit": "watts", "GPUEnergyConsumed": "joules", "GPUSMClock": "megahertz",
}
