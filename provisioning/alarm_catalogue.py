"""The alarm catalogue: every kind of alarm the provisioner can create, with its defaults, as data.

The spec's `[alarms.<key>]` tables override these defaults, the alarm builder reads them, and the
README's alarm table is checked against this table. Host kinds name a metric of the agent's metric
catalogue (`agent.catalogue`), so their names and dimensions come from what the agent publishes.
"""

from __future__ import annotations

from dataclasses import dataclass

HOST = "host"  # one alarm per host
GPU = "gpu"  # one alarm per GPU index of a host
MOUNT = "mount"  # one alarm per mount path of a host
VARIANT = "variant"  # one alarm per SageMaker endpoint variant

ABOVE = "GreaterThanThreshold"
BELOW = "LessThanThreshold"

SAGEMAKER_NAMESPACE = "AWS/SageMaker"
SAGEMAKER_HOST_NAMESPACE = "/aws/sagemaker/Endpoints"

SEVERITIES = ("critical", "warning")


@dataclass(frozen=True)
class AlarmKind:
    key: str
    title: str  # what fired, for the alarm description
    target: str  # HOST, GPU, MOUNT or VARIANT
    metric: str  # agent catalogue name (host targets) or SageMaker metric name; "" for metric math
    statistic: str  # Average, Maximum, Minimum, Sum, or a percentile such as p99
    comparison: str
    threshold: float  # in `unit`
    unit: str  # the unit the spec's threshold is written in
    period: int  # seconds
    datapoints: int  # M of the M-of-N
    evaluation_periods: int  # N
    severity: str
    missing_data: str  # TreatMissingData
    enabled: bool = True
    namespace: str = ""  # "" for host kinds: the agent's namespace from the spec
    scale: float = 1.0  # spec unit to metric unit (milliseconds to the metric's microseconds)
    per_core: str = ""  # "vcpus" or "gpus": the SageMaker metric sums over cores, divide to get 0..100 %
    requires_gpus: bool = False  # a per-host GPU series: only hosts with GPUs publish it
    note: str = ""  # for the README


HOST_KINDS: tuple[AlarmKind, ...] = (
    AlarmKind("cpu_high", "CPU utilization", HOST, "CPUUtilization", "Average", ABOVE, 90, "%",
              60, 3, 5, "warning", "missing"),
    AlarmKind("memory_high", "Memory utilization", HOST, "MemoryUtilization", "Average", ABOVE, 90, "%",
              60, 3, 5, "warning", "missing"),
    AlarmKind("storage_high", "Storage utilization", MOUNT, "StorageUtilization", "Maximum", ABOVE, 85, "%",
              300, 1, 1, "warning", "missing", note="one per mount path"),
    AlarmKind("gpu_utilization_high", "GPU utilization (mean of the host's GPUs)", HOST, "HostGPUUtilization",
              "Average", ABOVE, 98, "%", 300, 3, 3, "warning", "missing", requires_gpus=True,
              note="hosts with GPUs"),
    AlarmKind("gpu_idle", "GPU utilization (busiest GPU of the host)", HOST, "HostGPUUtilization", "Maximum",
              BELOW, 5, "%", 300, 6, 6, "warning", "missing", enabled=False, requires_gpus=True,
              note="opt-in: paid-for GPUs doing nothing for 30 minutes"),
    AlarmKind("gpu_memory_high", "GPU memory utilization", GPU, "GPUMemoryUtilization", "Maximum", ABOVE,
              95, "%", 60, 3, 5, "warning", "missing", note="one per GPU"),
    AlarmKind("gpu_temperature_high", "GPU temperature", GPU, "GPUTemperature", "Maximum", ABOVE, 85, "°C",
              60, 3, 5, "warning", "missing", note="one per GPU"),
    AlarmKind("gpu_unhealthy", "GPU health (0: fell off the bus)", GPU, "GPUHealthy", "Minimum", BELOW, 1, "",
              60, 1, 1, "critical", "notBreaching",
              note="one per GPU; a dead agent is the heartbeat alarm's job"),
    AlarmKind("gpu_xid_errors", "GPU critical Xid errors", GPU, "GPUXidErrors", "Sum", ABOVE, 0, "errors",
              60, 1, 1, "critical", "notBreaching", note="one per GPU"),
    AlarmKind("gpu_ecc_errors", "GPU uncorrectable ECC errors", GPU, "GPUECCUncorrectableErrors", "Sum",
              ABOVE, 0, "errors", 60, 1, 1, "critical", "notBreaching", note="one per GPU"),
    AlarmKind("heartbeat_missing", "Agent heartbeat", HOST, "Heartbeat", "Sum", BELOW, 1, "heartbeats",
              60, 3, 3, "critical", "breaching",
              note="missing data breaches: a dead host or agent pages; period ≥ agents' publish.interval"),
)

# Fleet scope only: one alarm per fleet on a count, with no `[alarms.<key>]` table (its spec is the fleet's
# `reporting`). Its threshold is the fleet's reporting.min_hosts times the heartbeats each host sends a period.
HOSTS_REPORTING = AlarmKind(
    "hosts_reporting", "Heartbeats of the fleet's hosts (one per host and publish interval)", HOST, "Heartbeat",
    "SampleCount", BELOW, 1, "heartbeats", 60, 3, 3, "critical", "breaching",
    note="fleet scope: COUNT(Heartbeat) without GROUP BY below reporting.min_hosts; no data at all breaches",
)

VARIANT_KINDS: tuple[AlarmKind, ...] = (
    AlarmKind("endpoint_no_traffic", "Invocations", VARIANT, "Invocations", "Sum", BELOW, 1, "invocations",
              300, 3, 3, "warning", "breaching", enabled=False, namespace=SAGEMAKER_NAMESPACE,
              note="opt-in; no traffic means no datapoints, so missing data is breaching"),
    AlarmKind("endpoint_5xx_rate", "5XX error rate", VARIANT, "Invocation5XXErrors", "Average", ABOVE, 0.01,
              "fraction", 60, 3, 5, "critical", "notBreaching", namespace=SAGEMAKER_NAMESPACE),
    AlarmKind("endpoint_4xx_rate", "4XX error rate", VARIANT, "Invocation4XXErrors", "Average", ABOVE, 0.05,
              "fraction", 60, 3, 5, "warning", "notBreaching", namespace=SAGEMAKER_NAMESPACE),
    AlarmKind("endpoint_model_error_rate", "Model error rate", VARIANT, "InvocationModelErrors", "Average",
              ABOVE, 0.01, "fraction", 60, 3, 5, "critical", "notBreaching", namespace=SAGEMAKER_NAMESPACE),
    AlarmKind("endpoint_error_rate", "Error rate (5XX + model errors) / Invocations", VARIANT, "", "Sum", ABOVE, 0.05,
              "fraction", 60, 3, 5, "critical", "notBreaching", namespace=SAGEMAKER_NAMESPACE,
              note="metric math over Sums, 0 when there are no invocations"),
    AlarmKind("endpoint_latency_p99", "ModelLatency p99", VARIANT, "ModelLatency", "p99", ABOVE, 1000, "ms",
              60, 3, 5, "critical", "notBreaching", namespace=SAGEMAKER_NAMESPACE, scale=1000,
              note="metric in microseconds; EvaluateLowSampleCountPercentile=ignore"),
    AlarmKind("endpoint_latency_p90", "ModelLatency p90", VARIANT, "ModelLatency", "p90", ABOVE, 500, "ms",
              60, 3, 5, "warning", "notBreaching", namespace=SAGEMAKER_NAMESPACE, scale=1000,
              note="metric in microseconds; EvaluateLowSampleCountPercentile=ignore"),
    AlarmKind("endpoint_overhead_latency", "OverheadLatency p99", VARIANT, "OverheadLatency", "p99", ABOVE,
              50, "ms", 60, 3, 5, "warning", "notBreaching", namespace=SAGEMAKER_NAMESPACE, scale=1000,
              note="metric in microseconds; EvaluateLowSampleCountPercentile=ignore"),
    AlarmKind("endpoint_cpu_high", "Endpoint CPU utilization", VARIANT, "CPUUtilization", "Average", ABOVE,
              90, "%", 60, 3, 5, "warning", "missing", namespace=SAGEMAKER_HOST_NAMESPACE, per_core="vcpus",
              note="divided by the instance type's vCPUs"),
    AlarmKind("endpoint_memory_high", "Endpoint memory utilization", VARIANT, "MemoryUtilization", "Average",
              ABOVE, 90, "%", 60, 3, 5, "warning", "missing", namespace=SAGEMAKER_HOST_NAMESPACE),
    AlarmKind("endpoint_gpu_high", "Endpoint GPU utilization", VARIANT, "GPUUtilization", "Average", ABOVE,
              95, "%", 60, 3, 5, "warning", "missing", namespace=SAGEMAKER_HOST_NAMESPACE, per_core="gpus",
              note="GPU instance types; divided by the GPU count"),
    AlarmKind("endpoint_gpu_memory_high", "Endpoint GPU memory utilization", VARIANT, "GPUMemoryUtilization",
              "Average", ABOVE, 90, "%", 60, 3, 5, "warning", "missing", namespace=SAGEMAKER_HOST_NAMESPACE,
              per_core="gpus", note="GPU instance types; divided by the GPU count"),
    AlarmKind("endpoint_disk_high", "Endpoint disk utilization", VARIANT, "DiskUtilization", "Average", ABOVE,
              85, "%", 60, 3, 5, "warning", "missing", namespace=SAGEMAKER_HOST_NAMESPACE),
)

KINDS: dict[str, AlarmKind] = {kind.key: kind for kind in (*HOST_KINDS, *VARIANT_KINDS)}

THROUGHPUT_KEY = "throughput_low"  # alarms from `[[throughput_floors]]`; their settings live in each entry
