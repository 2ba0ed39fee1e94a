"""The Amazon CloudWatch agent's Linux metrics, as data: what `naming = "cwagent"` must match.

One row per metric the agent's predefined sets publish (its config wizard's Basic, Standard and Advanced
plans, for EC2 and on-premises: tool/processors/defaultConfig/*Plan/plan.go) and per field its
`nvidia_gpu` block can publish (Registered_Metrics_Linux["nvidia_smi"]), plus the two further agent series
infrawatch publishes (cpu_usage_active, mem_available). Units are the agent's defaultUnits
(receiver/adapter/accumulator/default_unit.go; nvidia_smi fields have none). Dimensions are the keys the
agent publishes besides the EC2 ones its tagger appends (InstanceId, …; or `host` off EC2): telegraf's
tags less the agent's tagexclude (disk: mode) and TagDenyList (nvidia_smi: uuid, pstate, compute_mode).

Which infrawatch catalogue entries publish a row is not written here but read from the cwagent profile
(agent.naming), so the mapping cannot drift; tests check that every row with no `omitted` reason is
published with exactly this name, unit and dimension keys by the collectors themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.catalogue import BYTES, COUNT, MILLISECONDS, NONE, PERCENT
from agent.naming import CWAGENT

EC2 = ("Basic", "Standard", "Advanced")
ON_PREMISES = ("on-premises Basic", "on-premises Standard", "on-premises Advanced")
NVIDIA_GPU = "nvidia_gpu"


@dataclass(frozen=True)
class CwaMetric:
    name: str
    unit: str
    dimensions: tuple[str, ...]
    presets: tuple[str, ...]  # the lowest EC2 and on-premises plan that include it, or nvidia_gpu; () for none
    omitted: str = ""  # why infrawatch does not publish it; empty: published under cwagent

    @property
    def published_by(self) -> tuple[str, ...]:
        """The catalogue entries whose cwagent alias is this metric."""
        return tuple(metric for metric, alias in CWAGENT.aliases.items() if alias.name == self.name)


_CPU = ("cpu",)
_DISK = ("device", "fstype", "path")
_DISKIO = ("name",)
_NET = ("interface",)
_GPU = ("arch", "index", "name")

_ENCODER = "NVENC video encoder statistics: a training or inference host does not encode video"
_PCIE = "the link trains down at idle and up under load, so it follows utilization; link faults show as GPUPCIeReplays"

CWA_METRICS: tuple[CwaMetric, ...] = (
    CwaMetric("cpu_usage_active", PERCENT, _CPU, ()),
    CwaMetric("cpu_usage_idle", PERCENT, _CPU, ("Standard", "on-premises Basic")),
    CwaMetric("cpu_usage_iowait", PERCENT, _CPU, ("Standard", "on-premises Standard")),
    CwaMetric("cpu_usage_user", PERCENT, _CPU, ("Standard", "on-premises Advanced")),
    CwaMetric("cpu_usage_system", PERCENT, _CPU, ("Standard", "on-premises Advanced")),
    CwaMetric("cpu_usage_steal", PERCENT, _CPU, ("on-premises Advanced",)),
    CwaMetric("cpu_usage_guest", PERCENT, _CPU, ("on-premises Advanced",),
              omitted="time spent running virtual machines: 0 on an instance that hosts none"),
    CwaMetric("mem_used_percent", PERCENT, (), ("Basic", "on-premises Basic")),
    CwaMetric("mem_available", BYTES, (), ()),
    CwaMetric("swap_used_percent", PERCENT, (), ("Standard", "on-premises Basic")),
    CwaMetric("disk_used_percent", PERCENT, _DISK, ("Basic", "on-premises Basic")),
    CwaMetric("disk_inodes_free", COUNT, _DISK, ("Standard",)),
    CwaMetric("diskio_io_time", MILLISECONDS, _DISKIO, ("Standard", "on-premises Standard")),
    CwaMetric("diskio_read_bytes", BYTES, _DISKIO, ("Advanced", "on-premises Basic")),
    CwaMetric("diskio_write_bytes", BYTES, _DISKIO, ("Advanced", "on-premises Basic")),
    CwaMetric("diskio_reads", COUNT, _DISKIO, ("Advanced", "on-premises Basic")),
    CwaMetric("diskio_writes", COUNT, _DISKIO, ("Advanced", "on-premises Basic")),
    CwaMetric("net_bytes_recv", BYTES, _NET, ("on-premises Basic",)),
    CwaMetric("net_bytes_sent", BYTES, _NET, ("on-premises Basic",)),
    CwaMetric("net_packets_recv", COUNT, _NET, ("on-premises Basic",)),
    CwaMetric("net_packets_sent", COUNT, _NET, ("on-premises Basic",)),
    CwaMetric("netstat_tcp_established", COUNT, (), ("Advanced", "on-premises Advanced")),
    CwaMetric("netstat_tcp_time_wait", COUNT, (), ("Advanced", "on-premises Advanced")),
    CwaMetric("nvidia_smi_utilization_gpu", NONE, _GPU, (NVIDIA_GPU,)),
    CwaMetric("nvidia_smi_utilization_memory", NONE, _GPU, (NVIDIA_GPU,)),
    CwaMetric("nvidia_smi_memory_total", NONE, _GPU, (NVIDIA_GPU,)),
    CwaMetric("nvidia_smi_memory_used", NONE, _GPU, (NVIDIA_GPU,)),
    CwaMetric("nvidia_smi_memory_free", NONE, _GPU, (NVIDIA_GPU,),
              omitted="a further billed series per GPU: memory_total − memory_used − the driver's reservation"),
    CwaMetric("nvidia_smi_temperature_gpu", NONE, _GPU, (NVIDIA_GPU,)),
    CwaMetric("nvidia_smi_power_draw", NONE, _GPU, (NVIDIA_GPU,)),
    CwaMetric("nvidia_smi_fan_speed", NONE, _GPU, (NVIDIA_GPU,),
              omitted="NotSupported on every EC2 GPU (passively cooled): the agent publishes nothing either"),
    CwaMetric("nvidia_smi_clocks_current_sm", NONE, _GPU, (NVIDIA_GPU,)),
    CwaMetric("nvidia_smi_clocks_current_graphics", NONE, _GPU, (NVIDIA_GPU,),
              omitted="one more NVML call per GPU per sweep; equal to the SM clock on data-centre GPUs"),
    CwaMetric("nvidia_smi_clocks_current_memory", NONE, _GPU, (NVIDIA_GPU,),
              omitted="one more NVML call per GPU per sweep; the HBM clock is fixed on data-centre GPUs"),
    CwaMetric("nvidia_smi_clocks_current_video", NONE, _GPU, (NVIDIA_GPU,),
              omitted="one more NVML call per GPU per sweep; the video engines do no training work"),
    CwaMetric("nvidia_smi_pcie_link_gen_current", NONE, _GPU, (NVIDIA_GPU,), omitted=_PCIE),
    CwaMetric("nvidia_smi_pcie_link_width_current", NONE, _GPU, (NVIDIA_GPU,), omitted=_PCIE),
    CwaMetric("nvidia_smi_encoder_stats_session_count", NONE, _GPU, (NVIDIA_GPU,), omitted=_ENCODER),
    CwaMetric("nvidia_smi_encoder_stats_average_fps", NONE, _GPU, (NVIDIA_GPU,), omitted=_ENCODER),
    CwaMetric("nvidia_smi_encoder_stats_average_latency", NONE, _GPU, (NVIDIA_GPU,), omitted=_ENCODER),
)

BY_NAME = {metric.name: metric for metric in CWA_METRICS}
