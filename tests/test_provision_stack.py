"""A full spec provisioned on moto: the exact alarms, topics, dashboards and rule it creates."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from moto import mock_aws

from tests.conftest import FAKE_AWS_ENV
from tests.fakes.aws import Provisioner, Run

ACCOUNT = "123456789012"
HOST_A, HOST_B = "i-0000000000000000a", "i-0000000000000000b"
CRITICAL = f"arn:aws:sns:us-east-1:{ACCOUNT}:ml-critical"
WARNING = f"arn:aws:sns:us-east-1:{ACCOUNT}:ml-warning"
QUEUE = f"arn:aws:sqs:us-east-1:{ACCOUNT}:alerts"
RULE = f"arn:aws:events:us-east-1:{ACCOUNT}:rule/ml-alarm-state"
AUTOMATION = f"arn:aws:ssm:us-east-1:{ACCOUNT}:automation-definition/RestartAgent:$DEFAULT"
AUTOMATION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/infrawatch-automation"
TAGS = {"managed-by": "infrawatch", "infrawatch:stack": "ml"}
RUNBOOK = "https://runbooks.example.com/ml"

FULL_SPEC = f"""
stack = "ml"
runbook_url = "{RUNBOOK}"

[notifications.critical]
ok_notifications = true

[[notifications.critical.subscriptions]]
protocol = "email"
endpoint = "oncall@example.com"

[[notifications.critical.subscriptions]]
protocol = "sqs"
endpoint = "{QUEUE}"

[[notifications.warning.subscriptions]]
protocol = "https"
endpoint = "https://hooks.example.com/infrawatch"

[events]
target_arn = "{AUTOMATION}"
role_arn = "{AUTOMATION_ROLE}"

[[hosts]]
instance_ids = ["{HOST_A}"]
gpus = 8
mounts = ["/", "/data"]

[[hosts]]
instance_ids = ["{HOST_B}"]
gpus = 8
mounts = ["/", "/data"]

[[hosts.throughput_floors]]
metric = "SamplesProcessedPerSecond"
minimum = 1000.0
unit = "samples/s"

[[endpoints]]
name = "ranker"
variants = ["AllTraffic"]
instance_type = "ml.p4d.24xlarge"

[[endpoints]]
name = "embedder"
"""

GPU_KINDS = ("gpu_memory_high", "gpu_temperature_high", "gpu_unhealthy", "gpu_xid_errors", "gpu_ecc_errors")
VARIANT_KINDS = (
    "endpoint_5xx_rate", "endpoint_4xx_rate", "endpoint_model_error_rate", "endpoint_error_rate",
    "endpoint_latency_p99", "endpoint_latency_p90", "endpoint_overhead_latency", "endpoint_cpu_high",
    "endpoint_memory_high", "endpoint_gpu_high", "endpoint_gpu_memory_high", "endpoint_disk_high",
)


def host_alarm_names(instance: str) -> set[str]:
    prefix = f"ml/host/{instance}/"
    return {
        *(prefix + key for key in ("cpu_high", "memory_high", "gpu_utilization_high", "heartbeat_missing")),
        prefix + "storage_high@/", prefix + "storage_high@/data",
        *(f"{prefix}{key}@gpu{index}" for key in GPU_KINDS for index in range(8)),
    }


EXPECTED_ALARMS = {
    *host_alarm_names(HOST_A),
    *host_alarm_names(HOST_B),
    f"ml/host/{HOST_B}/throughput_low@SamplesProcessedPerSecond",
    *(f"ml/sagemaker/ranker/AllTraffic/{key}" for key in VARIANT_KINDS),
    *(f"ml/sagemaker/embedder/primary/{key}" for key in VARIANT_KINDS),
}


def create_embedder(provisioner: Provisioner) -> None:
    """A live SageMaker endpoint whose variant and instance type the provisioner must read."""
    sagemaker = provisioner.client("sagemaker")
    sagemaker.create_model(ModelName="embedder", ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sagemaker",
                           PrimaryContainer={"Image": "embedder:1"})
    sagemaker.create_endpoint_config(EndpointConfigName="embedder-1", ProductionVariants=[{
        "VariantName": "primary", "ModelName": "embedder", "InitialInstanceCount": 2,
        "InstanceType": "ml.g4dn.12xlarge",
    }])
    sagemaker.create_endpoint(EndpointName="embedder", EndpointConfigName="embedder-1")
    provisioner.client("sqs").create_queue(QueueName="alerts")


@dataclass
class Provisioned:
    provisioner: Provisioner
    second_run: Run
    second_run_writes: Counter[str]

    def client(self, service: str) -> Any:
        return self.provisioner.client(service)


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provisioned]:
    """Provisioned once for the module (the checks only read), then run a second time with the same spec."""
    with pytest.MonkeyPatch.context() as env, mock_aws():
        for name, value in FAKE_AWS_ENV.items():
            env.setenv(name, value)
        provisioner = Provisioner(tmp_path_factory.mktemp("stack"))
        create_embedder(provisioner)
        first = provisioner.run(FULL_SPEC, "--yes")
        assert (first.code, first.errors) == (0, [])
        second = provisioner.run(FULL_SPEC, "--yes")
        yield Provisioned(provisioner, second, provisioner.recorder.writes)


def alarms(provisioner: Provisioned) -> dict[str, dict[str, Any]]:
    pages = provisioner.client("cloudwatch").get_paginator("describe_alarms").paginate()
    return {alarm["AlarmName"]: alarm for page in pages for alarm in page["MetricAlarms"]}


CONFIG_KEYS = (
    "Namespace", "MetricName", "Statistic", "ExtendedStatistic", "Dimensions", "Period", "EvaluationPeriods",
    "DatapointsToAlarm", "Threshold", "ComparisonOperator", "TreatMissingData", "EvaluateLowSampleCountPercentile",
    "AlarmActions", "OKActions", "AlarmDescription", "Metrics",
)


def config(alarm: dict[str, Any]) -> dict[str, Any]:
    """The alarm's configuration as stored, without server-set fields and empty values."""
    return {key: alarm[key] for key in CONFIG_KEYS if alarm.get(key) not in (None, [], "")}


def dims(**pairs: str) -> list[dict[str, str]]:
    return [{"Name": name, "Value": value} for name, value in sorted(pairs.items())]


def test_the_exact_alarm_set(provisioned: Provisioned) -> None:
    assert set(alarms(provisioned)) == EXPECTED_ALARMS
    assert len(EXPECTED_ALARMS) == 117


def test_a_second_run_with_the_same_spec_makes_no_write_call(provisioned: Provisioned) -> None:
    assert provisioned.second_run_writes == Counter()
    assert provisioned.second_run.code == 0
    # 117 alarms, 2 topics, 3 subscriptions, 3 dashboards, 1 rule
    assert provisioned.second_run.lines[-3] == "Plan: 0 to create, 0 to update, 0 to delete, 126 unchanged."
    assert f"= unchanged alarm ml/host/{HOST_A}/cpu_high" in provisioned.second_run.lines


def test_host_alarms_watch_the_agents_series(provisioned: Provisioned) -> None:
    found = alarms(provisioned)
    assert config(found[f"ml/host/{HOST_A}/cpu_high"]) == {
        "Namespace": "InfraWatch", "MetricName": "CPUUtilization", "Statistic": "Average",
        "Dimensions": dims(InstanceId=HOST_A), "Period": 60, "EvaluationPeriods": 5, "DatapointsToAlarm": 3,
        "Threshold": 90.0, "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "missing",
        "AlarmActions": [WARNING],
        "AlarmDescription": f"CPU utilization of {HOST_A} above 90 % in 3 of 5 periods of 60 s (warning). "
                            f"Managed by infrawatch stack ml. Runbook: {RUNBOOK}",
    }
    assert config(found[f"ml/host/{HOST_B}/gpu_unhealthy@gpu3"]) == {
        "Namespace": "InfraWatch", "MetricName": "GPUHealthy", "Statistic": "Minimum",
        "Dimensions": dims(GPU="3", InstanceId=HOST_B), "Period": 60, "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1, "Threshold": 1.0, "ComparisonOperator": "LessThanThreshold",
        "TreatMissingData": "notBreaching", "OKActions": [CRITICAL],  # ALARM: by the rule
        "AlarmDescription": f"GPU health (0: fell off the bus) of {HOST_B} GPU 3 below 1 in 1 of 1 periods of 60 s "
                            f"(critical). Managed by infrawatch stack ml. Runbook: {RUNBOOK}",
    }
    heartbeat = config(found[f"ml/host/{HOST_A}/heartbeat_missing"])
    assert {key: heartbeat[key] for key in ("MetricName", "Statistic", "Dimensions", "Threshold",
                                            "ComparisonOperator", "TreatMissingData", "DatapointsToAlarm",
                                            "EvaluationPeriods")} == {
        "MetricName": "Heartbeat", "Statistic": "Sum", "Dimensions": dims(Component="agent", InstanceId=HOST_A),
        "Threshold": 1.0, "ComparisonOperator": "LessThanThreshold", "TreatMissingData": "breaching",
        "DatapointsToAlarm": 3, "EvaluationPeriods": 3,
    }
    storage = config(found[f"ml/host/{HOST_A}/storage_high@/data"])
    assert (storage["MetricName"], storage["Statistic"], storage["Dimensions"], storage["Period"],
            storage["Threshold"]) == ("StorageUtilization", "Maximum", dims(InstanceId=HOST_A, MountPath="/data"),
                                      300, 85.0)
    throughput = config(found[f"ml/host/{HOST_B}/throughput_low@SamplesProcessedPerSecond"])
    assert (throughput["MetricName"], throughput["Dimensions"], throughput["Statistic"], throughput["Threshold"],
            throughput["ComparisonOperator"], throughput["TreatMissingData"]) == (
        "SamplesProcessedPerSecond", dims(InstanceId=HOST_B), "Average", 1000.0, "LessThanThreshold", "breaching")


def test_sagemaker_alarms_use_endpoint_and_variant_and_microseconds(provisioned: Provisioned) -> None:
    found = alarms(provisioned)
    variant = dims(EndpointName="embedder", VariantName="primary")
    assert config(found["ml/sagemaker/embedder/primary/endpoint_latency_p99"]) == {
        "Namespace": "AWS/SageMaker", "MetricName": "ModelLatency", "ExtendedStatistic": "p99",
        "Dimensions": variant, "Period": 60, "EvaluationPeriods": 5, "DatapointsToAlarm": 3,
        "Threshold": 1_000_000.0, "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
        "EvaluateLowSampleCountPercentile": "ignore", "OKActions": [CRITICAL],
        "AlarmDescription": "ModelLatency p99 of embedder/primary above 1000 ms (1e+06 µs) in 3 of 5 periods of "
                            f"60 s (critical). Managed by infrawatch stack ml. Runbook: {RUNBOOK}",
    }
    assert config(found["ml/sagemaker/ranker/AllTraffic/endpoint_4xx_rate"])["Statistic"] == "Average"
    assert config(found["ml/sagemaker/ranker/AllTraffic/endpoint_4xx_rate"])["Threshold"] == 0.05

    def summed(query_id: str, metric: str) -> dict[str, Any]:
        return {"Id": query_id, "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": "AWS/SageMaker", "MetricName": metric, "Dimensions": variant},
            "Period": 60, "Stat": "Sum"}}

    error_rate = config(found["ml/sagemaker/embedder/primary/endpoint_error_rate"])
    assert error_rate["Metrics"] == [
        summed("invocations", "Invocations"),
        summed("errors5xx", "Invocation5XXErrors"),
        summed("modelerrors", "InvocationModelErrors"),
        {"Id": "rate", "Label": "Error rate", "ReturnData": True,
         "Expression": "IF(invocations > 0, (errors5xx + modelerrors) / invocations, 0)"},
    ]
    assert (error_rate["Threshold"], "Namespace" in error_rate, "Period" in error_rate) == (0.05, False, False)


@pytest.mark.parametrize(("alarm", "expression"), [
    ("ml/sagemaker/ranker/AllTraffic/endpoint_cpu_high", "summed / 96"),  # p4d.24xlarge: 96 vCPUs
    ("ml/sagemaker/ranker/AllTraffic/endpoint_gpu_high", "summed / 8"),  # and 8 GPUs
    ("ml/sagemaker/embedder/primary/endpoint_cpu_high", "summed / 48"),  # g4dn.12xlarge: 48 vCPUs
    ("ml/sagemaker/embedder/primary/endpoint_gpu_memory_high", "summed / 4"),  # and 4 GPUs
])
def test_endpoint_host_utilization_is_normalized_per_core(provisioned: Provisioned, alarm: str,
                                                          expression: str) -> None:
    metrics = config(alarms(provisioned)[alarm])["Metrics"]
    assert [query["Id"] for query in metrics] == ["summed", "utilization"]
    assert metrics[0]["MetricStat"]["Metric"]["Namespace"] == "/aws/sagemaker/Endpoints"
    assert metrics[1]["Expression"] == expression


def test_every_alarm_is_tagged_and_notifies_its_severitys_topic(provisioned: Provisioned) -> None:
    cloudwatch = provisioned.client("cloudwatch")
    found = alarms(provisioned)
    tags = {
        name: {tag["Key"]: tag["Value"] for tag in cloudwatch.list_tags_for_resource(ResourceARN=a["AlarmArn"])["Tags"]}
        for name, a in found.items()
    }
    assert all(tag_set == TAGS for tag_set in tags.values())
    actions = {(tuple(a["AlarmActions"]), tuple(a["OKActions"])) for a in found.values()}
    assert actions == {((), (CRITICAL,)), ((WARNING,), ())}


def test_topics_policy_and_subscriptions(provisioned: Provisioned) -> None:
    sns = provisioned.client("sns")
    policy = json.loads(sns.get_topic_attributes(TopicArn=CRITICAL)["Attributes"]["Policy"])
    assert policy == {
        "Version": "2012-10-17",
        "Id": "infrawatch-ml",
        "Statement": [
            {"Sid": "CloudWatchAlarmsOfThisStack", "Effect": "Allow",
             "Principal": {"Service": "cloudwatch.amazonaws.com"}, "Action": "sns:Publish", "Resource": CRITICAL,
             "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT},
                           "ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:ml/*"}}},
            {"Sid": "EventBridgeAlarmStateRule", "Effect": "Allow",
             "Principal": {"Service": "events.amazonaws.com"}, "Action": "sns:Publish", "Resource": CRITICAL,
             "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}, "ArnEquals": {"aws:SourceArn": RULE}}},
        ],
    }
    warning_policy = json.loads(sns.get_topic_attributes(TopicArn=WARNING)["Attributes"]["Policy"])
    assert [statement["Sid"] for statement in warning_policy["Statement"]] == ["CloudWatchAlarmsOfThisStack"]

    def subscriptions(topic: str) -> list[tuple[str, str]]:
        found = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        return sorted((item["Protocol"], item["Endpoint"]) for item in found)

    assert subscriptions(CRITICAL) == [("email", "oncall@example.com"), ("sqs", QUEUE)]
    assert subscriptions(WARNING) == [("https", "https://hooks.example.com/infrawatch")]
    assert {tag["Key"]: tag["Value"] for tag in sns.list_tags_for_resource(ResourceArn=CRITICAL)["Tags"]} == TAGS


def widgets(provisioner: Provisioned, name: str) -> list[dict[str, Any]]:
    body = provisioner.client("cloudwatch").get_dashboard(DashboardName=name)["DashboardBody"]
    return list(json.loads(body)["widgets"])


def test_dashboards_and_their_widgets(provisioned: Provisioned) -> None:
    entries = provisioned.client("cloudwatch").list_dashboards()["DashboardEntries"]
    assert sorted(entry["DashboardName"] for entry in entries) == [
        "ml-us-east-1-endpoint-embedder", "ml-us-east-1-endpoint-ranker", "ml-us-east-1-fleet",
    ]
    fleet = widgets(provisioned, "ml-us-east-1-fleet")
    assert [widget.get("properties", {}).get("title") for widget in fleet] == [
        None,
        f"{HOST_A}: CPU and memory (%)", f"{HOST_A}: GPU utilization (%)", f"{HOST_A}: GPU memory utilization (%)",
        f"{HOST_A}: storage utilization (%)", f"{HOST_A}: disk and network throughput (bytes/s)",
        f"{HOST_A}: agent health", f"{HOST_A}: alarms",
        f"{HOST_B}: CPU and memory (%)", f"{HOST_B}: GPU utilization (%)", f"{HOST_B}: GPU memory utilization (%)",
        f"{HOST_B}: storage utilization (%)", f"{HOST_B}: disk and network throughput (bytes/s)",
        f"{HOST_B}: application throughput", f"{HOST_B}: agent health", f"{HOST_B}: alarms",
    ]
    marker = "`managed-by=infrawatch` `infrawatch:stack=ml` `infrawatch:region=us-east-1`"
    assert marker in fleet[0]["properties"]["markdown"]
    gpu = fleet[2]["properties"]["metrics"]
    assert gpu[0] == ["InfraWatch", "HostGPUUtilization", "InstanceId", HOST_A, {"stat": "Average"}]
    assert gpu[4] == ["InfraWatch", "GPUUtilization", "GPU", "3", "InstanceId", HOST_A, {"stat": "Average"}]
    assert len(gpu) == 9
    status = fleet[7]["properties"]["alarms"]
    assert len(status) == 46
    assert f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:ml/host/{HOST_A}/heartbeat_missing" in status

    endpoint = widgets(provisioned, "ml-us-east-1-endpoint-embedder")
    latency = endpoint[3]["properties"]["metrics"]
    assert [line[-1] for line in latency] == [
        {"stat": "p50", "label": "ModelLatency p50"}, {"stat": "p90", "label": "ModelLatency p90"},
        {"stat": "p99", "label": "ModelLatency p99"}, {"stat": "p99", "label": "OverheadLatency p99"},
    ]
    assert len(endpoint[5]["properties"]["alarms"]) == 12


def test_eventbridge_rule_pattern_and_targets(provisioned: Provisioned) -> None:
    events = provisioned.client("events")
    rule = events.describe_rule(Name="ml-alarm-state")
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.cloudwatch"],
        "detail-type": ["CloudWatch Alarm State Change"],
        # What pages and nothing else: every critical kind, for any host, GPU, mount or variant.
        "detail": {"alarmName": [{"wildcard": pattern} for pattern in (
            "ml/host/*/gpu_ecc_errors@*", "ml/host/*/gpu_unhealthy@*", "ml/host/*/gpu_xid_errors@*",
            "ml/host/*/heartbeat_missing", "ml/sagemaker/*/endpoint_5xx_rate", "ml/sagemaker/*/endpoint_error_rate",
            "ml/sagemaker/*/endpoint_latency_p99", "ml/sagemaker/*/endpoint_model_error_rate",
        )], "state": {"value": ["ALARM"]}},
    }
    assert rule["State"] == "ENABLED"
    assert events.list_targets_by_rule(Rule="ml-alarm-state")["Targets"] == [
        {"Id": "automated-response", "Arn": AUTOMATION, "RoleArn": AUTOMATION_ROLE},
        {"Id": "critical-topic", "Arn": CRITICAL, "InputTransformer": {
            "InputPathsMap": {
                "alarm": "$.detail.alarmName", "description": "$.detail.configuration.description",
                "previous": "$.detail.previousState.value", "reason": "$.detail.state.reason",
                "region": "$.region", "state": "$.detail.state.value", "time": "$.time",
            },
            "InputTemplate": '"<alarm> is <state> (was <previous>) in <region> since <time>. <description> '
                             'Why: <reason>"',
        }},
    ]
    tags = events.list_tags_for_resource(ResourceARN=RULE)["Tags"]
    assert {tag["Key"]: tag["Value"] for tag in tags} == TAGS
