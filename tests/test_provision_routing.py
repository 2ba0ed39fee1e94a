"""Routing by severity: each alarm reaches its own severity's subscribers, once, in words they can read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from tests.fakes.alarm_delivery import AlarmDelivery
from tests.fakes.aws import Provisioner

ACCOUNT = "123456789012"
HOST = "i-0000000000000000a"
SPEC = f"""
stack = "ml"

[[notifications.critical.subscriptions]]
protocol = "sqs"
endpoint = "arn:aws:sqs:us-east-1:{ACCOUNT}:pages"

[[notifications.warning.subscriptions]]
protocol = "sqs"
endpoint = "arn:aws:sqs:us-east-1:{ACCOUNT}:tickets"

[[hosts]]
instance_ids = ["{HOST}"]
gpus = 1
"""
REASON = "Threshold Crossed: 1 out of the last 1 datapoints [0.0 (06/12/26 16:59:00)] was less than the threshold (1.0)"


@pytest.fixture
def provisioned(tmp_path: Path) -> Iterator[Provisioner]:
    with mock_aws():
        provisioner = Provisioner(tmp_path)
        for queue in ("pages", "tickets"):
            provisioner.client("sqs").create_queue(QueueName=queue)
        run = provisioner.run(SPEC, "--yes")
        assert (run.code, run.errors) == (0, [])
        yield provisioner


def received(provisioner: Provisioner, queue: str) -> list[Any]:
    """Every message SNS delivered to the queue since the last call: the SNS envelope's `Message`."""
    sqs = provisioner.client("sqs")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    for message in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return [json.loads(message["Body"])["Message"] for message in messages]


def test_a_warning_alarm_reaches_only_the_warning_subscribers_once(provisioned: Provisioner) -> None:
    AlarmDelivery(provisioned.clients).enter(f"ml/host/{HOST}/cpu_high", "ALARM", "Threshold Crossed")
    tickets = received(provisioned, "tickets")
    assert [json.loads(message)["AlarmName"] for message in tickets] == [f"ml/host/{HOST}/cpu_high"]
    assert received(provisioned, "pages") == []


def test_a_critical_alarm_reaches_the_critical_subscribers_once_in_words(provisioned: Provisioner) -> None:
    name = f"ml/host/{HOST}/gpu_unhealthy@gpu0"
    AlarmDelivery(provisioned.clients).enter(name, "ALARM", REASON)
    assert received(provisioned, "pages") == [
        f"{name} is ALARM (was OK) in us-east-1 since 2026-12-06T17:00:00Z. GPU health (0: fell off the bus) of "
        f"{HOST} GPU 0 below 1 in 1 of 1 periods of 60 s (critical). Managed by infrawatch stack ml. Why: {REASON}"
    ]
    assert received(provisioned, "tickets") == []


def test_without_the_rule_critical_alarms_notify_by_their_own_action_once(tmp_path: Path) -> None:
    with mock_aws():
        provisioner = Provisioner(tmp_path)
        for queue in ("pages", "tickets"):
            provisioner.client("sqs").create_queue(QueueName=queue)
        assert provisioner.run(SPEC + "[events]\nenabled = false\n", "--yes").code == 0
        name = f"ml/host/{HOST}/heartbeat_missing"
        AlarmDelivery(provisioner.clients).enter(name, "ALARM", REASON)
        assert [json.loads(message)["AlarmName"] for message in received(provisioner, "pages")] == [name]
        assert received(provisioner, "tickets") == []
