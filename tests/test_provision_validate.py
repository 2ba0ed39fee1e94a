"""The pre-flight validator: every CloudWatch limit at its value and one past it."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from moto import mock_aws

from provisioning.alarms import AlarmDefinition, MetricQuery
from provisioning.aws import Caller, RateLimiter
from provisioning.dashboards import DashboardDefinition
from provisioning.validate import alarm_problems, dashboard_problems, problems, series_without_data
from tests.fakes.aws import Provisioner

TOPIC = "arn:aws:sns:us-east-1:123456789012:ml-critical"
NAME = "ml/host/i-0000000000000000a/cpu_high"

SINGLE = AlarmDefinition(
    name=NAME, description="CPU", comparison="GreaterThanThreshold", threshold=90.0, evaluation_periods=5,
    datapoints_to_alarm=3, treat_missing_data="missing", alarm_actions=(TOPIC,), namespace="InfraWatch",
    metric_name="CPUUtilization", dimensions=(("InstanceId", "i-0000000000000000a"),), statistic="Average",
    period=60,
)


def stat(query_id: str, period: int = 60) -> MetricQuery:
    return MetricQuery(id=query_id, namespace="AWS/SageMaker", metric_name="Invocations", period=period, stat="Sum",
                       return_data=False)


MATH = dataclasses.replace(
    SINGLE, namespace="", metric_name="", dimensions=(), statistic="", period=0,
    queries=(stat("invocations"), MetricQuery(id="rate", expression="invocations / 60")),
)


def with_(alarm: AlarmDefinition = SINGLE, **changes: object) -> list[str]:
    return alarm_problems(dataclasses.replace(alarm, **changes))  # type: ignore[arg-type]


def test_valid_alarms_have_no_problem() -> None:
    assert (alarm_problems(SINGLE), alarm_problems(MATH)) == ([], [])


def test_name_length() -> None:
    assert with_(name="n" * 255) == []
    assert with_(name="n" * 256) == [f'alarm "{"n" * 256}": AlarmName must be 1..255 characters, got 256']


def test_description_length() -> None:
    assert with_(description="d" * 1024) == []
    assert with_(description="d" * 1025) == [
        f'alarm "{NAME}": AlarmDescription must be at most 1024 characters, got 1025'
    ]


def test_actions_per_state() -> None:
    assert with_(ok_actions=(TOPIC,) * 5) == []
    assert with_(ok_actions=(TOPIC,) * 6) == [f'alarm "{NAME}": OKActions must have at most 5 actions, got 6']


def test_datapoints_to_alarm_at_most_evaluation_periods() -> None:
    assert with_(datapoints_to_alarm=5) == []
    assert with_(datapoints_to_alarm=6) == [
        f'alarm "{NAME}": DatapointsToAlarm must be 1..EvaluationPeriods (5), got 6'
    ]


@pytest.mark.parametrize("period", [10, 30, 60, 120, 3600])
def test_allowed_periods(period: int) -> None:
    assert with_(period=period, evaluation_periods=1, datapoints_to_alarm=1) == []


@pytest.mark.parametrize("period", [0, 20, 45, 90])
def test_periods_that_are_not_10_30_or_a_multiple_of_60(period: int) -> None:
    assert with_(period=period) == [f'alarm "{NAME}": Period must be 10, 30 or a multiple of 60, got {period}']


def test_aws_namespaces_take_no_high_resolution_period() -> None:
    assert with_(namespace="AWS/SageMaker", period=30) == [
        f'alarm "{NAME}": Period must be at least 60 for an AWS/ namespace, got 30'
    ]


def test_evaluation_range_at_most_one_day() -> None:
    assert with_(period=86_400, evaluation_periods=1, datapoints_to_alarm=1) == []
    assert with_(period=3600, evaluation_periods=25, datapoints_to_alarm=1) == [
        f'alarm "{NAME}": Period * EvaluationPeriods must be at most 86400 seconds, got 3600 * 25'
    ]


def test_dimensions() -> None:
    assert with_(dimensions=tuple((f"D{i}", "v") for i in range(30))) == []
    assert with_(dimensions=tuple((f"D{i}", "v") for i in range(31))) == [
        f'alarm "{NAME}": Dimensions must be at most 30, got 31'
    ]


def test_statistic_xor_extended_statistic() -> None:
    both = f'alarm "{NAME}": exactly one of Statistic and ExtendedStatistic must be set, got "Average" and "p99"'
    assert with_(extended_statistic="p99") == [both]
    assert with_(statistic="") == [
        f'alarm "{NAME}": exactly one of Statistic and ExtendedStatistic must be set, got "" and ""'
    ]
    assert with_(statistic="", extended_statistic="p99") == []


def test_metric_math_at_most_10_metrics() -> None:
    ten = (*(stat(f"m{i}") for i in range(9)), MetricQuery(id="total", expression="SUM(METRICS())"))
    assert with_(MATH, queries=ten) == []
    eleven = (stat("m9"), *ten)
    assert with_(MATH, queries=eleven) == [f'alarm "{NAME}": Metrics must have at most 10 entries, got 11']


def test_metric_math_exactly_one_return_data() -> None:
    assert with_(MATH, queries=(dataclasses.replace(stat("invocations"), return_data=True), MATH.queries[1])) == [
        f'alarm "{NAME}": exactly one of Metrics must have ReturnData true, got 2'
    ]
    assert with_(MATH, queries=(stat("invocations"),)) == [
        f'alarm "{NAME}": exactly one of Metrics must have ReturnData true, got 0'
    ]


def test_metric_math_ids_and_periods() -> None:
    assert with_(MATH, queries=(stat("Invocations"), MetricQuery(id="rate", expression="Invocations / 60"))) == [
        f'alarm "{NAME}": Metrics Id must match ^[a-z][A-Za-z0-9_]*$, got "Invocations"'
    ]
    mixed = (stat("a", 60), stat("b", 300), MetricQuery(id="rate", expression="a + b"))
    assert with_(MATH, queries=mixed) == [
        f'alarm "{NAME}": every metric of Metrics must have the same Period, got [60, 300]'
    ]


def test_metric_math_sets_nothing_of_a_single_metric_beside_metrics() -> None:
    assert with_(MATH, statistic="Sum") == [
        f'alarm "{NAME}": a metric math alarm must not set Namespace, MetricName, Statistic, Dimensions or Period'
    ]


def test_names_used_twice() -> None:
    assert problems([SINGLE, SINGLE], []) == [f'alarm "{NAME}": AlarmName is used by two alarms']


def dashboard(widgets: list[dict[str, object]]) -> DashboardDefinition:
    return DashboardDefinition("ml-fleet", json.dumps({"widgets": widgets}))


def metric_widget(metrics: int) -> dict[str, object]:
    return {"type": "metric", "properties": {"title": "w", "metrics": [["NS", f"M{i}"] for i in range(metrics)]}}


def test_dashboard_widget_and_metric_limits() -> None:
    assert dashboard_problems(dashboard([metric_widget(5)] * 500)) == []
    assert dashboard_problems(dashboard([metric_widget(5)] * 501)) == [
        'dashboard "ml-fleet": must have at most 500 widgets, got 501',
        'dashboard "ml-fleet": must have at most 2500 metrics, got 2505',
    ]
    assert dashboard_problems(dashboard([metric_widget(500)])) == []
    assert dashboard_problems(dashboard([metric_widget(501)])) == [
        'dashboard "ml-fleet": widget "w" must have at most 500 metrics, got 501'
    ]


def test_alarm_status_widget_limit() -> None:
    def status(count: int) -> dict[str, object]:
        return {"type": "alarm", "properties": {"title": "alarms", "alarms": ["arn"] * count}}

    assert dashboard_problems(dashboard([status(100)])) == []
    assert dashboard_problems(dashboard([status(101)])) == [
        'dashboard "ml-fleet": widget "alarms" must have 1..100 alarms, got 101'
    ]


def test_series_without_data_in_the_last_hour_are_named_per_alarm(tmp_path: Path) -> None:
    minute = datetime(2026, 12, 6, 17, 53, tzinfo=timezone.utc)
    with mock_aws():
        provisioner = Provisioner(tmp_path)
        provisioner.client("cloudwatch").put_metric_data(Namespace="InfraWatch", MetricData=[{
            "MetricName": "CPUUtilization", "Value": 12.0, "Timestamp": minute,  # the agent stamps a minute's start
            "Dimensions": [{"Name": "InstanceId", "Value": "i-0000000000000000a"}],
        }])
        caller = Caller(provisioner.clients, RateLimiter({}))
        silent = dataclasses.replace(SINGLE, name="ml/host/i-0000000000000000b/cpu_high",
                                     dimensions=(("InstanceId", "i-0000000000000000b"),))
        alarms = [SINGLE, silent, MATH]
        # Right at the minute the datapoint is stamped with, and 59 minutes later: it is in the last hour.
        for now in (minute, minute + timedelta(minutes=59, seconds=59)):
            assert series_without_data(alarms, caller, now) == [
                'alarm "ml/host/i-0000000000000000b/cpu_high": no datapoints in the last hour for InfraWatch '
                "CPUUtilization {InstanceId=i-0000000000000000b}",
                f'alarm "{NAME}": no datapoints in the last hour for AWS/SageMaker Invocations {{}}',
            ]
        assert len(series_without_data(alarms, caller, minute + timedelta(hours=1))) == 3  # an hour on: gone
