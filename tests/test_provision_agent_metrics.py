"""Every host alarm watches a series the agent really publishes: agent cycles into moto, then provision and look."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from agent.aggregate import Aggregator
from agent.collectors.cpu import CpuCollector
from agent.collectors.cwagent_cpu import CwagentCpuCollector
from agent.collectors.gpu import GpuCollector
from agent.collectors.memory import MemoryCollector
from agent.collectors.storage import StorageCollector
from agent.fake_nvml import healthy_h100
from agent.filters import NameFilter
from agent.loop import Agent
from agent.naming import DEFAULT_NAMESPACE, PROFILES, Namer, profile, published_dimensions
from agent.nvml import Nvml
from agent.publisher import Publisher
from agent.selfstats import AgentStats
from provisioning.alarm_catalogue import KINDS
from tests.fakes.aws import Provisioner
from tests.fakes.host import TRAINING_HOST_MOUNTS, TRAINING_HOST_STATVFS, FakeClock, Sequence, cpu, statvfs_from

HOSTS = ("i-0000000000000000a", "i-0000000000000000b")
GPUS = 8


class Memory:
    total = 64 * 2**30
    available = 16 * 2**30
    free = 8 * 2**30
    buffers = 2**30
    cached = 8 * 2**30


STAT = ("cpu  100 0 50 500 20 0 0 5 0 0\ncpu0 100 0 50 500 20 0 0 5 0 0\n",
        "cpu  130 0 60 540 35 0 0 10 0 0\ncpu0 130 0 60 540 35 0 0 10 0 0\n")  # /proc/stat, 10 s apart


class Swap:
    total = 0
    used = 0


def run_agent_cycle(
    client: Any, instance_id: str, id_dimension: str = "InstanceId", naming: str = "native",
    static: tuple[tuple[str, str], ...] = (),
) -> None:
    """Two collections and a flush of the agent's own loop, collectors, aggregator, naming profile and
    publisher, on a fake 8-GPU host (counters such as CPU time and ECC errors publish from their second
    reading). The collectors are chosen and set the device dimensions as `agent.cli.build_collectors` does
    for the profile."""
    stats = AgentStats()
    clock = FakeClock()
    chosen = profile(naming)
    needed = chosen.device_dimensions
    gpu = GpuCollector(Nvml(healthy_h100(GPUS, clock=clock)), monotonic=clock, xid_wait_ms=10,
                       name_dimension="GPUName" in needed, arch_dimension="GPUArch" in needed)
    cwagent = chosen.formulas == "cwagent"
    collectors = [
        CwagentCpuCollector(read_stat=Sequence(*STAT)) if cwagent
        else CpuCollector(cpu_times=Sequence(cpu(user=10, idle=90), cpu(user=20, idle=180))),
        MemoryCollector(formulas=chosen.formulas, virtual_memory=lambda: Memory(), swap_memory=lambda: Swap()),
        StorageCollector(fstypes=NameFilter(exclude=("tmpfs", "overlay", "squashfs", "proc", "cgroup2", "fuse.*")),
                         mount_table=lambda: TRAINING_HOST_MOUNTS,
                         statvfs=statvfs_from(TRAINING_HOST_STATVFS), device_dimensions={"Device", "FSType"} <= needed),
        gpu,
    ]
    namer = Namer(naming, 10.0)
    agent = Agent(collectors=collectors, aggregator=Aggregator(publish_as=namer.datum), stats=stats,
                  submit=Publisher(client, DEFAULT_NAMESPACE[naming], stats=stats).publish,
                  host_dimensions=((id_dimension, instance_id), *static), sample_as=namer.sample)
    agent.collect()
    clock.advance(10)
    agent.collect()
    agent.flush()
    gpu.close()


def published_and_watched(cloudwatch: Any) -> tuple[set[Any], list[dict[str, Any]], set[Any]]:
    """(series the namespace holds, the alarms, the series they watch), as (name, sorted dimensions)."""
    published = {
        (metric["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in metric["Dimensions"])))
        for page in cloudwatch.get_paginator("list_metrics").paginate(Namespace="InfraWatch")
        for metric in page["Metrics"]
    }
    alarms = [alarm for page in cloudwatch.get_paginator("describe_alarms").paginate()
              for alarm in page["MetricAlarms"]]
    watched = {
        (alarm["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in alarm["Dimensions"])))
        for alarm in alarms
    }
    return published, alarms, watched


SPEC = f"""
stack = "ml"
[alarms.gpu_idle]
enabled = true

[[hosts]]
instance_ids = {list(HOSTS)}
gpus = {GPUS}
mounts = ["/", "/data"]
""".replace("'", '"')


def test_every_host_alarm_watches_a_series_the_agent_published(tmp_path: Path) -> None:
    with mock_aws():
        provisioner = Provisioner(tmp_path)
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
        for instance_id in HOSTS:
            run_agent_cycle(cloudwatch, instance_id)
        assert provisioner.run(SPEC, "--yes").code == 0

        published, alarms, watched = published_and_watched(cloudwatch)
        assert len(alarms) == 2 * (6 + 5 * GPUS + 1)  # 6 per host (2 mounts), 5 per GPU, the idle alarm
        assert watched - published == set()
        assert (
            "Heartbeat", (("Component", "agent"), ("InstanceId", HOSTS[0]))
        ) in watched


def test_an_agent_off_ec2_is_discovered_and_every_alarm_watches_its_host_series(tmp_path: Path) -> None:
    with mock_aws():
        provisioner = Provisioner(tmp_path)
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
        run_agent_cycle(cloudwatch, "gpu-box-1", id_dimension="Host")
        spec = 'stack = "ml"\n[[hosts]]\ndiscover = true\ndiscover_devices = true\n'
        assert provisioner.run(spec, "--yes").code == 0
        published, alarms, watched = published_and_watched(cloudwatch)
    assert len(alarms) == 6 + 5 * GPUS  # cpu, memory, 2 mounts, gpu utilization, heartbeat; 5 per GPU
    assert watched - published == set()
    assert ("Heartbeat", (("Component", "agent"), ("Host", "gpu-box-1"))) in watched


def datapoints(cloudwatch: Any, namespace: str, name: str, dims: list[dict[str, str]]) -> int:
    """Samples of exactly this series in the last hour. A CloudWatch metric is its namespace, name and whole
    dimension set, but moto's GetMetricStatistics also counts series with more dimensions than asked, so the
    exact series is first looked up with ListMetrics, which lists every series as published."""
    listed = cloudwatch.list_metrics(Namespace=namespace, MetricName=name, Dimensions=dims)["Metrics"]
    wanted = sorted((d["Name"], d["Value"]) for d in dims)
    if not any(sorted((d["Name"], d["Value"]) for d in series["Dimensions"]) == wanted for series in listed):
        return 0
    now = datetime.now(timezone.utc)
    found = cloudwatch.get_metric_statistics(
        Namespace=namespace, MetricName=name, Dimensions=dims, StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(minutes=5), Period=60, Statistics=["SampleCount"],
    )["Datapoints"]
    return int(sum(point["SampleCount"] for point in found))


def dashboard_series(cloudwatch: Any, name: str) -> list[tuple[str, str, list[dict[str, str]]]]:
    """(namespace, name, dimensions) of every plain metric line of a dashboard (not SEARCH expressions)."""
    body = json.loads(cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"])
    lines = [line for widget in body["widgets"] for line in widget.get("properties", {}).get("metrics", [])
             if isinstance(line[0], str)]
    return [(line[0], line[1], [{"Name": key, "Value": value}
                                for key, value in zip(line[2:-1:2], line[3:-1:2], strict=True)])
            for line in lines]


DECLARED, DISCOVERED = "i-0000000000000000a", "i-0000000000000000b"
BOTH_WAYS = f"""
stack = "ml"
naming = "{{naming}}"
[alarms.gpu_idle]
enabled = true

[[hosts]]
instance_ids = ["{DECLARED}"]
gpus = {GPUS}
mounts = ["/", "/data"]

[[hosts]]
discover = true
discover_devices = true
dimensions = {{{{ Cluster = "batch" }}}}
"""


@pytest.mark.parametrize("naming", PROFILES)
def test_every_alarm_and_dashboard_line_watches_a_series_with_datapoints(
    naming: str, moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Both profiles, declared and discovered devices: the agent publishes over HTTP to a moto server, then
    every alarm's namespace, name and full dimension set must have datapoints."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    cloudwatch = boto3.client("cloudwatch")
    run_agent_cycle(cloudwatch, DECLARED, naming=naming)
    run_agent_cycle(cloudwatch, DISCOVERED, naming=naming, static=(("Cluster", "batch"),))

    run = Provisioner(tmp_path).run(BOTH_WAYS.format(naming=naming), "--yes")
    assert (run.code, run.err) == (0, "")  # not one warning: every alarm's series has data

    alarms = [alarm for page in cloudwatch.get_paginator("describe_alarms").paginate()
              for alarm in page["MetricAlarms"]]
    assert len(alarms) == 2 * (7 + 5 * GPUS)  # cpu, memory, 2 mounts, 2 GPU utilization, heartbeat; 5 per GPU
    without_data = [alarm["AlarmName"] for alarm in alarms
                    if not datapoints(cloudwatch, alarm["Namespace"], alarm["MetricName"], alarm["Dimensions"])]
    assert without_data == []
    lines = dashboard_series(cloudwatch, "ml-us-east-1-fleet")
    assert len(lines) == 2 * (2 + (1 + GPUS) + GPUS + 2 + 2)  # CPU+memory, GPU, GPU memory, storage, agent
    assert [line for line in lines if not datapoints(cloudwatch, *line)] == []
    gpu = next(alarm for alarm in alarms if alarm["AlarmName"] == f"ml/host/{DISCOVERED}/gpu_unhealthy@gpu3")
    if naming == "cwagent":
        assert sorted((d["Name"], d["Value"]) for d in gpu["Dimensions"]) == [
            ("Cluster", "batch"), ("InstanceId", DISCOVERED), ("arch", "Hopper"), ("index", "3"),
            ("name", "NVIDIA H100 80GB HBM3"),
        ]
    for alarm in alarms:  # the agent's own statement of the exact dimension names it publishes
        host = ["InstanceId", *(["Cluster"] if DISCOVERED in alarm["AlarmName"] else [])]
        metric = KINDS[alarm["AlarmName"].split("/")[3].split("@")[0]].metric
        assert tuple(sorted(d["Name"] for d in alarm["Dimensions"])) == published_dimensions(naming, metric, host)


def test_under_cwagent_a_declared_gpu_that_publishes_nothing_is_left_out_with_a_warning(tmp_path: Path) -> None:
    with mock_aws():
        provisioner = Provisioner(tmp_path)
        run_agent_cycle(boto3.client("cloudwatch", region_name="us-east-1"), DECLARED, naming="cwagent")
        spec = f'stack = "ml"\nnaming = "cwagent"\n[[hosts]]\ninstance_ids = ["{DECLARED}"]\ngpus = {GPUS + 1}\n'
        run = provisioner.run(spec, "--yes")
        names = {alarm["AlarmName"] for alarm in provisioner.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    assert (run.code, run.errors) == (0, [])
    assert run.warnings == [
        f"warning: hosts[0]: {DECLARED} published no GPUHealthy series for GPU {GPUS} in the last 3 hours, so their "
        "alarms, which need the GPUName/GPUArch it publishes, are left out",
    ]
    assert f"ml/host/{DECLARED}/gpu_unhealthy@gpu{GPUS - 1}" in names
    assert not any(name.endswith(f"@gpu{GPUS}") for name in names)
