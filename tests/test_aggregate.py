"""Per-minute aggregation: Values/Counts must reproduce every statistic CloudWatch computes, exactly."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.aggregate import Aggregator, Datum
from agent.cloudwatch_rules import MAX_VALUES_PER_METRIC
from agent.samples import Sample

MINUTE_START = 1_790_000_040.0  # a whole minute, in epoch seconds
HOST = (("InstanceId", "i-0abc"),)


def statistics(datums: list[Datum]) -> tuple[int, float, float, float]:
    values = [v for d in datums for v, c in zip(d.values, d.counts, strict=True) for _ in range(int(c))]
    return len(values), math.fsum(values), min(values), max(values)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 59), st.sampled_from([0.0, 12.5, 50.0, 99.25, 100.0, 7.125, 33.0])),
                min_size=1, max_size=240))
def test_values_and_counts_reproduce_sample_count_sum_min_max(readings: list[tuple[int, float]]) -> None:
    aggregator = Aggregator()
    for second, value in readings:
        aggregator.add([Sample("CPUUtilization", value, "Percent")], MINUTE_START + second, HOST)
    datums = aggregator.drain()
    assert len(datums) == 1
    assert datums[0].timestamp == MINUTE_START
    assert datums[0].dimensions == HOST
    values = [v for _, v in readings]
    assert statistics(datums) == (len(values), math.fsum(values), min(values), max(values))


def test_two_hundred_distinct_values_make_two_datums_and_lose_nothing() -> None:
    aggregator = Aggregator()
    for i in range(200):
        aggregator.add([Sample("GPUUtilization", float(i), "Percent", (("GPU", "0"),))], MINUTE_START + i * 0.25)
    datums = aggregator.drain()
    assert [len(d.values) for d in datums] == [MAX_VALUES_PER_METRIC, 50]
    assert {d.timestamp for d in datums} == {MINUTE_START}
    assert statistics(datums) == (200, float(sum(range(200))), 0.0, 199.0)


def test_minutes_are_separate_datums_stamped_at_their_start() -> None:
    aggregator = Aggregator()
    aggregator.add([Sample("MemoryUtilization", 10.0, "Percent")], MINUTE_START + 59.9)
    aggregator.add([Sample("MemoryUtilization", 20.0, "Percent")], MINUTE_START + 60.0)
    assert [(d.timestamp, d.values, d.counts) for d in aggregator.drain()] == [
        (MINUTE_START, (10.0,), (1.0,)),
        (MINUTE_START + 60, (20.0,), (1.0,)),
    ]
    assert aggregator.drain() == []


def test_high_resolution_buckets_by_second() -> None:
    aggregator = Aggregator(high_resolution=True)
    for offset in (0.1, 0.6, 1.2):
        aggregator.add([Sample("CPUUtilization", offset, "Percent")], MINUTE_START + offset)
    datums = aggregator.drain()
    assert [(d.timestamp, d.counts, d.storage_resolution) for d in datums] == [
        (MINUTE_START, (1.0, 1.0), 1), (MINUTE_START + 1, (1.0,), 1),
    ]
    assert datums[0].to_api()["StorageResolution"] == 1


def test_non_finite_and_out_of_range_values_are_dropped_and_counted() -> None:
    dropped: Counter[str] = Counter()
    aggregator = Aggregator(on_drop=lambda reason, n: dropped.update({reason: n}))
    kept = aggregator.add([Sample("X", v, "None") for v in (1.0, math.nan, math.inf, -math.inf, 2.0**361)],
                          MINUTE_START)
    assert kept == 1
    assert dropped == {"out_of_range": 4}
    assert [d.values for d in aggregator.drain()] == [(1.0,)]


def test_magnitudes_below_cloudwatchs_smallest_are_dropped_as_out_of_range_and_zero_is_kept() -> None:
    # CloudWatch refuses a non-zero magnitude below 8.515920e-109 as it refuses one above 1.174271e+108.
    dropped: Counter[str] = Counter()
    aggregator = Aggregator(on_drop=lambda reason, n: dropped.update({reason: n}))
    edge = 8.515920e-109
    kept = aggregator.add([Sample("X", v, "None") for v in (0.0, -0.0, edge, -edge, 1e-200, edge / 2, 1.174271e108)],
                          MINUTE_START)
    assert kept == 5
    assert dropped == {"out_of_range": 2}
    assert [d.values for d in aggregator.drain()] == [(-edge, 0.0, edge, 1.174271e108)]


def test_a_series_cloudwatch_would_refuse_is_dropped_whole_and_counted_as_invalid_series() -> None:
    dropped: Counter[str] = Counter()
    aggregator = Aggregator(on_drop=lambda reason, n: dropped.update({reason: n}))
    aggregator.add([
        Sample("DiskUsedPercent", 1.0, "Percent", (("MountPath", "/mnt/données"),)),
        Sample("DiskUsedPercent", 2.0, "Percent", (("MountPath", "/mnt/a\tb"),)),
        Sample("DiskUsedPercent", 3.0, "Percent", (("MountPath", "/"),)),
        Sample("X" * 256, 4.0, "Percent"),
    ], MINUTE_START)
    assert [(d.name, d.dimensions) for d in aggregator.drain()] == [("DiskUsedPercent", (("MountPath", "/"),))]
    assert dropped == {"invalid_series": 3}


def test_datum_api_shape() -> None:
    datum = Datum("DiskReadBytesPerSecond", (("Device", "nvme0n1"), ("InstanceId", "i-1")), MINUTE_START,
                  "Bytes/Second", (1.0, 2.5), (3.0, 1.0))
    api = datum.to_api()
    assert api["Timestamp"].isoformat() == "2026-09-21T14:14:00+00:00"
    assert {k: v for k, v in api.items() if k != "Timestamp"} == {
        "MetricName": "DiskReadBytesPerSecond",
        "Dimensions": [{"Name": "Device", "Value": "nvme0n1"}, {"Name": "InstanceId", "Value": "i-1"}],
        "Values": [1.0, 2.5], "Counts": [3.0, 1.0], "Unit": "Bytes/Second",
    }
    assert datum.datapoints == 4


def test_a_sample_adds_its_count_so_weights_stay_exact() -> None:
    aggregator = Aggregator()
    aggregator.add([Sample("Lat", 7.0, "Milliseconds", count=1 / (10 / 37))] * 10, MINUTE_START)
    aggregator.add([Sample("Lat", 3.0, "Milliseconds"), Sample("Lat", 9.0, "Milliseconds", count=1000.0)],
                   MINUTE_START + 1)
    [datum] = aggregator.drain()
    assert (datum.values, datum.counts) == ((3.0, 7.0, 9.0), (1.0, 37.0, 1000.0))


def test_a_minute_of_distinct_values_is_bounded_and_its_statistics_stay_exact() -> None:
    """A job timing requests in float ms: every value distinct. The minute holds at most the per-series
    limit, merged values are counted, and SampleCount, Sum, Minimum, Maximum are those of every value."""
    merged: list[int] = []
    aggregator = Aggregator(on_merge=merged.append, max_series_values=300)
    values = [index / 8 for index in range(60_000)]  # eighths: every sum below is exact in floats
    for second in range(60):
        aggregator.add([Sample("Lat", value, "Milliseconds") for value in values[second * 1000:(second + 1) * 1000]],
                       MINUTE_START + second)
    datums = aggregator.drain()
    assert sum(len(d.values) for d in datums) <= 300 + 2
    assert len({d.timestamp for d in datums}) == 1
    count = math.fsum(c for d in datums for c in d.counts)
    total = math.fsum(v * c for d in datums for v, c in zip(d.values, d.counts, strict=True))
    assert (count, min(datums[0].values), max(datums[-1].values)) == (60_000.0, 0.0, 59_999 / 8)
    assert math.isclose(total, math.fsum(values), rel_tol=1e-12)
    assert sum(merged) == 60_000 - sum(len(d.values) for d in datums)


def test_many_series_share_one_budget() -> None:
    aggregator = Aggregator(max_held_values=1000)
    for second in range(60):
        aggregator.add([Sample(f"Lat{series}", second + series / 100, "Milliseconds") for series in range(100)],
                       MINUTE_START + second)
    datums = aggregator.drain()
    assert len(datums) == 100
    assert sum(len(d.values) for d in datums) <= 1000 + 2 * 100
    assert all(sum(d.counts) == 60.0 for d in datums)


def test_a_drain_closed_by_a_time_takes_the_buckets_that_ended_by_then_and_keeps_the_open_one() -> None:
    aggregator = Aggregator()
    aggregator.add([Sample("MemoryUtilization", 10.0, "Percent")], MINUTE_START + 59.9)
    aggregator.add([Sample("MemoryUtilization", 20.0, "Percent")], MINUTE_START + 60.0)
    assert aggregator.drain(closed_by=MINUTE_START + 59.999) == []  # the first minute has not ended yet
    assert aggregator.pending == 2
    # A bucket that ends exactly at the time is closed: its last sample was taken before it.
    assert [(d.timestamp, d.values) for d in aggregator.drain(closed_by=MINUTE_START + 60)] == [
        (MINUTE_START, (10.0,))]
    aggregator.add([Sample("MemoryUtilization", 30.0, "Percent")], MINUTE_START + 67)
    assert [(d.timestamp, d.values, d.counts) for d in aggregator.drain(closed_by=MINUTE_START + 67)] == []
    assert [(d.timestamp, d.values, d.counts) for d in aggregator.drain()] == [
        (MINUTE_START + 60, (20.0, 30.0), (1.0, 1.0))]  # everything: the open minute so far, whole
    assert aggregator.pending == 0


def test_at_high_resolution_a_drain_keeps_the_open_second() -> None:
    aggregator = Aggregator(high_resolution=True)
    assert (aggregator.bucket_seconds, aggregator.bucket_of(MINUTE_START + 1.7)) == (1, MINUTE_START + 1)
    for offset in (0.1, 0.6, 1.2):
        aggregator.add([Sample("CPUUtilization", offset, "Percent")], MINUTE_START + offset)
    assert [(d.timestamp, d.counts) for d in aggregator.drain(closed_by=MINUTE_START + 1.5)] == [
        (MINUTE_START, (1.0, 1.0))]
    assert [(d.timestamp, d.counts) for d in aggregator.drain()] == [(MINUTE_START + 1, (1.0,))]


def test_the_open_minute_kept_by_a_drain_still_counts_against_the_budget() -> None:
    """Values held in the open minute stay held: the next values past the total merge every series down."""
    merged: list[int] = []
    aggregator = Aggregator(on_merge=merged.append, max_held_values=10)
    aggregator.add([Sample("Lat", value, "Milliseconds") for value in (0.0, 100.0)], MINUTE_START)
    aggregator.add([Sample("Lat", float(value), "Milliseconds") for value in range(10)], MINUTE_START + 60)
    assert merged == []  # 8 middle values held in the open minute, 0 in the closed one: below 10
    assert [d.timestamp for d in aggregator.drain(closed_by=MINUTE_START + 61)] == [MINUTE_START]
    aggregator.add([Sample("Lat", value, "Milliseconds") for value in (0.5, 1.5, 2.5)], MINUTE_START + 62)
    assert merged == [7]  # 11 held, over 10: the series merged to about its share, 5 (4 groups of 11 values)
    [datum] = aggregator.drain()
    assert (sum(datum.counts), datum.values[0], datum.values[-1]) == (13.0, 0.0, 9.0)
