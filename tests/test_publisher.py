"""Batching to CloudWatch's limits, the retry policy, and what happens to datums that cannot go."""

from __future__ import annotations

from collections.abc import Sequence

import botocore.exceptions
import pytest
from structlog.testing import capture_logs

from agent.aggregate import Datum
from agent.cloudwatch_rules import MAX_REQUEST_BYTES
from agent.publisher import REQUEST_BYTES_BUDGET, Publisher, RequestSizer, pack
from agent.selfstats import AgentStats
from tests.fakes.cloudwatch import RecordingClient, client_error, fail_first
from tests.fakes.host import FakeClock

T0 = 1_790_000_040.0
SIZER = RequestSizer()


def series(count: int, dimension_value: str = "i-0123456789abcdef0") -> list[Datum]:
    return [Datum(f"Metric{i}", (("InstanceId", dimension_value),), T0, "Percent", (1.0, 2.0), (2.0, 1.0))
            for i in range(count)]


def publisher(client: RecordingClient, clock: FakeClock | None = None, **kwargs: object) -> Publisher:
    clock = clock or FakeClock()
    return Publisher(client, "InfraWatch", stats=kwargs.pop("stats", AgentStats()), sizer=SIZER,  # type: ignore[arg-type]
                     sleep=clock.sleep, monotonic=clock, **kwargs)  # type: ignore[arg-type]


def names(requests: Sequence[dict[str, object]]) -> list[str]:
    return [d["MetricName"] for r in requests for d in r["MetricData"]]  # type: ignore[attr-defined, index]


def test_2500_series_go_in_exactly_3_requests() -> None:
    client = RecordingClient()
    stats = AgentStats()
    assert publisher(client, stats=stats).publish(series(2500)) == 3
    assert [len(r["MetricData"]) for r in client.calls] == [1000, 1000, 500]
    assert stats.published == 2500 * 3
    assert stats.requests == 3


def test_the_1000_datum_limit_and_one_past_it() -> None:
    measure = lambda data: SIZER.body_bytes("InfraWatch", data)  # noqa: E731
    assert [len(b) for b in pack(series(1000), measure)] == [1000]
    assert [len(b) for b in pack(series(1001), measure)] == [1000, 1]


def test_1000_datums_with_long_dimension_values_stay_under_1_mb() -> None:
    client = RecordingClient()
    datums = series(1000, dimension_value="/mnt/" + "d" * 1019)  # 1,024-character values, CloudWatch's maximum
    publisher(client).publish(datums)
    sizes = [SIZER.body_bytes("InfraWatch", request["MetricData"]) for request in client.calls]
    assert sum(sizes) > MAX_REQUEST_BYTES  # one request could not have held them
    assert len(client.calls) == 2
    assert all(size <= REQUEST_BYTES_BUDGET for size in sizes)
    assert sorted(names(client.calls)) == sorted(f"Metric{i}" for i in range(1000))


def test_http_413_splits_the_batch_and_every_datum_arrives_once() -> None:
    too_large = client_error("RequestEntityTooLarge", 413)
    client = RecordingClient(fail=lambda n, request: too_large if len(request["MetricData"]) > 300 else None)
    stats = AgentStats()
    assert publisher(client, stats=stats).publish(series(1000)) == 4
    assert [len(r["MetricData"]) for r in client.accepted] == [250, 250, 250, 250]
    assert sorted(names(client.accepted)) == sorted(f"Metric{i}" for i in range(1000))
    assert stats.dropped == {}


def test_throttled_twice_then_delivered_once_after_two_recorded_sleeps() -> None:
    clock = FakeClock()
    client = RecordingClient(fail=fail_first(2, client_error("Throttling", 400, "Rate exceeded")))
    stats = AgentStats()
    assert publisher(client, clock, stats=stats, retry_deadline=30.0).publish(series(3)) == 1
    assert len(client.calls) == 3
    assert len(client.accepted) == 1
    assert len(clock.sleeps) == 2
    assert all(0 <= s <= 8.0 for s in clock.sleeps)
    assert stats.publish_errors == {"Throttling": 2}
    assert stats.published == 9


def test_invalid_parameter_removes_only_the_named_datum_and_resends_the_rest() -> None:
    message = "The value NaN for parameter MetricData.member.2.Value is invalid."
    client = RecordingClient(fail=fail_first(1, client_error("InvalidParameterValue", 400, message)))
    stats = AgentStats()
    clock = FakeClock()
    with capture_logs() as logs:
        assert publisher(client, clock, stats=stats).publish(series(3)) == 1
    assert len(client.calls) == 2
    assert clock.sleeps == []
    assert names(client.accepted) == ["Metric0", "Metric2"]
    assert stats.dropped == {"rejected": 3}
    assert stats.published == 6
    assert stats.publish_errors == {"InvalidParameterValue": 1}
    rejected = [entry for entry in logs if entry["event"] == "publish_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["offending"] == [{"index": 1, "metric": "Metric1",
                                         "dimensions": {"InstanceId": "i-0123456789abcdef0"}, "values": [1.0, 2.0]}]


def bad(name: str, value: float) -> Datum:
    return Datum(name, (("InstanceId", "i-0123456789abcdef0"),), T0, "Percent", (value,), (1.0,))


def test_the_strict_double_refuses_a_tiny_value_and_only_that_datum_is_lost() -> None:
    # On 086c3d7 the whole request (Heartbeat included) was dropped for one 1e-200 gauge.
    client = RecordingClient()
    stats = AgentStats()
    datums = [*series(998), bad("loss", 1e-200), bad("Heartbeat", 1.0)]
    assert publisher(client, stats=stats).publish(datums) == 1
    assert client.refused == ["The value for parameter MetricData.member.999.Values.member.1 is invalid."]
    assert len(client.accepted_datums) == 999
    assert "Heartbeat" in names(client.accepted) and "loss" not in names(client.accepted)
    assert stats.dropped == {"rejected": 1}
    assert stats.published == 998 * 3 + 1


def test_a_refusal_that_names_no_datum_is_bisected_down_to_the_bad_one() -> None:
    refuse = client_error("InvalidParameterValue", 400, "One or more parameters are invalid.")
    client = RecordingClient(fail=lambda n, request: refuse if any(
        d["MetricName"] == "Metric5" for d in request["MetricData"]) else None)
    stats = AgentStats()
    assert publisher(client, stats=stats).publish(series(8)) == 3  # halves of 4, 2 and 1 datums got through
    assert [len(r["MetricData"]) for r in client.calls] == [8, 4, 4, 2, 1, 1, 2]
    assert sorted(names(client.accepted)) == [f"Metric{i}" for i in range(8) if i != 5]
    assert stats.dropped == {"rejected": 3}


def test_a_refusal_of_the_namespace_drops_the_request_once_instead_of_bisecting_it() -> None:
    refuse = client_error("InvalidParameterValue", 400, "The value AWS/x for parameter Namespace is invalid.")
    client = RecordingClient(fail=lambda n, request: refuse)
    stats = AgentStats()
    assert publisher(client, stats=stats).publish(series(8)) == 0
    assert (len(client.calls), stats.dropped) == (1, {"rejected": 24})


def test_a_request_botocore_refuses_to_build_is_rejected_never_handed_to_the_spool() -> None:
    # On 086c3d7 ParamValidationError went to the spool, and replay failed on the same rows forever.
    invalid = botocore.exceptions.ParamValidationError(
        report="Invalid length for parameter MetricData[0].MetricName, value: 0, valid min length: 1")
    client = RecordingClient(fail=fail_first(1, invalid))
    handed: list[int] = []
    stats = AgentStats()
    pub = publisher(client, stats=stats, on_undeliverable=lambda datums, reason: handed.append(len(datums)))
    assert pub.publish(series(2)) == 1
    assert handed == []
    assert names(client.accepted) == ["Metric1"]
    assert stats.dropped == {"rejected": 3}
    assert stats.publish_errors == {"ParamValidationError": 1}


def test_endpoint_down_past_the_deadline_hands_the_batch_to_the_spool_seam() -> None:
    clock = FakeClock()
    down = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    client = RecordingClient(fail=lambda n, r: down)
    handed: list[tuple[int, str]] = []
    stats = AgentStats()
    pub = publisher(client, clock, stats=stats, retry_deadline=20.0,
                    on_undeliverable=lambda datums, reason: handed.append((len(datums), reason)))
    assert pub.publish(series(5)) == 0
    assert handed == [(5, "EndpointConnectionError")]
    assert sum(clock.sleeps) < 20.0
    assert len(client.calls) == len(clock.sleeps) + 1
    assert stats.publish_errors["EndpointConnectionError"] == len(client.calls)
    assert stats.published == 0


def test_without_a_spool_undeliverable_datapoints_are_counted_as_dropped() -> None:
    client = RecordingClient(fail=lambda n, r: botocore.exceptions.NoCredentialsError())
    stats = AgentStats()
    clock = FakeClock()
    publisher(client, clock, stats=stats).publish(series(4))
    assert len(client.calls) == 1  # missing credentials do not come back within one deadline
    assert stats.dropped == {"undeliverable": 12}


@pytest.mark.parametrize(("code", "status"), [("BadGateway", 502), ("GatewayTimeout", 504), ("", 503),
                                              ("InvalidParameterValue", 500)])
def test_any_5xx_is_retried_whatever_its_code(code: str, status: int) -> None:
    # On 086c3d7 a 500 carrying a rejection code was dropped as rejected.
    client = RecordingClient(fail=fail_first(1, client_error(code, status)))
    stats = AgentStats()
    handed: list[int] = []
    pub = publisher(client, stats=stats, on_undeliverable=lambda datums, reason: handed.append(len(datums)))
    assert pub.publish(series(2)) == 1
    assert (len(client.calls), handed, stats.dropped) == (2, [], {})


def test_the_backoff_is_full_jitter_from_a_quarter_second_doubling_to_an_eight_second_cap() -> None:
    bounds: list[tuple[float, float]] = []

    def highest(low: float, high: float) -> float:
        bounds.append((low, high))
        return high

    clock = FakeClock()
    client = RecordingClient(fail=fail_first(8, client_error("Throttling", 400)))
    assert publisher(client, clock, retry_deadline=60.0, uniform=highest).publish(series(1)) == 1
    assert clock.sleeps == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert bounds == [(0.0, s) for s in clock.sleeps]


def test_the_backoff_draws_from_the_injected_generator() -> None:
    draws = iter([0.1, 0.9, 0.5])
    clock = FakeClock()
    client = RecordingClient(fail=fail_first(3, client_error("Throttling", 400)))
    assert publisher(client, clock, uniform=lambda low, high: low + next(draws) * (high - low)).publish(
        series(1)) == 1
    assert clock.sleeps == [0.025, 0.45, 0.5]


@pytest.mark.parametrize("unanswered", [botocore.exceptions.ReadTimeoutError(endpoint_url="https://monitoring"),
                                        botocore.exceptions.ConnectionClosedError(endpoint_url="https://monitoring")])
def test_a_retry_after_an_unanswered_request_counts_the_datapoints_as_possible_duplicates(
    unanswered: Exception,
) -> None:
    client = RecordingClient(fail=fail_first(1, unanswered))
    stats = AgentStats()
    assert publisher(client, stats=stats).publish(series(2)) == 1
    assert (stats.possible_duplicates, stats.published) == (6, 6)
    samples = {s.name: s.value for s in stats.interval_samples()}
    assert samples["PossibleDuplicates"] == 6


def test_a_read_timeout_kept_for_replay_counts_as_possible_duplicates_and_a_dropped_one_does_not() -> None:
    timeout = botocore.exceptions.ReadTimeoutError(endpoint_url="https://monitoring")
    stats = AgentStats()
    pub = publisher(RecordingClient(fail=lambda n, r: timeout), stats=stats, retry_deadline=0.0,
                    on_undeliverable=lambda datums, reason: None)
    pub.publish(series(2))
    assert stats.possible_duplicates == 6
    dropping = AgentStats()
    publisher(RecordingClient(fail=lambda n, r: timeout), stats=dropping, retry_deadline=0.0).publish(series(2))
    assert (dropping.possible_duplicates, dropping.dropped) == (0, {"undeliverable": 6})


@pytest.mark.parametrize("answered", [client_error("Throttling", 400), client_error("", 503),
                                      botocore.exceptions.EndpointConnectionError(endpoint_url="https://monitoring"),
                                      botocore.exceptions.ConnectTimeoutError(endpoint_url="https://monitoring")])
def test_no_possible_duplicates_when_the_request_never_reached_cloudwatch_or_was_answered(answered: Exception) -> None:
    stats = AgentStats()
    publisher(RecordingClient(fail=fail_first(1, answered)), stats=stats).publish(series(2))
    assert (stats.possible_duplicates, stats.published) == (0, 6)
    assert "PossibleDuplicates" not in {s.name for s in stats.interval_samples()}


def chunks(name: str, count: int, dims: tuple[tuple[str, str], ...] = (("InstanceId", "i-0abc"),)) -> list[Datum]:
    """The datums the aggregator makes of one series with `count` distinct values in one minute."""
    values = [float(v) for v in range(count)]
    return [Datum(name, dims, T0, "Milliseconds", tuple(values[i : i + 150]), (1.0,) * len(values[i : i + 150]))
            for i in range(0, count, 150)]


def test_chunks_of_one_series_over_150_values_go_in_different_requests() -> None:
    # "up to 150 values per metric with one PutMetricData request" (PutMetricData API reference).
    client = RecordingClient()
    datums = chunks("Latency", 400) + series(500) + chunks("Other", 300)
    assert publisher(client).publish(datums) == 3
    per_request = [[d["MetricName"] for d in r["MetricData"] if d["MetricName"] in ("Latency", "Other")]
                   for r in client.accepted]
    assert per_request == [["Latency", "Other"], ["Latency", "Other"], ["Latency"]]
    assert [len(r["MetricData"]) for r in client.accepted] == [502, 2, 1]
    assert client.refused == []


def test_two_chunks_of_one_series_never_share_a_request_the_double_would_refuse() -> None:
    client = RecordingClient()
    stats = AgentStats()
    publisher(client, stats=stats).publish(chunks("Latency", 300))
    assert (len(client.calls), client.refused, stats.dropped) == (2, [], {})


def test_server_errors_are_retried() -> None:
    client = RecordingClient(fail=fail_first(1, client_error("InternalServiceError", 500)))
    stats = AgentStats()
    assert publisher(client, stats=stats).publish(series(2)) == 1
    assert len(client.calls) == 2
    assert stats.publish_errors == {"InternalServiceError": 1}
