"""The shipped Automation document, run step by step against moto's Auto Scaling, EC2 and SNS.

The EventBridge target's InputTransformer turns a CloudWatch alarm event into the document's parameters,
exactly as planned; the interpreter (tests/fakes/automation.py) runs the document; the floor and the daily
limit are read from the group and its scaling activities as AWS would answer them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import tomllib
from moto import mock_aws

from provisioning.aws import Account
from provisioning.discovery import Host, Inventory
from provisioning.responses import ReplaceResponse, replace_response, shipped_document
from provisioning.spec import parse
from tests.fakes.automation import Automation, ScalingHistory, transform
from tests.fakes.aws import an_image

ACCOUNT = Account("123456789012", "us-east-1", "aws")
NOW = dt.datetime(2026, 12, 6, 17, 30, tzinfo=dt.UTC)
GROUP = "trainers"


def event(instance: str, gpu: str = "3") -> dict[str, Any]:
    """A CloudWatch alarm state change as EventBridge delivers it (CloudWatch user guide, "Alarm events")."""
    return {
        "source": "aws.cloudwatch", "detail-type": "CloudWatch Alarm State Change", "time": "2026-12-06T17:30:00Z",
        "detail": {
            "alarmName": f"ml/host/{instance}/gpu_unhealthy@gpu{gpu}",
            "state": {"value": "ALARM", "reason": "Threshold Crossed"},
            "configuration": {"metrics": [{"id": "m1", "metricStat": {
                "metric": {"namespace": "InfraWatch", "name": "GPUHealthy",
                           "dimensions": {"InstanceId": instance, "GPU": gpu}},
                "period": 60, "stat": "Minimum"}, "returnData": True}]},
        },
    }


@dataclass
class World:
    session: boto3.Session
    history: ScalingHistory
    queue_url: str
    topic_arn: str

    def client(self, service: str) -> Any:
        return self.session.client(service)

    def response(self, spec_text: str, hosts: tuple[Host, ...] = ()) -> ReplaceResponse:
        spec = parse(tomllib.loads(spec_text))
        return replace_response(spec, ACCOUNT, Inventory(hosts, ()), self.topic_arn)

    def run(self, response: ReplaceResponse, instance: str) -> list[str]:
        automation = Automation(json.loads(shipped_document()), self.history, today=lambda: NOW.date())
        target = response.rule.targets[0].request()
        parameters = transform(target["InputTransformer"], event(instance))
        execution = automation.run(parameters)
        assert execution.status == "Success", execution.failure
        return execution.steps

    def messages(self) -> list[str]:
        received = self.client("sqs").receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        return [json.loads(item["Body"])["Message"] for item in received.get("Messages", [])]

    def group_instances(self) -> dict[str, tuple[str, str]]:
        group = self.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
        return {item["InstanceId"]: (item["LifecycleState"], item["HealthStatus"])
                for item in group["AutoScalingGroups"][0]["Instances"]}


@pytest.fixture
def world() -> Iterator[World]:
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        ec2 = session.client("ec2")
        image = an_image(ec2)
        ec2.create_launch_template(
            LaunchTemplateName="gpu-host", LaunchTemplateData={"ImageId": image, "InstanceType": "p5.48xlarge"}
        )
        session.client("autoscaling").create_auto_scaling_group(
            AutoScalingGroupName=GROUP, MinSize=0, MaxSize=10, DesiredCapacity=3,
            LaunchTemplate={"LaunchTemplateName": "gpu-host"}, AvailabilityZones=["us-east-1a"],
        )
        topic = session.client("sns").create_topic(Name="ml-warning")["TopicArn"]
        queue = session.client("sqs").create_queue(QueueName="warnings")["QueueUrl"]
        queue_arn = session.client("sqs").get_queue_attributes(
            QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        session.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
                                        Attributes={"RawMessageDelivery": "false"})
        history = ScalingHistory(session.client, now=lambda: NOW)
        yield World(session, history, queue, topic)


def spec(**replace: Any) -> str:
    settings = {"enabled": True, "auto_scaling_groups": [GROUP], **replace}
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in settings.items())
    return f'stack = "ml"\n[responses.replace_unhealthy_gpu_host]\n{lines}\n'


def test_a_host_of_a_group_above_its_floor_is_marked_unhealthy_and_replaced(world: World) -> None:
    before = world.group_instances()
    host = sorted(before)[0]
    steps = world.run(world.response(spec(min_in_service=2)), host)
    assert steps[-2:] == ["MarkUnhealthy", "NotifyReplaced"]
    after = world.group_instances()
    assert host not in after and len(after) == 3  # the group replaced it
    assert world.messages() == [
        f"Marked {host} unhealthy after ml/host/{host}/gpu_unhealthy@gpu3: Auto Scaling group {GROUP} replaces it "
        "(3 InService before, 0 health replacements earlier today)."
    ]


def test_a_group_at_its_floor_is_not_touched(world: World) -> None:
    before = world.group_instances()
    host = sorted(before)[0]
    steps = world.run(world.response(spec(min_in_service=3)), host)
    assert steps[-1] == "NotifyAtFloor" and "MarkUnhealthy" not in steps
    assert world.group_instances() == before
    assert world.history.activities == []
    assert world.messages() == [
        f"Did not replace {host} after ml/host/{host}/gpu_unhealthy@gpu3: its group {GROUP} has 3 InService "
        "instances, at or below the floor of 3."
    ]


def test_the_replacement_past_the_daily_limit_is_refused(world: World) -> None:
    response = world.response(spec(max_replacements_per_day=2, min_in_service=0))
    world.history.replaced(GROUP, "i-00000000000000001", NOW - dt.timedelta(hours=18))  # yesterday: not counted
    first, second, third = sorted(world.group_instances())
    assert world.run(response, first)[-1] == "NotifyReplaced"
    assert world.run(response, second)[-1] == "NotifyReplaced"
    steps = world.run(response, third)
    assert steps[-1] == "NotifyLimitReached" and "MarkUnhealthy" not in steps
    assert world.group_instances()[third] == ("InService", "Healthy")
    assert world.messages()[-1] == (
        f"Did not replace {third} after ml/host/{third}/gpu_unhealthy@gpu3: its group {GROUP} has had 2 health "
        "replacements today (UTC), the limit is 2."
    )


def test_a_host_already_marked_unhealthy_is_not_marked_twice(world: World) -> None:
    host = sorted(world.group_instances())[0]
    world.client("autoscaling").set_instance_health(InstanceId=host, HealthStatus="Unhealthy")
    steps = world.run(world.response(spec(min_in_service=0)), host)
    assert steps[-2:] == ["StillHealthy", "NotifyAlreadyReplaced"]
    assert world.history.activities == []


def test_a_host_in_no_group_is_stopped_only_when_the_spec_says_so(world: World) -> None:
    ec2 = world.client("ec2")
    image = an_image(ec2)
    alone = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]

    def state() -> str:
        return str(ec2.describe_instances(InstanceIds=[alone])["Reservations"][0]["Instances"][0]["State"]["Name"])

    assert world.run(world.response(spec()), alone)[-1] == "NotifyOutsideGroup"
    assert state() == "running"
    steps = world.run(world.response(spec(outside_group="stop"), (Host(alone, (), (), ()),)), alone)
    assert steps[-2:] == ["StopHost", "NotifyStopped"]
    assert state() in ("stopping", "stopped")
    stopped = f"Stopped {alone} (in no Auto Scaling group) after ml/host/{alone}/gpu_unhealthy@gpu3."
    assert world.messages()[-1] == stopped
