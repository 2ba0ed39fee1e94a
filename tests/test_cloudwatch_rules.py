"""The PutMetricData contract module: every limit at its edge and one past it, and agreement with the strict
double (tests/fakes/cloudwatch.py), which is written independently from the same documentation."""

from __future__ import annotations

import datetime as dt
import math

import botocore.exceptions
import botocore.session
import pytest

from agent import cloudwatch_rules as rules
from tests.fakes.cloudwatch import client_error, refusal

EDGE_VALUES = [
    0.0, -0.0, 8.515920e-109, -8.515920e-109, 1.174271e108, -1.174271e108, 1.0, -1e-108,
    math.nextafter(8.515920e-109, 0), math.nextafter(1.174271e108, math.inf), 2.0**-360, 2.0**360,
    1e-200, -1e-200, 1e300, math.nan, math.inf, -math.inf, 5e-324,
]


@pytest.mark.parametrize("value", EDGE_VALUES)
def test_the_value_rule_and_the_strict_double_agree(value: float) -> None:
    request = {"Namespace": "InfraWatch",
               "MetricData": [{"MetricName": "X", "Values": [value], "Counts": [1.0], "Unit": "None"}]}
    assert rules.publishable(value) == (refusal(request) is None)


def test_the_value_bounds_exactly() -> None:
    # The documented base-10 pair, a factor 2 inside 2^±360: accepted under either reading of the docs.
    assert (rules.MIN_ABS_VALUE, rules.MAX_ABS_VALUE) == (8.515920e-109, 1.174271e108)
    assert 2.0**-360 < rules.MIN_ABS_VALUE < 2.0**-359 * 1.0001 and 2.0**359 * 0.9999 < rules.MAX_ABS_VALUE < 2.0**360
    assert [rules.publishable(v) for v in (0.0, -0.0, 8.515920e-109, -1.174271e108)] == [True] * 4
    assert [rules.publishable(v) for v in (1e-200, 2.0**360, math.nan, math.inf, -math.inf)] == [False] * 5
    assert not rules.publishable(math.nextafter(rules.MIN_ABS_VALUE, 0))
    assert not rules.publishable(math.nextafter(rules.MAX_ABS_VALUE, math.inf))


TEXT_CASES = [
    ("Team", "vision"), ("T" * 255, "v" * 1024), ("T" * 256, "v"), ("Team", "v" * 1025), ("", "v"), ("Team", ""),
    ("Team", "   "), ("   ", "v"), ("Team", "équipe"), ("Équipe", "v"), (":Team", "v"), ("Te:am", ":v"),
    ("Team", "a\tb"), ("Team", "a\nb"), ("Team", "a\x7fb"), ("Team", " padded "),
]


@pytest.mark.parametrize(("name", "value"), TEXT_CASES)
def test_the_dimension_rules_and_the_strict_double_agree(name: str, value: str) -> None:
    request = {"Namespace": "InfraWatch", "MetricData": [
        {"MetricName": "X", "Dimensions": [{"Name": name, "Value": value}], "Values": [1.0], "Counts": [1.0]}]}
    assert (rules.dimensions_problem([(name, value)]) is None) == (refusal(request) is None)


@pytest.mark.parametrize(("name", "value"), TEXT_CASES)
def test_the_fast_series_check_agrees_with_the_detailed_one(name: str, value: str) -> None:
    for dims in (((name, value),), ((name, value), (name, value)), tuple((f"D{i}", value) for i in range(31))):
        assert (rules.series_problem("X", "None", dims) is None) == (rules.dimensions_problem(dims) is None)
    assert rules.series_problem(name, "None", ()) == (
        None if rules.metric_name_problem(name) is None else f"metric name {name!r} {rules.metric_name_problem(name)}")


NAMESPACES = ["InfraWatch", "ML/Training", "N" * 255, "N" * 256, "", ":colon", "AWS/EC2", "Infraé", "a\nb",
              "with space", "AWS", "aws/lower"]


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_the_namespace_rules_and_the_strict_double_agree(namespace: str) -> None:
    request = {"Namespace": namespace, "MetricData": [{"MetricName": "X", "Values": [1.0], "Counts": [1.0]}]}
    assert (rules.namespace_problem(namespace) is None) == (refusal(request) is None)


@pytest.mark.parametrize("name", ["X", "M" * 255, "M" * 256, "", "débit", "a\tb"])
def test_the_metric_name_rules_and_the_strict_double_agree(name: str) -> None:
    request = {"Namespace": "InfraWatch", "MetricData": [{"MetricName": name, "Values": [1.0], "Counts": [1.0]}]}
    assert (rules.metric_name_problem(name) is None) == (refusal(request) is None)


def test_dimensions_at_30_and_31_and_a_name_twice() -> None:
    thirty = [(f"D{i}", "v") for i in range(30)]
    assert rules.dimensions_problem(thirty) is None
    assert rules.dimensions_problem([*thirty, ("D30", "v")]) == "at most 30 dimensions, got 31"
    assert rules.dimensions_problem([("Team", "a"), ("Team", "b")]) == "dimension Team appears twice"


def test_units_come_from_botocores_service_model_and_agree_with_the_double() -> None:
    from tests.fakes.cloudwatch import UNITS

    model = botocore.session.get_session().get_service_model("cloudwatch")
    assert rules.standard_units() == frozenset(model.shape_for("StandardUnit").enum) == UNITS
    assert rules.unit_problem("Count/Second") is None
    assert rules.unit_problem("Requests") == "is not a CloudWatch StandardUnit"


def test_the_timestamp_window_and_the_strict_double_agree() -> None:
    now = 1_790_000_000.0
    for offset, accepted in [(-14 * 86_400, True), (-14 * 86_400 - 1, False), (7_200, True), (7_201, False)]:
        stamp = dt.datetime.fromtimestamp(now + offset, dt.timezone.utc)
        request = {"Namespace": "N", "MetricData": [{"MetricName": "X", "Timestamp": stamp, "Values": [1.0]}]}
        assert (rules.timestamp_problem(now + offset, now) is None) is accepted
        assert (refusal(request, now) is None) is accepted


def test_150_values_of_one_metric_per_request_and_one_past_it() -> None:
    def datum(count: int, dims: list[dict[str, str]]) -> dict[str, object]:
        return {"MetricName": "Latency", "Dimensions": dims, "Values": [float(v) for v in range(count)]}

    host = [{"Name": "InstanceId", "Value": "i-0abc"}]
    assert refusal({"Namespace": "N", "MetricData": [datum(100, host), datum(50, host)]}) is None
    assert refusal({"Namespace": "N", "MetricData": [datum(100, host), datum(51, host)]}) == (
        "The parameter MetricData.member.2.Values holds more than 150 values of one metric in one request.")
    other = [{"Name": "InstanceId", "Value": "i-0def"}]
    assert refusal({"Namespace": "N", "MetricData": [datum(150, host), datum(150, other)]}) is None
    assert rules.MAX_VALUES_PER_METRIC == 150


def test_1000_datums_and_one_past_it() -> None:
    data = [{"MetricName": f"X{i}", "Values": [1.0]} for i in range(1001)]
    assert refusal({"Namespace": "N", "MetricData": data[: rules.MAX_DATUMS_PER_REQUEST]}) is None
    assert refusal({"Namespace": "N", "MetricData": data}) == (
        "The collection MetricData must have 1 to 1000 members, got 1001.")


RETRYABLE = [
    client_error("Throttling", 400), client_error("InternalServiceError", 500),
    client_error("BadGateway", 502), client_error("", 503), client_error("GatewayTimeout", 504),
    client_error("InvalidParameterValue", 500), client_error("ServiceUnavailable", 503),
    botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"),
    botocore.exceptions.ConnectTimeoutError(endpoint_url="http://x"),
    botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"),
    botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"),
]
REJECTED = [
    client_error("InvalidParameterValue", 400), client_error("MissingParameter", 400),
    client_error("InvalidParameterCombination", 400), client_error("RequestEntityTooLarge", 413),
    botocore.exceptions.ParamValidationError(report="Invalid length for parameter MetricData[0].MetricName"),
    TypeError("Object of type Decimal is not serializable"),
]
NEITHER = [  # may clear by itself: kept for replay, not retried within one flush
    client_error("AccessDenied", 403), client_error("ExpiredToken", 400), client_error("LimitExceeded", 400),
    botocore.exceptions.NoCredentialsError(), botocore.exceptions.NoRegionError(),
]


@pytest.mark.parametrize("error", RETRYABLE, ids=lambda e: rules.error_code(e))
def test_retryable(error: Exception) -> None:
    assert (rules.is_retryable(error), rules.is_rejection(error) and not rules.is_retryable(error)) == (True, False)


@pytest.mark.parametrize("error", REJECTED, ids=lambda e: rules.error_code(e))
def test_rejected(error: Exception) -> None:
    assert (rules.is_retryable(error), rules.is_rejection(error)) == (False, True)


@pytest.mark.parametrize("error", NEITHER, ids=lambda e: rules.error_code(e))
def test_neither_retried_nor_rejected(error: Exception) -> None:
    assert (rules.is_retryable(error), rules.is_rejection(error)) == (False, False)


def test_the_agent_and_the_provisioner_share_one_retry_policy() -> None:
    from agent import publisher
    from provisioning import aws

    assert aws.is_retryable is rules.is_retryable
    assert publisher.is_retryable is rules.is_retryable
