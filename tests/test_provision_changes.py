"""Idempotence and change: reruns, edits, drift, pruning, conflicts, dry runs and refusals, counted in API calls."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from tests.fakes.aws import Provisioner

HOST = "i-0000000000000000a"
FLOOR_ALARM = f"ml/host/{HOST}/throughput_low@SamplesProcessedPerSecond"
SCORER = "ml/sagemaker/scorer/AllTraffic/"

SPEC = f"""
stack = "ml"
tags = {{ team = "ml-platform" }}

[[notifications.critical.subscriptions]]
protocol = "email"
endpoint = "oncall@example.com"

[[hosts]]
instance_ids = ["{HOST}"]
gpus = 1

[[hosts.throughput_floors]]
metric = "SamplesProcessedPerSecond"
minimum = 1000.0

[[endpoints]]
name = "ranker"
variants = ["AllTraffic"]
instance_type = "ml.g5.2xlarge"
"""
SCORER_ENTRY = """
[[endpoints]]
name = "scorer"
variants = ["AllTraffic"]
instance_type = "ml.c5.xlarge"
"""

# 1 host with 1 GPU: cpu, memory, storage@/, GPU utilization, heartbeat, 5 per-GPU and 1 throughput alarm;
# ranker (a GPU instance) 12; scorer (no GPU) 10.
HOST_ALARMS = 11
RANKER_ALARMS = 12
SCORER_ALARMS = 10


@pytest.fixture
def provisioner(tmp_path: Path) -> Iterator[Provisioner]:
    with mock_aws():
        yield Provisioner(tmp_path)


def alarm_names(provisioner: Provisioner) -> set[str]:
    pages = provisioner.client("cloudwatch").get_paginator("describe_alarms").paginate()
    return {alarm["AlarmName"] for page in pages for alarm in page["MetricAlarms"]}


def alarm(provisioner: Provisioner, name: str) -> dict[str, Any]:
    found: dict[str, Any] = provisioner.client("cloudwatch").describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    return found


def tags(provisioner: Provisioner, name: str) -> dict[str, str]:
    cloudwatch = provisioner.client("cloudwatch")
    listed = cloudwatch.list_tags_for_resource(ResourceARN=alarm(provisioner, name)["AlarmArn"])["Tags"]
    return {tag["Key"]: tag["Value"] for tag in listed}


def test_dry_run_prints_the_plan_and_makes_no_write_call(provisioner: Provisioner) -> None:
    run = provisioner.run(SPEC + SCORER_ENTRY, "--dry-run")
    assert (run.code, run.errors) == (0, [])
    # No agent or endpoint has published yet: every alarm's series is without data, one warning per alarm.
    assert len(run.warnings) == HOST_ALARMS + RANKER_ALARMS + SCORER_ALARMS
    assert run.warnings[0] == (f'warning: alarm "ml/host/{HOST}/cpu_high": no datapoints in the last hour for '
                               f"InfraWatch CPUUtilization {{InstanceId={HOST}}}")
    assert provisioner.recorder.writes == Counter()
    assert run.lines[:3] == ["+ create topic ml-critical", "+ create subscription ml-critical email:oncall@example.com",
                             "+ create topic ml-warning"]
    assert f"+ create alarm ml/host/{HOST}/gpu_unhealthy@gpu0" in run.lines
    assert run.lines[-3] == "Plan: 40 to create, 0 to update, 0 to delete, 0 unchanged."
    assert alarm_names(provisioner) == set()
    assert provisioner.client("sns").list_topics()["Topics"] == []


def test_without_yes_the_plan_is_applied_only_when_confirmed(provisioner: Provisioner) -> None:
    questions: list[str] = []

    def decline(question: str) -> bool:
        questions.append(question)
        return False

    declined = provisioner.run(SPEC, confirm=decline)
    assert (declined.code, declined.lines[-1], questions) == (0, "Nothing applied.", ["Apply 32 writes?"])
    assert provisioner.recorder.writes == Counter()
    not_a_terminal = provisioner.run(SPEC)  # pytest's stdin is not a terminal
    assert (not_a_terminal.code, not_a_terminal.errors) == (
        2, ["stdin is not a terminal: pass --yes to apply the plan"])
    assert provisioner.recorder.writes == Counter()
    accepted = provisioner.run(SPEC, confirm=lambda question: True)
    assert (accepted.code, accepted.lines[-1]) == (0, "Applied 29 changes; 0 failed.")


def test_first_run_writes_and_second_run_writes_nothing(provisioner: Provisioner) -> None:
    first = provisioner.run(SPEC + SCORER_ENTRY, "--yes")
    assert first.code == 0
    assert provisioner.recorder.writes == Counter({
        "PutMetricAlarm": HOST_ALARMS + RANKER_ALARMS + SCORER_ALARMS,
        "CreateTopic": 2, "SetTopicAttributes": 2, "Subscribe": 1, "PutDashboard": 3, "PutRule": 1, "PutTargets": 1,
    })
    assert first.lines[-1] == "Applied 40 changes; 0 failed."
    second = provisioner.run(SPEC + SCORER_ENTRY, "--yes")
    assert second.code == 0
    assert provisioner.recorder.writes == Counter()
    assert second.lines[-3] == "Plan: 0 to create, 0 to update, 0 to delete, 40 unchanged."


def test_a_changed_threshold_is_exactly_one_put_metric_alarm(provisioner: Provisioner) -> None:
    provisioner.run(SPEC, "--yes")
    run = provisioner.run(SPEC.replace("minimum = 1000.0", "minimum = 500.0"), "--yes")
    assert run.code == 0
    assert provisioner.recorder.writes == Counter({"PutMetricAlarm": 1})
    assert f"~ update alarm {FLOOR_ALARM} (AlarmDescription; Threshold 1000.0 -> 500.0)" in run.lines
    assert alarm(provisioner, FLOOR_ALARM)["Threshold"] == 500.0
    assert tags(provisioner, FLOOR_ALARM) == {
        "managed-by": "infrawatch", "infrawatch:stack": "ml", "team": "ml-platform",
    }


def test_prune_deletes_the_removed_endpoints_alarms_and_dashboard_only(provisioner: Provisioner) -> None:
    provisioner.run(SPEC + SCORER_ENTRY, "--yes")
    provisioner.client("cloudwatch").put_metric_alarm(  # someone's own alarm under the same prefix, untagged
        AlarmName=SCORER + "by-hand", Namespace="AWS/SageMaker", MetricName="Invocations", Statistic="Sum",
        Period=60, EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="LessThanThreshold",
    )
    kept = provisioner.run(SPEC, "--yes")
    assert kept.code == 0
    assert provisioner.recorder.writes == Counter()
    assert f"! keep alarm {SCORER}endpoint_cpu_high (no longer in the spec; --prune deletes it)" in kept.lines

    refused = provisioner.run(SPEC, "--yes", "--prune")  # the scorer's 10 of the stack's 33 alarms: 30 %
    assert (refused.code, provisioner.recorder.writes) == (1, Counter())
    assert refused.lines[-4:] == [
        "Plan: 0 to create, 0 to update, 11 to delete, 29 unchanged.",
        "Apply: 11 writes, about 3 s at 3 alarm writes per second.",
        "Cost of the stack: 23 alarms over 25 metrics and 2 dashboards, about $8.50/month (us-east-1 list prices, "
        "2026-12; an account's first 3 dashboards and 10 alarm metrics are free).",
        "Refused: the plan deletes 10 of this stack's 33 alarms, more than 20 %; pass --allow-mass-delete if that "
        "is intended.",
    ]
    pruned = provisioner.run(SPEC, "--yes", "--prune", "--allow-mass-delete")
    assert pruned.code == 0
    assert provisioner.recorder.writes == Counter({"DeleteAlarms": 1, "DeleteDashboards": 1})
    assert f"- delete alarm {SCORER}endpoint_5xx_rate" in pruned.lines
    assert "- delete dashboard ml-us-east-1-endpoint-scorer" in pruned.lines
    remaining = alarm_names(provisioner)
    assert {name for name in remaining if name.startswith(SCORER)} == {SCORER + "by-hand"}
    assert len(remaining) == HOST_ALARMS + RANKER_ALARMS + 1
    dashboards = provisioner.client("cloudwatch").list_dashboards()["DashboardEntries"]
    assert sorted(entry["DashboardName"] for entry in dashboards) == [
        "ml-us-east-1-endpoint-ranker", "ml-us-east-1-fleet",
    ]


def test_hand_edits_are_reverted_and_tags_read_and_reconciled_only_on_rewritten_alarms(
    provisioner: Provisioner,
) -> None:
    provisioner.run(SPEC, "--yes")
    cloudwatch = provisioner.client("cloudwatch")
    cpu, memory_name = f"ml/host/{HOST}/cpu_high", f"ml/host/{HOST}/memory_high"
    memory = alarm(provisioner, memory_name)
    for name in (cpu, memory_name):
        arn = alarm(provisioner, name)["AlarmArn"]
        cloudwatch.untag_resource(ResourceARN=arn, TagKeys=["team"])
        # A tag someone else set (AWS Config, a tag policy, cost tooling) is theirs: it survives every rerun.
        cloudwatch.tag_resource(ResourceARN=arn, Tags=[{"Key": "cost-center", "Value": "4711"}])
    cloudwatch.put_metric_alarm(
        AlarmName=memory["AlarmName"], Namespace="InfraWatch", MetricName="MemoryUtilization", Statistic="Average",
        Dimensions=memory["Dimensions"], Period=60, EvaluationPeriods=5, DatapointsToAlarm=3, Threshold=99.0,
        ComparisonOperator="GreaterThanThreshold", AlarmActions=memory["AlarmActions"],
        AlarmDescription=memory["AlarmDescription"], TreatMissingData="missing",
    )
    run = provisioner.run(SPEC, "--yes")
    assert run.code == 0
    # Ownership is read from the markers (descriptions, policy Ids): only the rewritten alarm's tags are read,
    # and its own reconciled; the unchanged topics and rule are not asked for theirs (086c3d7 read them: 1 + 2 + 1).
    assert provisioner.recorder.calls.count("ListTagsForResource") == 1
    assert provisioner.recorder.writes == Counter({"TagResource": 1, "PutMetricAlarm": 1})
    assert f"~ update alarm {memory_name} (Threshold 99.0 -> 90.0; Tags)" in run.lines
    assert f"= unchanged alarm {cpu}" in run.lines
    own = {"managed-by": "infrawatch", "infrawatch:stack": "ml"}
    assert tags(provisioner, memory_name) == {**own, "team": "ml-platform", "cost-center": "4711"}
    assert tags(provisioner, cpu) == {**own, "cost-center": "4711"}  # not rewritten, so not read
    rerun = provisioner.run(SPEC, "--yes")
    assert (rerun.code, provisioner.recorder.writes) == (0, Counter())
    assert tags(provisioner, memory_name)["cost-center"] == "4711"


def test_a_resource_with_this_stacks_name_but_not_its_tags_is_left_alone(provisioner: Provisioner) -> None:
    cpu = f"ml/host/{HOST}/cpu_high"
    provisioner.client("cloudwatch").put_metric_alarm(
        AlarmName=cpu, Namespace="Custom", MetricName="Load", Statistic="Average", Period=60,
        EvaluationPeriods=1, Threshold=5.0, ComparisonOperator="GreaterThanThreshold",
    )
    run = provisioner.run(SPEC, "--yes")
    assert run.code == 1
    assert f"! conflict alarm {cpu} (exists without this stack's marker; left alone)" in run.lines
    assert run.lines[-1] == "1 resources with this stack's names are not this stack's and were left alone."
    assert alarm(provisioner, cpu)["Namespace"] == "Custom"
    assert len(alarm_names(provisioner)) == HOST_ALARMS + RANKER_ALARMS


def refuse(operation: str, code: str, times: int | None = None) -> Any:
    """A botocore `before-call` handler that answers `operation` with an AWS error instead of sending it."""
    remaining = [times]

    class Response:
        status_code = 400

    def handler(model: Any, **_: Any) -> Any:
        if model.name != operation or remaining[0] == 0:
            return None
        if remaining[0] is not None:
            remaining[0] -= 1
        return Response(), {"Error": {"Code": code, "Message": f"{code} from the test"},
                            "ResponseMetadata": {"HTTPStatusCode": 400}}

    return handler


def test_a_refused_write_exits_1_and_reports_what_was_applied(provisioner: Provisioner) -> None:
    provisioner.session.events.register("before-call", refuse("PutDashboard", "InvalidParameterInput"))
    run = provisioner.run(SPEC, "--yes")
    assert run.code == 1
    failures = [line for line in run.lines if line.startswith("failed")]
    assert failures == [
        f"failed + create dashboard {name}: InvalidParameterInput: An error occurred (InvalidParameterInput) when "
        "calling the PutDashboard operation: InvalidParameterInput from the test"
        for name in ("ml-us-east-1-fleet", "ml-us-east-1-endpoint-ranker")
    ]
    assert f"applied + create alarm ml/host/{HOST}/cpu_high" in run.lines
    assert run.lines[-1] == "Applied 27 changes; 2 failed."
    assert len(alarm_names(provisioner)) == HOST_ALARMS + RANKER_ALARMS


def test_throttling_is_retried_with_backoff_until_it_passes(provisioner: Provisioner) -> None:
    provisioner.session.events.register("before-call", refuse("PutMetricAlarm", "Throttling", times=3))
    run = provisioner.run(SPEC, "--yes")
    assert run.code == 0
    assert provisioner.recorder.calls.count("PutMetricAlarm") == HOST_ALARMS + RANKER_ALARMS + 3
    assert len(alarm_names(provisioner)) == HOST_ALARMS + RANKER_ALARMS
    logged = [json.loads(line) for line in run.errors]
    assert [(entry["event"], entry["operation"], entry["error_code"]) for entry in logged] == [
        ("aws_call_retried", "PutMetricAlarm", "Throttling"),  # logged once, not once per retry
    ]


def test_alarm_writes_are_paced_to_the_configured_rate(provisioner: Provisioner) -> None:
    run = provisioner.run(SPEC, "--yes", "--alarm-writes-per-second", "2")
    assert run.code == 0
    alarms = HOST_ALARMS + RANKER_ALARMS
    # The fake clock moves only when the limiter sleeps: 23 writes at 2/s take 11 s; the 2 dashboards' GetDashboard
    # and PutDashboard calls, at 10/s each, one gap of 0.1 s each.
    assert sum(provisioner.clock.sleeps) == pytest.approx((alarms - 1) / 2 + 0.1 + 0.1)


def test_a_rerun_with_no_change_reads_pages_and_one_call_per_resource_only(provisioner: Provisioner) -> None:
    assert provisioner.run(SPEC + SCORER_ENTRY, "--yes").code == 0
    rerun = provisioner.run(SPEC + SCORER_ENTRY, "--yes")
    assert (rerun.code, rerun.warnings) == (0, [])  # nothing written, so no "no datapoints" check (GetMetricData)
    # 33 alarms: 1 page; 2 topics, 3 dashboards, 1 rule (and its targets); the critical topic's subscriptions,
    # which the spec names. The account comes from the alarms' ARNs (no GetCallerIdentity), the instance types'
    # vCPUs and GPUs from the per-core alarms' labels (no DescribeInstanceTypes), ownership from the markers (no
    # ListTagsForResource), the dashboards by name (no ListDashboards).
    assert Counter(provisioner.recorder.calls) == Counter({
        "DescribeAlarms": 1, "GetTopicAttributes": 2, "ListSubscriptionsByTopic": 1, "GetDashboard": 3,
        "DescribeRule": 1, "ListTargetsByRule": 1,
    })
    changed = provisioner.run(SPEC.replace("minimum = 1000.0", "minimum = 500.0") + SCORER_ENTRY, "--yes")
    assert changed.warnings == [  # the rewritten alarm alone is checked for data
        f'warning: alarm "{FLOOR_ALARM}": no datapoints in the last hour for InfraWatch SamplesProcessedPerSecond '
        f"{{InstanceId={HOST}}}"]
    assert provisioner.recorder.calls.count("GetMetricData") == 1
    assert provisioner.recorder.calls.count("ListTagsForResource") == 1


def test_a_hand_edited_topic_policy_and_a_removed_rule_target_are_restored(provisioner: Provisioner) -> None:
    provisioner.run(SPEC, "--yes")
    sns, events = provisioner.client("sns"), provisioner.client("events")
    topic = next(item["TopicArn"] for item in sns.list_topics()["Topics"] if item["TopicArn"].endswith(":ml-warning"))
    # The policy Id is the topic's marker: without it, the tags tell whose it is, and are reconciled with it.
    sns.set_topic_attributes(TopicArn=topic, AttributeName="Policy", AttributeValue=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sns:Publish",
                                                "Resource": topic}]}))
    sns.untag_resource(ResourceArn=topic, TagKeys=["team"])
    events.remove_targets(Rule="ml-alarm-state", Ids=["critical-topic"])
    provisioner.recorder.clear()
    run = provisioner.run(SPEC, "--yes")
    assert run.code == 0
    assert "~ update topic ml-warning (Policy; Tags)" in run.lines
    assert "~ update rule ml-alarm-state (Targets)" in run.lines
    assert provisioner.recorder.writes == Counter({"SetTopicAttributes": 1, "TagResource": 1, "PutTargets": 1})
    assert provisioner.recorder.calls.count("ListTagsForResource") == 2  # that topic (no marker), then the rule
    rerun = provisioner.run(SPEC, "--yes")
    assert (rerun.code, provisioner.recorder.writes) == (0, Counter())


def test_a_topic_of_this_name_without_the_marker_or_the_tags_is_left_alone(provisioner: Provisioner) -> None:
    provisioner.client("sns").create_topic(Name="ml-warning")  # someone else's: SNS's default policy, no tags
    run = provisioner.run(SPEC, "--yes")
    assert run.code == 1
    assert "! conflict topic ml-warning (exists without this stack's tags; left alone)" in run.lines
