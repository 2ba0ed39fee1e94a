"""The one place AWS is called: pacing per operation, retries on throttling only, pagination."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from provisioning.aws import MAX_ATTEMPTS, Caller, Clients, RateLimiter
from tests.fakes.cloudwatch import client_error
from tests.fakes.host import FakeClock


def test_a_limited_operation_is_spaced_at_its_rate_and_others_pass() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"PutMetricAlarm": 3.0}, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        limiter.wait("PutMetricAlarm")
    limiter.wait("DescribeAlarms")
    assert clock.sleeps == pytest.approx([1 / 3, 1 / 3, 1 / 3])


def test_time_already_spent_between_calls_is_not_slept_again() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"PutMetricAlarm": 3.0}, clock=clock, sleep=clock.sleep)
    limiter.wait("PutMetricAlarm")
    clock.advance(0.25)
    limiter.wait("PutMetricAlarm")
    clock.advance(1.0)
    limiter.wait("PutMetricAlarm")
    assert clock.sleeps == pytest.approx([1 / 3 - 0.25])


class FlakyCloudWatch:
    """Fails the first calls with the given errors, then answers; records every call's parameters."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls: list[dict[str, Any]] = []

    def put_metric_alarm(self, **params: Any) -> dict[str, Any]:
        self.calls.append(params)
        if self.errors:
            raise self.errors.pop(0)
        return {"ok": True}

    def list_metrics(self, **params: Any) -> dict[str, Any]:
        self.calls.append(params)
        token = params.get("NextToken")
        pages = {None: {"Metrics": [1], "NextToken": "p2"}, "p2": {"Metrics": [2], "NextToken": "p3"},
                 "p3": {"Metrics": [3]}}
        return pages[token]


class FakeClients:
    def __init__(self, cloudwatch: FlakyCloudWatch) -> None:
        self.cloudwatch = cloudwatch

    def __getitem__(self, service: str) -> Any:
        assert service == "cloudwatch"
        return self.cloudwatch


def caller(cloudwatch: FlakyCloudWatch, clock: FakeClock) -> Caller:
    limiter = RateLimiter({}, clock=clock, sleep=clock.sleep)
    return Caller(FakeClients(cloudwatch), limiter, sleep=clock.sleep)  # type: ignore[arg-type]


def test_throttling_is_retried_with_growing_jittered_waits() -> None:
    clock = FakeClock()
    cloudwatch = FlakyCloudWatch(*(client_error("Throttling", 400) for _ in range(3)))
    assert caller(cloudwatch, clock)("cloudwatch", "PutMetricAlarm", AlarmName="a") == {"ok": True}
    assert len(cloudwatch.calls) == 4
    assert len(clock.sleeps) == 3
    assert all(0 <= wait <= 0.5 * 2 ** attempt for attempt, wait in enumerate(clock.sleeps, start=1))


def test_a_refusal_is_not_retried() -> None:
    clock = FakeClock()
    cloudwatch = FlakyCloudWatch(client_error("InvalidParameterValue", 400))
    with pytest.raises(ClientError):
        caller(cloudwatch, clock)("cloudwatch", "PutMetricAlarm", AlarmName="a")
    assert (len(cloudwatch.calls), clock.sleeps) == (1, [])


def test_throttling_that_never_ends_gives_up_after_the_last_attempt() -> None:
    clock = FakeClock()
    cloudwatch = FlakyCloudWatch(*(client_error("Throttling", 400) for _ in range(MAX_ATTEMPTS)))
    with pytest.raises(ClientError):
        caller(cloudwatch, clock)("cloudwatch", "PutMetricAlarm", AlarmName="a")
    assert len(cloudwatch.calls) == MAX_ATTEMPTS
    assert len(clock.sleeps) == MAX_ATTEMPTS - 1


def test_pages_follows_next_token_to_the_end() -> None:
    cloudwatch = FlakyCloudWatch()
    pages = list(caller(cloudwatch, FakeClock()).pages("cloudwatch", "ListMetrics", Namespace="InfraWatch"))
    assert [page["Metrics"] for page in pages] == [[1], [2], [3]]
    assert cloudwatch.calls == [{"Namespace": "InfraWatch"}, {"Namespace": "InfraWatch", "NextToken": "p2"},
                                {"Namespace": "InfraWatch", "NextToken": "p3"}]


def test_clients_take_the_region_from_aws_region_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert Clients()["cloudwatch"].meta.region_name == "eu-central-1"
