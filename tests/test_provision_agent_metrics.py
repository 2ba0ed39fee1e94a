"""Every host alarm watches a series the agent really publishes: one agent cycle into moto, then ListMetrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from agent.aggregate import Aggregator
from agent.collectors.cpu import CpuCollector
from agent.collectors.gpu import GpuCollector
from agent.collectors.memory import MemoryCollector
from agent.collectors.storage import StorageCollector
from agent.fake_nvml import healthy_h100
from agent.filters import NameFilter
from agent.loop import Agent
from agent.nvml import Nvml
from agent.publisher import Publisher
from agent.selfstats import AgentStats
from tests.fakes.aws import Provisioner
from tests.fakes.host import TRAINING_HOST_MOUNTS, TRAINING_HOST_STATVFS, FakeClock, Sequence, cpu, statvfs_from

HOSTS = ("i-0000000000000000a", "i-0000000000000000b")
GPUS = 8


class Memory:
    total = 64 * 2**30
    available = 16 * 2**30


class Swap:
    total = 0
    used = 0


def run_agent_cycle(client: Any, instance_id: str, id_dimension: str = "InstanceId") -> None:
    """Two collections and a flush of the agent's own loop, collectors, aggregator and publisher, on a fake
    8-GPU host (counters such as CPU time and ECC errors publish from their second reading)."""
    stats = AgentStats()
    clock = FakeClock()
    gpu = GpuCollector(Nvml(healthy_h100(GPUS, clock=clock)), monotonic=clock, xid_wait_ms=10)
    collectors = [
        CpuCollector(cpu_times=Sequence(cpu(user=10, idle=90), cpu(user=20, idle=180))),
        MemoryCollector(virtual_memory=lambda: Memory(), swap_memory=lambda: Swap()),
        StorageCollector(fstypes=NameFilter(exclude=("tmpfs", "overlay", "squashfs", "proc", "cgroup2", "fuse.*")),
                         mount_table=lambda: TRAINING_HOST_MOUNTS,
                         statvfs=statvfs_from(TRAINING_HOST_STATVFS)),
        gpu,
    ]
    agent = Agent(collectors=collectors, aggregator=Aggregator(), stats=stats,
                  submit=Publisher(client, "InfraWatch", stats=stats).publish,
                  host_dimensions=((id_dimension, instance_id),))
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
