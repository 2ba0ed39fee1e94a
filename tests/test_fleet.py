"""Host dimensions, fleet roll-ups and the Auto Scaling group hold, exactly, and a two-host fleet in moto."""

from __future__ import annotations

import datetime as dt
import threading

import boto3
from moto import mock_aws
from structlog.testing import capture_logs

from agent.aggregate import Aggregator
from agent.catalogue import METRICS
from agent.fleet import DEFAULT_ROLLUP_METRICS, DimensionPlan
from agent.loop import Agent
from agent.publisher import Publisher
from agent.samples import Sample
from agent.selfstats import AgentStats
from tests.fakes.host import FakeClock

MINUTE = 1_790_000_040.0  # a minute boundary
EC2 = {"InstanceId": "i-0abc", "InstanceType": "p5.48xlarge", "ImageId": "ami-1", "AvailabilityZone": "us-east-1a"}
CPU = METRICS["CPUUtilization"].sample(40.0)
ROOT = METRICS["StorageUtilization"].sample(60.0, MountPath="/")
DATA = METRICS["StorageUtilization"].sample(20.0, MountPath="/data")


class Group:
    """The Auto Scaling group lookup as the plan sees it, resolved when the test says so."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: str | None = None

    def resolve(self, value: str | None) -> None:
        self.value = value
        self.done.set()


def test_on_ec2_every_series_carries_the_appended_identity_and_static_dimensions() -> None:
    plan = DimensionPlan(identity=EC2, hostname="gpu-7", static=(("Team", "vision"),),
                         append=("InstanceId", "InstanceType"))
    assert plan.place([CPU, ROOT], MINUTE) == [
        ([CPU, ROOT], MINUTE, (("InstanceId", "i-0abc"), ("InstanceType", "p5.48xlarge"), ("Team", "vision"))),
    ]


def test_off_ec2_or_with_nothing_appended_the_hostname_is_the_host_dimension() -> None:
    off_ec2 = DimensionPlan(identity=None, hostname="laptop", append=("InstanceId", "InstanceType"))
    nothing_appended = DimensionPlan(identity=EC2, hostname="gpu-7", append=())
    assert off_ec2.place([CPU], MINUTE) == [([CPU], MINUTE, (("Host", "laptop"),))]
    assert nothing_appended.place([CPU], MINUTE) == [([CPU], MINUTE, (("Host", "gpu-7"),))]


def test_roll_ups_publish_the_selected_metrics_again_with_exactly_the_named_dimensions() -> None:
    group = Group()
    group.resolve("gpu-fleet")
    plan = DimensionPlan(
        identity=EC2, hostname="gpu-7", static=(("Team", "vision"),),
        aggregate=(("AutoScalingGroupName",), ("InstanceType", "MountPath"), ("Team",)),
        rollup_metrics=("CPUUtilization", "StorageUtilization"), group=group,
    )
    gpu = METRICS["GPUUtilization"].sample(99.0, GPU="0")  # not selected: never rolled up
    placed = plan.place([CPU, ROOT, gpu], MINUTE)
    assert placed == [
        ([CPU, ROOT, gpu], MINUTE, (("InstanceId", "i-0abc"), ("Team", "vision"))),
        ([Sample("CPUUtilization", 40.0, "Percent", (("AutoScalingGroupName", "gpu-fleet"),)),
          Sample("StorageUtilization", 60.0, "Percent", (("AutoScalingGroupName", "gpu-fleet"),))], MINUTE, ()),
        # CPUUtilization has no MountPath: it is not part of the (InstanceType, MountPath) roll-up.
        ([Sample("StorageUtilization", 60.0, "Percent", (("InstanceType", "p5.48xlarge"), ("MountPath", "/")))],
         MINUTE, ()),
        ([Sample("CPUUtilization", 40.0, "Percent", (("Team", "vision"),)),
          Sample("StorageUtilization", 60.0, "Percent", (("Team", "vision"),))], MINUTE, ()),
    ]


def test_a_roll_up_identical_to_the_full_series_is_skipped_so_nothing_counts_twice() -> None:
    plan = DimensionPlan(identity=EC2, hostname="gpu-7", aggregate=(("InstanceId",),),
                         rollup_metrics=("CPUUtilization", "StorageUtilization"))
    # CPUUtilization{InstanceId} is the full series itself; storage across mounts is a new one.
    assert plan.place([CPU, ROOT, DATA], MINUTE) == [
        ([CPU, ROOT, DATA], MINUTE, (("InstanceId", "i-0abc"),)),
        ([Sample("StorageUtilization", 60.0, "Percent", (("InstanceId", "i-0abc"),)),
          Sample("StorageUtilization", 20.0, "Percent", (("InstanceId", "i-0abc"),))], MINUTE, ()),
    ]


def test_a_roll_up_whose_dimension_is_unknown_is_skipped_and_logged_once() -> None:
    group = Group()
    group.resolve(None)  # the instance is in no Auto Scaling group
    plan = DimensionPlan(identity=EC2, hostname="gpu-7", aggregate=(("AutoScalingGroupName",),), group=group)
    with capture_logs() as logged:
        first = plan.place([CPU], MINUTE)
        second = plan.place([CPU], MINUTE + 10)
    assert first == [([CPU], MINUTE, (("InstanceId", "i-0abc"),))]
    assert second == [([CPU], MINUTE + 10, (("InstanceId", "i-0abc"),))]
    assert logged == [{"event": "rollup_dimension_unknown", "log_level": "warning", "rollup": ["AutoScalingGroupName"],
                       "dimension": "AutoScalingGroupName", "metric": "CPUUtilization"}]


def test_default_roll_up_metrics_are_the_host_level_series() -> None:
    assert DEFAULT_ROLLUP_METRICS == (
        "CPUUtilization", "CPUIOWait", "CPUSteal", "CPUIdle", "CPUUser", "CPUSystem", "MemoryUtilization",
        "MemoryAvailable", "SwapUtilization", "TCPEstablished", "TCPTimeWait", "GPUCount", "HostGPUUtilization",
        "HostGPUMemoryUtilization",
    )  # CPUIdle, CPUUser, CPUSystem and the TCP counts are made only under cwagent


def group_plan(group: Group, clock: FakeClock) -> DimensionPlan:
    return DimensionPlan(identity=EC2, hostname="gpu-7", append=("InstanceId", "AutoScalingGroupName"),
                         group=group, tag_wait=30.0, wall_clock=clock)


def test_samples_wait_for_the_group_and_all_carry_it_when_it_arrives_in_time() -> None:
    group, clock = Group(), FakeClock(MINUTE)
    plan = group_plan(group, clock)
    assert plan.place([CPU], MINUTE) == []
    clock.advance(10)
    assert plan.place([CPU], MINUTE + 10) == []
    group.resolve("gpu-fleet")
    clock.advance(10)
    full = (("AutoScalingGroupName", "gpu-fleet"), ("InstanceId", "i-0abc"))
    assert plan.place([ROOT], MINUTE + 20) == [
        ([CPU], MINUTE, full), ([CPU], MINUTE + 10, full), ([ROOT], MINUTE + 20, full),
    ]


def test_a_late_group_applies_from_the_next_minute_so_no_minute_is_split() -> None:
    group, clock = Group(), FakeClock(MINUTE)
    plan = group_plan(group, clock)
    assert plan.place([CPU], MINUTE) == []
    clock.advance(30)  # tag_wait is over: publish with what is known
    with capture_logs() as logged:
        released = plan.place([CPU], MINUTE + 30)
    assert released == [([CPU], MINUTE, (("InstanceId", "i-0abc"),)), ([CPU], MINUTE + 30, (("InstanceId", "i-0abc"),))]
    assert logged == [{"event": "auto_scaling_group_pending", "log_level": "warning", "waited_s": 30.0,
                       "held_batches": 1}]
    group.resolve("gpu-fleet")
    clock.advance(10)
    with capture_logs() as logged:
        same_minute = plan.place([CPU], MINUTE + 40)
    next_minute = plan.place([CPU], MINUTE + 60)
    assert same_minute == [([CPU], MINUTE + 40, (("InstanceId", "i-0abc"),))]
    assert next_minute == [([CPU], MINUTE + 60, (("AutoScalingGroupName", "gpu-fleet"), ("InstanceId", "i-0abc")))]
    assert logged == [{"event": "auto_scaling_group_known", "log_level": "info", "group": "gpu-fleet",
                       "applies_from": MINUTE + 60}]


def test_stop_holding_releases_at_once_for_the_last_flush() -> None:
    group, clock = Group(), FakeClock(MINUTE)
    plan = group_plan(group, clock)
    assert plan.place([CPU], MINUTE) == []
    plan.stop_holding()
    assert plan.place([ROOT], MINUTE + 1) == [([CPU], MINUTE, (("InstanceId", "i-0abc"),)),
                                              ([ROOT], MINUTE + 1, (("InstanceId", "i-0abc"),))]


class Steady:
    name = "cpu"

    def __init__(self, value: float) -> None:
        self.value = value

    def collect(self) -> list[Sample]:
        return [METRICS["CPUUtilization"].sample(self.value)]


def test_two_hosts_of_one_group_make_one_fleet_series_with_exact_statistics() -> None:
    group = Group()
    group.resolve("gpu-fleet")
    minute = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) - dt.timedelta(minutes=2)
    with mock_aws():
        client = boto3.client("cloudwatch", region_name="us-east-1")
        for instance_id, value in (("i-1", 30.0), ("i-2", 90.0)):
            stats = AgentStats()
            publisher = Publisher(client, "InfraWatch", stats=stats)
            plan = DimensionPlan(identity={**EC2, "InstanceId": instance_id}, hostname=instance_id,
                                 aggregate=(("AutoScalingGroupName",),), group=group)
            agent = Agent(collectors=[Steady(value)], aggregator=Aggregator(), stats=stats,
                          submit=publisher.publish, plan=plan, wall_clock=lambda: minute.timestamp())
            agent.collect()
            agent.collect()
            agent.flush()
            assert stats.collected == stats.published == 4 + 3  # 2 samples × (host + roll-up), 3 self-metrics
        fleet = client.get_metric_statistics(
            Namespace="InfraWatch", MetricName="CPUUtilization",
            Dimensions=[{"Name": "AutoScalingGroupName", "Value": "gpu-fleet"}],
            StartTime=minute - dt.timedelta(minutes=1), EndTime=minute + dt.timedelta(minutes=2), Period=60,
            Statistics=["SampleCount", "Sum", "Minimum", "Maximum"],
        )["Datapoints"]
        one_host = client.get_metric_statistics(
            Namespace="InfraWatch", MetricName="CPUUtilization", Dimensions=[{"Name": "InstanceId", "Value": "i-2"}],
            StartTime=minute - dt.timedelta(minutes=1), EndTime=minute + dt.timedelta(minutes=2), Period=60,
            Statistics=["SampleCount", "Sum"],
        )["Datapoints"]
    assert [(p["SampleCount"], p["Sum"], p["Minimum"], p["Maximum"]) for p in fleet] == [(4.0, 240.0, 30.0, 90.0)]
    assert [(p["SampleCount"], p["Sum"]) for p in one_host] == [(2.0, 180.0)]
