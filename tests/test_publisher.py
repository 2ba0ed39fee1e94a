"""Batching to CloudWatch's limits, the retry policy, and what happens to datums that cannot go."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import botocore.exceptions
import botocore.session
import pytest
from structlog.testing import capture_logs

from agent.aggregate import Datum
from agent.cloudwatch_rules import MAX_REQUEST_BYTES
from agent.publisher import REQUEST_BYTES_BUDGET, Publisher, RequestSizer, pack
from agent.selfstats import AgentStats
from tests.fakes.cloudwatch import RecordingClient, client_error, fail_first, speaking
from tests.fakes.host import FakeClock
from tests.test_request_bound import PROTOCOLS, typical

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


def valued(name: str, count: int) -> Datum:
    """One datum of series `name` with `count` distinct values."""
    return Datum(name, (("InstanceId", "i-0abc"),), T0, "Milliseconds", tuple(float(v) for v in range(count)),
                 (1.0,) * count)


def test_a_series_never_gets_more_than_150_values_in_one_request_however_its_datums_add_up() -> None:
    # 50 + 50 fit together; 100 more would make 200 values of one metric in one request, which CloudWatch refuses.
    batches = pack([valued("Latency", 50), valued("Latency", 50), valued("Latency", 100)], lambda data: 1)
    assert [[len(datum.values) for datum in batch] for batch in batches] == [[50, 50], [100]]


def test_a_series_datums_go_out_in_their_order_a_later_one_never_in_an_earlier_request() -> None:
    # Replay sends a series' minutes oldest first; the third fits beside the first but goes after the second.
    batches = pack([valued("Latency", 100), valued("Latency", 100), valued("Latency", 50)], lambda data: 1)
    assert [[len(datum.values) for datum in batch] for batch in batches] == [[100], [100, 50]]


def test_a_full_request_takes_no_1001st_datum_even_while_an_earlier_one_still_has_room() -> None:
    saturated = [valued(f"Heavy{index}", 150) for index in range(7)]  # no room left for these in request 1
    others = [valued(f"Light{index}", 1) for index in range(992)]
    request_2 = [valued(f"Heavy{index % 7}", 1) for index in range(1000)]  # 143 or 142 of each: all fit
    batches = pack([*saturated, *others, *request_2, valued("Heavy6", 1)], lambda data: 1)
    assert [len(batch) for batch in batches] == [999, 1000, 1]


def test_a_batch_measured_at_exactly_the_budget_is_sent_whole_and_a_single_datum_over_it_alone() -> None:
    two = series(2)
    assert pack(two, lambda data: 100 * len(data), budget=200) == [two]
    assert pack(two, lambda data: 101 * len(data), budget=200) == [[two[0]], [two[1]]]
    assert pack(two[:1], lambda data: 500, budget=200) == [two[:1]]  # nothing smaller to split it into


def test_the_sizer_measures_a_request_botocore_would_refuse_so_the_refusal_comes_from_sending_it() -> None:
    # Validating while measuring would raise out of pack(), before any datum could be refused and counted.
    sizer = RequestSizer()
    assert sizer.body_bytes("InfraWatch", [{"MetricName": "", "Value": 1.0}]) == len(
        sizer.body("InfraWatch", [{"MetricName": "", "Value": 1.0}])) > 0


def test_the_sizer_speaks_query_for_a_botocore_whose_model_has_no_resolved_protocol() -> None:
    # botocore before its multi-protocol models (CloudWatch's was "query") has ServiceModel.protocol only.
    model = botocore.session.get_session().get_service_model("cloudwatch")
    old = SimpleNamespace(protocol="query", operation_model=model.operation_model)
    body = RequestSizer(old).body("InfraWatch", [{"MetricName": "M", "Value": 1.0}])
    assert body == (b"Action=PutMetricData&Version=2010-08-01&Namespace=InfraWatch"
                    b"&MetricData.member.1.MetricName=M&MetricData.member.1.Value=1.0")


class RecordingSizer(RequestSizer):
    """The real sizer, noting the namespace of every body it measures."""

    def __init__(self) -> None:
        super().__init__()
        self.namespaces: list[str] = []

    def body_bytes(self, namespace: str, metric_data: list[dict[str, object]]) -> int:
        self.namespaces.append(namespace)
        return super().body_bytes(namespace, metric_data)


def test_batches_for_another_namespace_are_measured_in_that_namespace() -> None:
    sizer = RecordingSizer()
    pub = Publisher(RecordingClient(), "InfraWatch", stats=AgentStats(), sizer=sizer)
    over_the_bound = series(1000, dimension_value="d" * 1024)
    pub.pack(over_the_bound, namespace="InfraWatch/Replayed")
    pub.pack(over_the_bound)
    assert list(dict.fromkeys(sizer.namespaces)) == ["InfraWatch/Replayed", "InfraWatch"]
    data = [datum.to_api() for datum in series(2)]
    assert pub.measure(data, "X") == SIZER.body_bytes("X", data) != SIZER.body_bytes("InfraWatch", data)


@pytest.mark.parametrize(("message", "left"), [
    ("The value for parameter MetricData.member.3.Value is invalid.", [["Metric0", "Metric1"]]),
    ("One or more parameters are invalid.", [["Metric0"], ["Metric1"]]),  # bisected: both halves
])
def test_what_is_left_after_a_refusal_is_sent_with_the_batchs_own_overrides(
    message: str, left: list[list[str]],
) -> None:
    # Replay's send: one attempt, its own namespace, failures back to the spool: the rest of a refused batch too.
    refuse = client_error("InvalidParameterValue", 400, message)
    down = botocore.exceptions.EndpointConnectionError(endpoint_url="https://monitoring")
    client = RecordingClient(fail=lambda n, request: refuse if any(
        d["MetricName"] == "Metric2" for d in request["MetricData"]) else down)
    kept: list[list[str]] = []
    clock = FakeClock()
    stats = AgentStats()
    pub = publisher(client, clock, stats=stats, on_undeliverable=lambda datums, reason: None)
    sent = pub.send(series(3), on_undeliverable=lambda datums, reason: kept.append([d.name for d in datums]),
                    retry_deadline=0.0, namespace="InfraWatch/Replayed")
    assert (sent, kept, clock.sleeps, stats.dropped) == (0, left, [], {"rejected": 3})
    assert {request["Namespace"] for request in client.calls} == {"InfraWatch/Replayed"}


def test_an_index_past_the_batch_names_no_datum_and_the_batch_is_bisected() -> None:
    refuse = client_error("InvalidParameterValue", 400, "The value for parameter MetricData.member.3.Value is invalid.")
    client = RecordingClient(fail=lambda n, request: refuse if len(request["MetricData"]) == 2 else None)
    stats = AgentStats()
    assert publisher(client, stats=stats).publish(series(2)) == 2
    assert ([len(r["MetricData"]) for r in client.calls], stats.dropped) == ([2, 1, 1], {})


def test_a_413_is_halved_even_when_its_text_names_a_member() -> None:
    # A 413 means the body was too large, whatever a proxy's page says: no datum is at fault.
    too_large = client_error("RequestEntityTooLarge", 413, "MetricData.member.1 made it too large")
    client = RecordingClient(fail=lambda n, request: too_large if len(request["MetricData"]) == 2 else None)
    stats = AgentStats()
    assert publisher(client, stats=stats).publish(series(2)) == 2
    assert (names(client.accepted), stats.dropped) == (["Metric0", "Metric1"], {})


def test_a_refused_datum_is_logged_with_the_code_and_its_first_five_values() -> None:
    refuse = client_error("InvalidParameterValue", 400, "The value for parameter MetricData.member.1.Value is invalid.")
    client = RecordingClient(fail=fail_first(1, refuse))
    with capture_logs() as logs:
        publisher(client).publish([valued("Latency", 7)])
    [rejected] = [entry for entry in logs if entry["event"] == "publish_rejected"]
    assert (rejected["error"], rejected["offending"]) == ("InvalidParameterValue", [
        {"index": 0, "metric": "Latency", "dimensions": {"InstanceId": "i-0abc"}, "values": [0.0, 1.0, 2.0, 3.0, 4.0]}])


def test_reachable_is_unknown_until_an_answer_and_botocores_own_refusal_is_no_answer() -> None:
    refuse = client_error("InvalidParameterValue", 400, "The value for parameter MetricData.member.1.Value is invalid.")
    answered = publisher(RecordingClient(fail=lambda n, request: refuse))
    assert answered.reachable is None
    answered.publish(series(1))
    assert answered.reachable is True
    local = botocore.exceptions.ParamValidationError(report="Invalid length for parameter MetricData[0].MetricName")
    unsent = publisher(RecordingClient(fail=lambda n, request: local))
    unsent.publish(series(1))
    assert unsent.reachable is None
    down = publisher(RecordingClient(fail=fail_first(1, botocore.exceptions.NoCredentialsError())))
    down.publish(series(1))
    assert down.reachable is False
    down.publish(series(1))
    assert down.reachable is True


def test_the_latency_published_is_the_milliseconds_the_call_took() -> None:
    clock = FakeClock()
    stats = AgentStats()
    client = RecordingClient(fail=lambda n, request: clock.advance(0.25))
    publisher(client, clock, stats=stats).publish(series(1))
    assert [sample.value for sample in stats.interval_samples() if sample.name == "PublishLatency"] == [250.0]


def test_retrying_stops_when_the_next_sleep_would_reach_the_deadline_exactly() -> None:
    clock = FakeClock()
    client = RecordingClient(fail=lambda n, request: client_error("Throttling", 400))
    publisher(client, clock, retry_deadline=0.75, uniform=lambda low, high: high).publish(series(1))
    assert (clock.sleeps, len(client.calls)) == ([0.25], 2)  # 0.25 slept + 0.5 next = 0.75: no second sleep


def test_the_default_deadline_is_30_seconds() -> None:
    clock = FakeClock()
    client = RecordingClient(fail=lambda n, request: client_error("Throttling", 400))
    pub = Publisher(client, "InfraWatch", stats=AgentStats(), sizer=SIZER, sleep=clock.sleep, monotonic=clock,
                    backoff_base=1.0, backoff_max=1.0, uniform=lambda low, high: high)
    pub.publish(series(1))
    assert (len(clock.sleeps), len(client.calls)) == (29, 30)


def test_the_real_backoff_sleep_waits_the_backoff_and_returns() -> None:
    # The only test of the default sleep: a millisecond's backoff (abort() cutting it short is test_shutdown's).
    client = RecordingClient(fail=fail_first(1, client_error("Throttling", 400)))
    pub = Publisher(client, "InfraWatch", stats=AgentStats(), sizer=SIZER, backoff_base=0.001, backoff_max=0.001)
    assert pub.publish(series(1)) == 1


class CountingSizer(RequestSizer):
    """The real sizer for `protocol`, counting the bodies it serializes to measure them."""

    def __init__(self, protocol: str) -> None:
        super().__init__(speaking(protocol))
        self.measured = 0

    def body_bytes(self, namespace: str, metric_data: list[dict[str, object]]) -> int:
        self.measured += 1
        return super().body_bytes(namespace, metric_data)


def packed(sizer: CountingSizer, datums: list[Datum]) -> tuple[list[list[Datum]], int]:
    """What Publisher.pack makes of the datums, and how many bodies it serialized to do so."""
    sizer.measured = 0
    batches = Publisher(RecordingClient(), "InfraWatch", stats=AgentStats(), sizer=sizer).pack(datums)
    return batches, sizer.measured


def measured_only(sizer: RequestSizer, datums: list[Datum]) -> list[list[Datum]]:
    """The batches of 1ad258a, which measured every batch."""
    return pack(datums, lambda data: sizer.body_bytes("InfraWatch", data))


def bodies(sizer: RequestSizer, batches: list[list[Datum]]) -> list[bytes]:
    return [sizer.body("InfraWatch", [datum.to_api() for datum in batch]) for batch in batches]


# 1,000 typical datums: CBOR and json take them whole by their bound; the query form body of botocore < 1.35
# is 1,095,092 bytes, so it is measured once, split in two, and each half fits by its bound (1ad258a: 3 bodies).
TYPICAL_MEASURED = {"query": (1, [500, 500]), "json": (0, [1000]), "smithy-rpc-v2-cbor": (0, [1000])}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_1000_typical_datums_are_packed_without_serializing_them_into_the_same_requests(protocol: str) -> None:
    sizer = CountingSizer(protocol)
    batches, measured = packed(sizer, typical())
    assert (measured, [len(batch) for batch in batches]) == TYPICAL_MEASURED[protocol]
    assert bodies(sizer, batches) == bodies(sizer, measured_only(sizer, typical()))


# 1,000 datums with a 1,024-character dimension value: over the budget exactly in every protocol (over 1 MB),
# so measured and split in two; each half's bound is over the budget too in query and json (a "/" may take 3
# bytes, a character 2), and measured again; in CBOR (a character: 1 byte) it is not.
OVER_MEASURED = {"query": 3, "json": 3, "smithy-rpc-v2-cbor": 1}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_batch_over_its_bound_is_measured_and_split_exactly_as_before(protocol: str) -> None:
    sizer = CountingSizer(protocol)
    datums = series(1000, dimension_value="/" + "d" * 1023)
    batches, measured = packed(sizer, datums)
    assert (measured, [len(batch) for batch in batches]) == (OVER_MEASURED[protocol], [500, 500])
    assert bodies(sizer, batches) == bodies(sizer, measured_only(sizer, datums))


def test_a_bound_at_the_budget_is_taken_unmeasured_and_one_past_it_is_measured() -> None:
    two, calls = series(2), []

    def measure(data: list[dict[str, object]]) -> int:
        calls.append(len(data))
        return 100 * len(data)

    assert (pack(two, measure, budget=200, bound=lambda batch: 200), calls) == ([two], [])
    assert (pack(two, measure, budget=200, bound=lambda batch: 201), calls) == ([two], [2])
    assert (pack(two, measure, budget=199, bound=lambda batch: 201), calls) == ([two[:1], two[1:]], [2, 2])


def test_a_single_datum_is_never_measured_there_is_nothing_to_split_it_into() -> None:
    one = series(1)
    assert pack(one, lambda data: pytest.fail("measured"), budget=1, bound=lambda batch: 2) == [one]  # type: ignore[arg-type, func-returns-value]


def test_a_protocol_without_a_bound_has_every_batch_measured() -> None:
    model = botocore.session.get_session().get_service_model("cloudwatch")
    sizer = RecordingSizer.__new__(RecordingSizer)
    RequestSizer.__init__(sizer, SimpleNamespace(protocol="ec2", operation_model=model.operation_model))
    sizer.namespaces = []
    assert sizer.bound is None
    Publisher(RecordingClient(), "InfraWatch", stats=AgentStats(), sizer=sizer).pack(series(2))
    assert sizer.namespaces == ["InfraWatch"]
