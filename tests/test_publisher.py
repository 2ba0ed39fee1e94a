"""Batching to CloudWatch's limits, the retry policy, and what happens to datums that cannot go."""

from __future__ import annotations

from collections.abc import Sequence

import botocore.exceptions
from structlog.testing import capture_logs

from agent.aggregate import Datum
from agent.publisher import MAX_REQUEST_BYTES, REQUEST_BYTES_BUDGET, Publisher, RequestSizer, pack
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


def test_invalid_parameter_is_not_retried_and_is_logged_with_the_offending_datum() -> None:
    message = "The value NaN for parameter MetricData.member.2.Value is invalid."
    client = RecordingClient(fail=fail_first(1, client_error("InvalidParameterValue", 400, message)))
    stats = AgentStats()
    clock = FakeClock()
    with capture_logs() as logs:
        assert publisher(client, clock, stats=stats).publish(series(3)) == 0
    assert len(client.calls) == 1
    assert clock.sleeps == []
    assert stats.dropped == {"rejected": 9}
    assert stats.publish_errors == {"InvalidParameterValue": 1}
    rejected = [entry for entry in logs if entry["event"] == "publish_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["offending"] == {"index": 1, "metric": "Metric1",
                                        "dimensions": {"InstanceId": "i-0123456789abcdef0"}, "values": [1.0, 2.0]}


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


def test_server_errors_are_retried() -> None:
    client = RecordingClient(fail=fail_first(1, client_error("InternalServiceError", 500)))
    stats = AgentStats()
    assert publisher(client, stats=stats).publish(series(2)) == 1
    assert len(client.calls) == 2
    assert stats.publish_errors == {"InternalServiceError": 1}
