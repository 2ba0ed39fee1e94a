"""The example spec through the real `provision-alarms` entry point, over HTTP to a moto server."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import boto3
import pytest

from provisioning.aws import Clients
from provisioning.cli import main
from tests.fakes.aws import CallRecorder

EXAMPLE = Path(__file__).resolve().parent.parent / "provisioning" / "examples" / "alarms.toml"
# 2 hosts × (7 + 5 per GPU × 8 + 1 throughput floor + 2 status checks), 12 for the endpoint variant,
# 10 for the training fleet (every host kind the example enables, gpu_idle included, but the heartbeat)
ALARMS = 112 + 10
RESOURCES = ALARMS + 2 + 3 + 2 + 1 + 4  # topics, subscriptions, dashboards, rule; document, 2 roles, rule
COMPOSITES = 2  # the fleet's paging alarms: a moto server answers PutCompositeAlarm with HTTP 500


def test_the_example_spec_provisions_over_http_and_a_rerun_writes_nothing(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="infrawatch-demo-alerts")["QueueUrl"]

    assert main(["--config", str(EXAMPLE), "--yes", "--alarm-writes-per-second", "1000"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"Applied {RESOURCES} changes; 0 failed.",
        f"{COMPOSITES} composite alarms not created: the endpoint does not implement PutCompositeAlarm, so their "
        "fleets' alarms notify nothing here.",
    ]
    cloudwatch = boto3.client("cloudwatch")
    names = [a["AlarmName"] for page in cloudwatch.get_paginator("describe_alarms").paginate()
             for a in page["MetricAlarms"]]
    assert len(names) == ALARMS
    assert "ml-platform/host/i-0a1b2c3d4e5f60001/gpu_idle" in names

    session = boto3.Session()
    recorder = CallRecorder(session)
    out = io.StringIO()
    assert main(["--config", str(EXAMPLE), "--yes"], clients=Clients(session), out=out) == 0
    assert recorder.writes == Counter({"PutCompositeAlarm": COMPOSITES})  # tried again: moto never stored them
    plan = next(line for line in out.getvalue().splitlines() if line.startswith("Plan: "))
    assert plan == f"Plan: {COMPOSITES} to create, 0 to update, 0 to delete, {RESOURCES} unchanged."

    assert main(["--config", str(EXAMPLE), "--test-notification"]) == 0
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(message["Body"])["Subject"] for message in received] == [
        "infrawatch test notification (ml-platform, critical)"
    ]
