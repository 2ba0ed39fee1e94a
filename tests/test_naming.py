"""Naming profiles: every catalogue entry under both profiles, and the CloudWatch agent's names, units,
dimensions and value conversions exactly."""

from __future__ import annotations

import io
import json
import socket

import pytest

from agent.aggregate import Aggregator, Datum
from agent.catalogue import CATALOGUE, METRICS
from agent.cli import build_collectors, run_once
from agent.collectors.storage import StorageCollector
from agent.config import DEFAULT_IGNORED_FSTYPES, parse
from agent.dryrun import PrintingClient
from agent.filters import NameFilter
from agent.naming import (
    CWAGENT,
    CWAGENT_ALIASES,
    DEFAULT_NAMESPACE,
    KEEP,
    PROFILES,
    RESERVED_NAMES,
    Namer,
    profile,
    resolve,
)
from agent.samples import Sample
from tests.fakes.host import TRAINING_HOST_MOUNTS, TRAINING_HOST_STATVFS, statvfs_from

# catalogue name → (CloudWatch agent name, unit). Checked against the agent's documentation and its
# metricDefaultUnit table; nvidia_smi_* carry no unit.
CWAGENT_NAMES = {
    "CPUUtilization": ("cpu_usage_active", "Percent"),
    "CPUIOWait": ("cpu_usage_iowait", "Percent"),
    "CPUSteal": ("cpu_usage_steal", "Percent"),
    "CPUCoreUtilization": ("cpu_usage_active", "Percent"),
    "CPUIdle": ("cpu_usage_idle", "Percent"),
    "CPUUser": ("cpu_usage_user", "Percent"),
    "CPUSystem": ("cpu_usage_system", "Percent"),
    "CPUCoreIdle": ("cpu_usage_idle", "Percent"),
    "CPUCoreIOWait": ("cpu_usage_iowait", "Percent"),
    "CPUCoreUser": ("cpu_usage_user", "Percent"),
    "CPUCoreSystem": ("cpu_usage_system", "Percent"),
    "MemoryUtilization": ("mem_used_percent", "Percent"),
    "MemoryAvailable": ("mem_available", "Bytes"),
    "SwapUtilization": ("swap_used_percent", "Percent"),
    "StorageUtilization": ("disk_used_percent", "Percent"),
    "StorageInodesFree": ("disk_inodes_free", "Count"),
    "DiskIOTime": ("diskio_io_time", "Milliseconds"),
    "TCPEstablished": ("netstat_tcp_established", "Count"),
    "TCPTimeWait": ("netstat_tcp_time_wait", "Count"),
    "DiskReadBytesPerSecond": ("diskio_read_bytes", "Bytes"),
    "DiskWriteBytesPerSecond": ("diskio_write_bytes", "Bytes"),
    "DiskReadOpsPerSecond": ("diskio_reads", "Count"),
    "DiskWriteOpsPerSecond": ("diskio_writes", "Count"),
    "NetworkReceiveBytesPerSecond": ("net_bytes_recv", "Bytes"),
    "NetworkTransmitBytesPerSecond": ("net_bytes_sent", "Bytes"),
    "NetworkReceivePacketsPerSecond": ("net_packets_recv", "Count"),
    "NetworkTransmitPacketsPerSecond": ("net_packets_sent", "Count"),
    "GPUUtilization": ("nvidia_smi_utilization_gpu", "None"),
    "GPUMemoryControllerUtilization": ("nvidia_smi_utilization_memory", "None"),
    "GPUMemoryUsed": ("nvidia_smi_memory_used", "None"),
    "GPUMemoryTotal": ("nvidia_smi_memory_total", "None"),
    "GPUTemperature": ("nvidia_smi_temperature_gpu", "None"),
    "GPUPowerDraw": ("nvidia_smi_power_draw", "None"),
    "GPUSMClock": ("nvidia_smi_clocks_current_sm", "None"),
}
# No equivalent in the CloudWatch agent: published under CWAgent with the catalogue's name and unit.
CWAGENT_KEEPS_NATIVE_NAME = {
    "StorageInodeUtilization", "GPUMemoryUtilization", "GPUMemoryTemperature", "GPUPowerLimit",
    "GPUPowerUtilization", "GPUEnergyConsumed", "GPUThrottleThermal", "GPUThrottlePowerCap",
    "GPUThrottleHardwareSlowdown", "GPUECCUncorrectableErrors", "GPURemappedRowsPending", "GPURemappedRowsFailed",
    "GPUPCIeReplays", "GPUPCIeRxBytesPerSecond", "GPUPCIeTxBytesPerSecond", "GPUNVLinkErrors", "GPUXidErrors",
    "GPULastXid", "GPUHealthy", "GPUCount", "HostGPUUtilization", "HostGPUMemoryUtilization", "Heartbeat",
    "DatapointsCollected", "DatapointsPublished", "DatapointsDropped", "PossibleDuplicates", "CollectorErrors",
    "PublishErrors",
    "PublishLatency", "SpoolDatums", "SpoolOldestAgeSeconds", "SpoolReplayStopped", "AgentCPUUtilization",
    "AgentMemoryRSS", "AgentVersion",
    "StatsdSeriesDropped", "StatsdParseErrors", "StorageMountsSkipped", "ValuesMerged",
}


def example_dimensions(metric: str) -> dict[str, str]:
    entry = METRICS[metric]
    return {"InstanceId": "i-0abc", **{name: f"<{name}>" for name in entry.dimensions + entry.optional_dimensions}}


# The CloudWatch agent's further series: published under cwagent only.
CWAGENT_ONLY_NAMES = {
    "CPUIdle", "CPUUser", "CPUSystem", "CPUCoreIdle", "CPUCoreIOWait", "CPUCoreUser", "CPUCoreSystem",
    "StorageInodesFree", "DiskIOTime", "TCPEstablished", "TCPTimeWait",
}


def test_every_catalogue_entry_is_decided_for_the_cwagent_profile() -> None:
    assert set(CWAGENT_ALIASES) == set(METRICS)
    assert set(CWAGENT_NAMES) | CWAGENT_KEEPS_NATIVE_NAME == set(METRICS)
    assert not set(CWAGENT_NAMES) & CWAGENT_KEEPS_NATIVE_NAME
    assert {name for name in METRICS if not profile("native").publishes(name)} == CWAGENT_ONLY_NAMES


@pytest.mark.parametrize("metric", [metric.name for metric in CATALOGUE])
def test_every_catalogue_entry_resolves_in_both_profiles(metric: str) -> None:
    dims = example_dimensions(metric)
    if metric in CWAGENT_ONLY_NAMES:
        with pytest.raises(KeyError, match=f"the native naming profile does not publish {metric}"):
            resolve("native", metric, dims)
    else:
        assert resolve("native", metric, dims) == (metric, dims)
    name, published = resolve("cwagent", metric, dims)
    expected_name, expected_unit = CWAGENT_NAMES.get(metric, (metric, METRICS[metric].unit))
    assert name == expected_name
    assert (CWAGENT.alias(metric).unit or METRICS[metric].unit) == expected_unit
    assert published["InstanceId"] == "i-0abc"  # EC2 dimensions keep their names, as the agent appends them
    assert len(published) == len(dims) + len(CWAGENT.alias(metric).constant_dimensions)


def test_cloudwatch_agent_dimensions_for_each_family() -> None:
    host = {"InstanceId": "i-0abc"}
    assert resolve("cwagent", "CPUUtilization", host) == ("cpu_usage_active", {**host, "cpu": "cpu-total"})
    assert resolve("cwagent", "CPUCoreUtilization", {**host, "Core": "3"}) == (
        "cpu_usage_active", {**host, "cpu": "cpu3"})
    assert resolve("cwagent", "StorageUtilization", {**host, "MountPath": "/", "Device": "nvme0n1p1",
                                                     "FSType": "ext4"}) == (
        "disk_used_percent", {**host, "path": "/", "device": "nvme0n1p1", "fstype": "ext4"})
    assert resolve("cwagent", "DiskReadBytesPerSecond", {**host, "Device": "nvme1n1"}) == (
        "diskio_read_bytes", {**host, "name": "nvme1n1"})
    assert resolve("cwagent", "NetworkReceiveBytesPerSecond", {**host, "Interface": "ens32"}) == (
        "net_bytes_recv", {**host, "interface": "ens32"})
    assert resolve("cwagent", "GPUUtilization", {"GPU": "0", "GPUName": "NVIDIA H100 80GB HBM3", "Host": "gpu-7"}) == (
        "nvidia_smi_utilization_gpu", {"index": "0", "name": "NVIDIA H100 80GB HBM3", "host": "gpu-7"})
    assert resolve("cwagent", "Heartbeat", {**host, "Component": "agent"}) == (
        "Heartbeat", {**host, "Component": "agent"})


def test_unknown_metric_or_profile_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="NotAMetric is not in the metric catalogue"):
        resolve("cwagent", "NotAMetric", {})
    with pytest.raises(KeyError, match="unknown naming profile 'telegraf'"):
        resolve("telegraf", "CPUUtilization", {})


def test_profiles_and_namespaces() -> None:
    assert PROFILES == ("native", "cwagent")
    assert DEFAULT_NAMESPACE == {"native": "InfraWatch", "cwagent": "CWAgent"}
    assert all(alias is KEEP for alias in profile("native").aliases.values())
    assert set(profile("native").aliases) == set(METRICS) - CWAGENT_ONLY_NAMES


def datum(name: str, dims: tuple[tuple[str, str], ...], unit: str, *values: float) -> Datum:
    return Datum(name, dims, 1_790_000_040.0, unit, values, tuple(1.0 for _ in values))


def test_values_are_converted_where_the_cloudwatch_agent_counts_differently() -> None:
    namer = Namer("cwagent", collect_interval=10)
    gpu = (("GPU", "0"), ("GPUName", "NVIDIA H100 80GB HBM3"), ("InstanceId", "i-0abc"))
    assert namer.datum(datum("GPUMemoryUsed", gpu, "Bytes", 2 * 2**30, 81_559 * 2**20)) == datum(
        "nvidia_smi_memory_used", (("InstanceId", "i-0abc"), ("index", "0"), ("name", "NVIDIA H100 80GB HBM3")),
        "None", 2048.0, 81_559.0)  # MiB, as nvidia-smi reports
    disk = (("Device", "nvme1n1"), ("InstanceId", "i-0abc"))
    # A per-second rate becomes the per-interval delta the agent publishes: 1,500 B/s × 10 s.
    assert namer.datum(datum("DiskReadBytesPerSecond", disk, "Bytes/Second", 1500.0, 0.0)) == datum(
        "diskio_read_bytes", (("InstanceId", "i-0abc"), ("name", "nvme1n1")), "Bytes", 15_000.0, 0.0)
    cpu = datum("CPUUtilization", (("Host", "laptop"), ("cpu", "cpu-total")), "Percent", 12.5)
    assert namer.datum(cpu) == datum("cpu_usage_active", (("cpu", "cpu-total"), ("host", "laptop")), "Percent", 12.5)
    assert Namer("native").datum(cpu) is cpu
    outside = datum("NotInTheCatalogue", (("InstanceId", "i-0abc"), ("model", "llama")), "Count", 1.0)
    assert namer.datum(outside) == outside


def test_statsd_series_carry_the_same_host_dimension_as_the_hosts_own_series() -> None:
    aggregator = Aggregator(publish_as=Namer("cwagent").datum)
    host = (("Host", "gpu-7"),)  # not on EC2
    aggregator.add([METRICS["MemoryUtilization"].sample(50.0), Sample("Rows", 3.0, "Count", (("model", "a"),))],
                   1_790_000_040.0, host)
    assert {(d.name, d.dimensions) for d in aggregator.drain()} == {
        ("mem_used_percent", (("host", "gpu-7"),)),
        ("Rows", (("host", "gpu-7"), ("model", "a"))),
    }


def test_every_name_any_profile_publishes_is_reserved() -> None:
    assert set(METRICS) <= RESERVED_NAMES
    assert {name for name, _ in CWAGENT_NAMES.values()} <= RESERVED_NAMES
    assert len(RESERVED_NAMES) == len(METRICS) + len({name for name, _ in CWAGENT_NAMES.values()})


def test_storage_sets_device_and_fstype_only_when_the_profile_needs_them() -> None:
    def storage(device_dimensions: bool) -> StorageCollector:
        return StorageCollector(fstypes=NameFilter(exclude=DEFAULT_IGNORED_FSTYPES),
                                device_dimensions=device_dimensions,
                                mount_table=lambda: TRAINING_HOST_MOUNTS,
                                statvfs=statvfs_from(TRAINING_HOST_STATVFS))

    assert {s.dimensions for s in storage(False).collect()} == {(("MountPath", "/"),), (("MountPath", "/data"),)}
    aggregator = Aggregator(publish_as=Namer("cwagent").datum)
    aggregator.add(storage(True).collect(), 1_790_000_040.0, (("InstanceId", "i-0abc"),))
    assert {(d.name, d.dimensions, d.unit) for d in aggregator.drain()} == {
        ("disk_used_percent", (("InstanceId", "i-0abc"), ("device", "nvme0n1p1"), ("fstype", "ext4"),
                               ("path", "/")), "Percent"),
        ("StorageInodeUtilization", (("InstanceId", "i-0abc"), ("device", "nvme0n1p1"), ("fstype", "ext4"),
                                     ("path", "/")), "Percent"),
        ("disk_used_percent", (("InstanceId", "i-0abc"), ("device", "nvme1n1"), ("fstype", "xfs"),
                               ("path", "/data")), "Percent"),
    }


def test_namespace_follows_the_profile_unless_set() -> None:
    assert parse({}).namespace == "InfraWatch"
    assert parse({"naming": "cwagent"}).namespace == "CWAgent"
    assert parse({"naming": "cwagent", "namespace": "ML/Hosts"}).namespace == "ML/Hosts"


def test_dry_run_under_cwagent_publishes_the_cloudwatch_agent_names() -> None:
    out = io.StringIO()
    config = parse({"naming": "cwagent", "gpu": {"enabled": False}})
    assert run_once(config, PrintingClient(out, "json"), build_collectors(config), sleep=lambda seconds: None) == 0
    [request] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert request["Namespace"] == "CWAgent"
    by_name = {d["MetricName"]: d for d in request["MetricData"]}
    assert {"mem_used_percent", "mem_available", "Heartbeat"} <= set(by_name)
    assert not {"MemoryUtilization", "MemoryAvailable"} & set(by_name)
    assert (by_name["mem_used_percent"]["Unit"], by_name["mem_used_percent"]["Dimensions"]) == (
        "Percent", [{"Name": "host", "Value": socket.gethostname()}])  # not on EC2: the agent's "host"


def test_cwagent_makes_the_collectors_set_the_gpu_name_and_storage_device() -> None:
    collectors = {collector.name: collector for collector in build_collectors(parse({"naming": "cwagent"}),
                                                                              fake_gpus=1)}
    try:
        gpu_dimensions = {dict(s.dimensions).get("GPUName") for s in collectors["gpu"].collect() if s.dimensions}
    finally:
        collectors["gpu"].close()  # type: ignore[attr-defined]
    assert gpu_dimensions == {"NVIDIA H100 80GB HBM3"}
    assert collectors["storage"]._device_dimensions is True  # type: ignore[attr-defined]
    native = {collector.name: collector for collector in build_collectors(parse({"gpu": {"enabled": False}}))}
    assert native["storage"]._device_dimensions is False  # type: ignore[attr-defined]


def test_the_sample_stage_is_skipped_under_native_and_adds_the_constant_dimensions_under_cwagent() -> None:
    assert Namer("native").sample_stage is None  # the loop then makes no pass over each batch
    stage = Namer("cwagent").sample_stage
    assert stage is not None
    core = METRICS["CPUCoreUtilization"].sample(12.5, Core="3")
    assert stage(METRICS["CPUUtilization"].sample(12.5)) == Sample("CPUUtilization", 12.5, "Percent",
                                                                     (("cpu", "cpu-total"),))
    assert stage(core) is core  # its `cpu` dimension is the Core renamed, at publish time
    gpu = METRICS["GPUUtilization"].sample(70, GPU="0")
    assert stage(gpu) is gpu
    job = Sample("StepTime", 250.0, "Milliseconds", (("model", "llama"),), 0.5)
    assert stage(job) is job
