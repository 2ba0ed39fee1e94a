"""The StatsD collector fed datagrams directly: what each collect publishes, exactly, and every limit."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from agent.catalogue import METRICS
from agent.samples import Dimensions, Sample
from agent.statsd.collector import StatsdCollector
from agent.statsd.parser import parse_packet
from tests.fakes.host import FakeClock


class RecordingDrops:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, reason: str, count: int) -> None:
        self.counts[reason] += count


def self_metrics(dropped: int = 0, parse_errors: int = 0) -> list[Sample]:
    return [
        METRICS["StatsdSeriesDropped"].sample(dropped, Component="agent"),
        METRICS["StatsdParseErrors"].sample(parse_errors, Component="agent"),
    ]


def app_samples(samples: list[Sample]) -> list[Sample]:
    return [sample for sample in samples if sample.name not in METRICS]


def collector(clock: FakeClock, **options: object) -> StatsdCollector:
    return StatsdCollector(monotonic=clock, **options)  # type: ignore[arg-type]


def test_counter_total_and_rate_over_the_window() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    statsd.receive(b"SamplesProcessed:32|c\nSamplesProcessed:32|c")
    statsd.receive(b"SamplesProcessed:36|c")
    clock.advance(10)
    assert statsd.collect() == [
        Sample("SamplesProcessed", 100.0, "Count"),
        Sample("SamplesProcessedPerSecond", 10.0, "Count/Second"),
        *self_metrics(),
    ]


def test_counter_windows_sum_to_the_exact_total() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    totals = []
    for window in range(6):
        for _ in range(window + 1):
            statsd.receive(b"Rows:7|c")
        clock.advance(10)
        totals += [s.value for s in statsd.collect() if s.name == "Rows"]
    assert totals == [7.0, 14.0, 21.0, 28.0, 35.0, 42.0]
    assert sum(totals) == 7 * 21


def test_sample_rate_scales_counter_increments() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    statsd.receive(b"Rows:1|c|@0.1\nRows:3|c|@0.5\nRows:2|c")
    clock.advance(2)
    assert app_samples(statsd.collect()) == [
        Sample("Rows", 18.0, "Count"), Sample("RowsPerSecond", 9.0, "Count/Second")
    ]


def test_byte_counters_by_default_name_rule_and_by_config() -> None:
    clock = FakeClock()
    statsd = collector(clock, byte_counters=("*Bytes*", "Payload*"))
    statsd.receive(b"ReadBytes:4096|c\nPayloadSize:10|c\nbytes_read:1|c")
    clock.advance(4)
    assert app_samples(statsd.collect()) == [
        Sample("ReadBytes", 4096.0, "Bytes"),
        Sample("ReadBytesPerSecond", 1024.0, "Bytes/Second"),
        Sample("PayloadSize", 10.0, "Bytes"),
        Sample("PayloadSizePerSecond", 2.5, "Bytes/Second"),
        Sample("bytes_read", 1.0, "Count"),
        Sample("bytes_readPerSecond", 0.25, "Count/Second"),
    ]


def test_idle_counter_publishes_zero_until_it_expires_then_starts_afresh() -> None:
    clock = FakeClock()
    statsd = collector(clock, expire_after=30)
    statsd.receive(b"Rows:5|c")
    published = []
    for _ in range(5):
        clock.advance(10)
        published.append([s.value for s in app_samples(statsd.collect()) if s.name == "Rows"])
    assert published == [[5.0], [0.0], [0.0], [], []]
    statsd.receive(b"Rows:1|c")
    clock.advance(10)
    assert [s.value for s in app_samples(statsd.collect()) if s.name == "Rows"] == [1.0]


def test_gauge_set_deltas_and_one_sample_per_collect() -> None:
    clock = FakeClock()
    statsd = collector(clock, expire_after=20)
    statsd.receive(b"QueueDepth:+5|g")  # a delta before any value starts from 0
    statsd.receive(b"QueueDepth:-2|g\nQueueDepth:+0.5|g")
    clock.advance(10)
    assert app_samples(statsd.collect()) == [Sample("QueueDepth", 3.5, "None")]
    statsd.receive(b"QueueDepth:10|g\nQueueDepth:-1|g")
    clock.advance(10)
    assert app_samples(statsd.collect()) == [Sample("QueueDepth", 9.0, "None")]
    clock.advance(10)
    assert app_samples(statsd.collect()) == [Sample("QueueDepth", 9.0, "None")]
    clock.advance(10)
    assert app_samples(statsd.collect()) == []


def test_timer_values_each_become_a_sample_with_its_count_once_per_window() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    statsd.receive(b"StepTime:120|ms\nStepTime:80.5|ms\nStepTime:120|ms")
    clock.advance(10)
    assert app_samples(statsd.collect()) == [
        Sample("StepTime", 80.5, "Milliseconds", count=1.0),
        Sample("StepTime", 120.0, "Milliseconds", count=2.0),
    ]
    clock.advance(10)
    assert app_samples(statsd.collect()) == []


def test_histogram_and_distribution_are_one_unitless_series() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    statsd.receive(b"BatchTokens:512|h\nBatchTokens:256|d")
    clock.advance(10)
    assert app_samples(statsd.collect()) == [
        Sample("BatchTokens", 256.0, "None"), Sample("BatchTokens", 512.0, "None")
    ]


@pytest.mark.parametrize(
    ("rate", "count"), [("0.5", 2.0), ("0.1", 10.0), ("0.01", 100.0), ("0.3", 1 / 0.3), ("0.001", 1000.0)]
)
def test_a_sampled_timer_value_counts_exactly_one_over_its_rate(rate: str, count: float) -> None:
    clock = FakeClock()
    statsd = collector(clock)
    statsd.receive(f"StepTime:7|ms|@{rate}".encode())
    clock.advance(10)
    assert app_samples(statsd.collect()) == [Sample("StepTime", 7.0, "Milliseconds", count=count)]


def test_dogstatsd_sampling_at_10_in_37_gives_a_sample_count_of_37_not_40() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    rate = 10 / 37  # the DogStatsD client writes it as repr(): @0.2702702702702703
    statsd.receive(b"\n".join(b"Lat:%d|h|@%r" % (value, rate) for value in range(10)))
    clock.advance(10)
    samples = app_samples(statsd.collect())
    assert [sample.value for sample in samples] == [float(value) for value in range(10)]
    assert sum(sample.count for sample in samples) == 37.0


def test_set_members_are_counted_once_per_wall_clock_minute() -> None:
    clock, wall = FakeClock(), FakeClock(1_790_000_040.0)  # the start of a minute
    statsd = StatsdCollector(monotonic=clock, wall_clock=wall, expire_after=60)
    published = []
    for members in [b"a b a", b"b c", b"a", b"c d", b"a", b"a e"]:  # collects at :20, :40, :00, ...
        statsd.receive(b"\n".join(b"Users:%s|s" % member for member in members.split()))
        clock.advance(20)
        wall.advance(20)
        published.append([s.value for s in app_samples(statsd.collect())])
    # The first minute: a b, then c. The next: a (again), c d, nothing new. The third: a e.
    assert published == [[2.0], [1.0], [1.0], [2.0], [0.0], [2.0]]


def test_a_set_publishes_the_distinct_members_of_each_minute_as_the_minutes_sum() -> None:
    clock, wall = FakeClock(), FakeClock(1_790_000_040.0)
    statsd = StatsdCollector(monotonic=clock, wall_clock=wall, dimension_keys=("env",))
    sums: dict[int, float] = {}
    for step in range(12):  # two minutes of 10-second collects; member k arrives in collect k and k+3
        statsd.receive(b"Users:%d|s|#env:prod\nUsers:%d|s|#env:prod" % (step, max(step - 3, 0)))
        clock.advance(10)
        wall.advance(10)
        minute = int(wall() // 60)
        sums[minute] = sums.get(minute, 0.0) + sum(s.value for s in app_samples(statsd.collect()))
    # Collects at :10 .. :50 count members 0-4; :00 .. :50 count 5-10 and 2-7 again; the next :00, 11 and 8.
    assert list(sums.values()) == [5.0, 9.0, 2.0]


def test_allowed_tags_become_sorted_dimensions_and_others_are_ignored() -> None:
    clock = FakeClock()
    statsd = collector(clock, dimension_keys=("model", "rank"))
    statsd.receive(b"Tokens:10|c|#rank:3,host:a,model:llama\nTokens:5|c|#model:llama,rank:3,host:b")
    statsd.receive(b"Tokens:1|c|#model:gpt,rank,canary")  # a bare tag has no value to be a dimension
    clock.advance(1)
    assert app_samples(statsd.collect()) == [
        Sample("Tokens", 15.0, "Count", (("model", "llama"), ("rank", "3"))),
        Sample("TokensPerSecond", 15.0, "Count/Second", (("model", "llama"), ("rank", "3"))),
        Sample("Tokens", 1.0, "Count", (("model", "gpt"),)),
        Sample("TokensPerSecond", 1.0, "Count/Second", (("model", "gpt"),)),
    ]


def test_a_malformed_dimension_tag_is_dropped_and_counted_and_the_value_kept() -> None:
    clock = FakeClock()
    statsd = collector(clock, dimension_keys=("city", "env", "error"))
    with capture_logs() as logs:
        for _ in range(2):  # the second time, the line could take the inlined path: it must still be counted
            statsd.receive("Rows:1|c|#city:zürich,env:prod,error:connection refused,note:ü\x1b[2J".encode())
        statsd.receive(b"Rows:1|c|#env:\x1b[2J")
    clock.advance(1)
    samples = statsd.collect()
    dims = (("env", "prod"), ("error", "connection refused"))
    assert app_samples(samples) == [
        Sample("Rows", 2.0, "Count", dims), Sample("RowsPerSecond", 2.0, "Count/Second", dims),
        Sample("Rows", 1.0, "Count"), Sample("RowsPerSecond", 1.0, "Count/Second"),
    ]
    assert samples[-2:] == self_metrics(parse_errors=3)  # city twice, env once; `note` is no dimension
    assert logs == [
        {"event": "statsd_tag_dropped", "metric": "Rows", "tag": "city", "value": "z\\xfcrich",
         "reason": "must be ASCII only", "log_level": "warning"},
        {"event": "statsd_tag_dropped", "metric": "Rows", "tag": "env", "value": "\\x1b[2J",
         "reason": "must not contain control characters (tab, newline, ...)", "log_level": "warning"},
    ]


@pytest.mark.parametrize(
    "tags", ["#", "#env:prod,", "#env=prod", "#error:connection refused", "#city:zürich", "#env:prod,,x"]
)
def test_tags_the_agent_ignores_never_reject_the_line(tags: str) -> None:
    clock = FakeClock()
    statsd = collector(clock)
    statsd.receive(f"cpu:42|c|{tags}".encode())
    clock.advance(1)
    assert statsd.collect() == [
        Sample("cpu", 42.0, "Count"), Sample("cpuPerSecond", 42.0, "Count/Second"), *self_metrics()
    ]


def test_graphite_style_tags_become_dimensions() -> None:
    clock = FakeClock()
    statsd = collector(clock, dimension_keys=("env",))
    statsd.receive(b"Rows:1|c|#env=prod\nRows:1|c|#env:prod")
    clock.advance(1)
    assert app_samples(statsd.collect())[0] == Sample("Rows", 2.0, "Count", (("env", "prod"),))


def test_crlf_lines_are_counted_on_the_parser_and_the_inlined_path() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    for _ in range(3):
        statsd.receive(b"Rows:2|c\r\nLat:5|ms|@0.5\r\nDepth:3|g\r\n")
    clock.advance(1)
    assert statsd.collect() == [
        Sample("Rows", 6.0, "Count"), Sample("RowsPerSecond", 6.0, "Count/Second"),
        Sample("Lat", 5.0, "Milliseconds", count=6.0), Sample("Depth", 3.0, "None"), *self_metrics(),
    ]


def test_several_values_in_one_line_are_each_counted() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    for _ in range(2):
        statsd.receive(b"Lat:1:2:1|ms|@0.5\nRows:1:2|c\nDepth:5:+2:-1|g\nUsers:a:b|s")
    clock.advance(1)
    assert statsd.collect() == [
        Sample("Lat", 1.0, "Milliseconds", count=8.0), Sample("Lat", 2.0, "Milliseconds", count=4.0),
        Sample("Rows", 6.0, "Count"), Sample("RowsPerSecond", 6.0, "Count/Second"),
        Sample("Depth", 6.0, "None"), Sample("Users", 1.0, "Count"), *self_metrics(),
    ]


def test_a_rejected_line_is_logged_escaped_so_it_cannot_drive_the_operators_terminal() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    with capture_logs() as logs:
        statsd.receive(b"\x1b]0;pwned\x07\x1b[2J:1|c\n\x1b[31mRows\xff:1|c")
    assert [(log["line"], log["reason"]) for log in logs] == [
        ("\\x1b]0;pwned\\x07\\x1b[2J:1|c", "name must be 1..246 of A-Z a-z 0-9 _ . - /"),
        ("\\x1b[31mRows\\ufffd:1|c", "name must be 1..246 of A-Z a-z 0-9 _ . - /"),
    ]


def test_first_value_of_a_repeated_tag_wins() -> None:
    clock = FakeClock()
    statsd = collector(clock, dimension_keys=("env",))
    statsd.receive(b"Rows:1|c|#env:prod,env:dev")
    clock.advance(1)
    assert app_samples(statsd.collect())[0].dimensions == (("env", "prod"),)


def test_dimensions_past_the_room_left_keep_the_keys_listed_first() -> None:
    clock = FakeClock()
    keys = tuple(f"k{index:02d}" for index in range(30))
    statsd = collector(clock, dimension_keys=keys, max_dimensions=27)
    tags = ",".join(f"{key}:v" for key in reversed(keys))
    with capture_logs() as logs:
        statsd.receive(f"Rows:1|c|#{tags}".encode())
        statsd.receive(f"Rows:1|c|#{tags}".encode())
    clock.advance(1)
    rows = app_samples(statsd.collect())[0]
    assert rows.dimensions == tuple((key, "v") for key in keys[:27])
    assert rows.value == 2.0
    assert logs == [
        {"event": "statsd_dimensions_truncated", "metric": "Rows", "kept": 27, "log_level": "warning"}
    ]


def test_series_cap_drops_and_counts_lines_of_new_series_only() -> None:
    clock = FakeClock()
    statsd = collector(clock, max_series=3, dimension_keys=("id",))
    packet = "\n".join(f"Rows:1|c|#id:{index}" for index in range(5)).encode()
    with capture_logs() as logs:
        statsd.receive(packet)
        statsd.receive(packet)  # the three admitted series still count; 2 lines dropped twice
    clock.advance(1)
    samples = statsd.collect()
    assert [(s.name, s.value, s.dimensions) for s in app_samples(samples) if s.name == "Rows"] == [
        ("Rows", 2.0, (("id", "0"),)), ("Rows", 2.0, (("id", "1"),)), ("Rows", 2.0, (("id", "2"),)),
    ]
    assert samples[-2:] == self_metrics(dropped=4)
    assert logs == [{"event": "statsd_series_limit", "metric": "Rows", "limit": 3, "log_level": "warning"}]
    clock.advance(1)
    assert statsd.collect()[-2:] == self_metrics(dropped=0)


def test_expired_series_free_their_place_under_the_cap() -> None:
    clock = FakeClock()
    statsd = collector(clock, max_series=1, expire_after=10)
    statsd.receive(b"Old:1|ms")
    clock.advance(10)
    statsd.collect()
    statsd.receive(b"New:1|ms")  # still over the cap: Old expires at the next collect
    clock.advance(10)
    assert statsd.collect()[-2:] == self_metrics(dropped=1)
    statsd.receive(b"New:2|ms")
    clock.advance(10)
    assert statsd.collect() == [Sample("New", 2.0, "Milliseconds"), *self_metrics()]


def test_catalogue_names_are_refused_so_a_job_cannot_overwrite_host_metrics() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    with capture_logs() as logs:
        statsd.receive(b"Heartbeat:1|c\nCPUUtilization:5|g\nDiskReadBytes:10|c\nDiskReadBytes:10|g")
    clock.advance(1)
    assert statsd.collect() == [Sample("DiskReadBytes", 10.0, "None"), *self_metrics(dropped=3)]
    assert logs == [{"event": "statsd_reserved_name", "metric": "Heartbeat", "log_level": "warning"}]


@pytest.mark.parametrize("line", [b"mem_used_percent:99|g", b"cpu_usage_active:1|ms", b"diskio_reads:1|h",
                                  b"nvidia_smi_utilization_gpu:0|g", b"net_bytes_recv:1|c", b"DiskReadBytes:1|c"])
def test_names_any_profile_publishes_are_refused_also_for_a_counter_rate(line: bytes) -> None:
    """Under naming = "cwagent" `mem_used_percent:99|g` would land in the host's own memory series, the one
    Compute Optimizer reads; a counter `DiskReadBytes` would publish the catalogue's DiskReadBytesPerSecond."""
    clock = FakeClock()
    statsd = collector(clock)
    statsd.receive(line)
    clock.advance(1)
    assert statsd.collect() == self_metrics(dropped=1)


def test_a_counter_and_a_gauge_never_publish_the_same_metric_name() -> None:
    clock = FakeClock()
    statsd = collector(clock, dimension_keys=("k",))
    with capture_logs() as logs:
        statsd.receive(b"Coll:2|c\nCollPerSecond:5|g\nCollPerSecond:6|ms|#k:a\nLat:1|ms\nLat:2|h|#k:b")
    clock.advance(1)
    assert statsd.collect() == [
        Sample("Coll", 2.0, "Count"), Sample("CollPerSecond", 2.0, "Count/Second"),
        Sample("Lat", 1.0, "Milliseconds"), *self_metrics(dropped=3),
    ]
    assert logs == [
        {"event": "statsd_name_clash", "metric": "CollPerSecond", "type": "g", "publishes": "CollPerSecond",
         "published_by": "Coll", "log_level": "warning"},
        {"event": "statsd_name_clash", "metric": "Lat", "type": "h", "publishes": "Lat", "published_by": "Lat",
         "log_level": "warning"},
    ]


def test_a_name_is_free_again_once_the_series_that_published_it_expired() -> None:
    clock = FakeClock()
    statsd = collector(clock, expire_after=10)
    statsd.receive(b"Coll:2|c")
    clock.advance(10)
    statsd.collect()
    clock.advance(10)
    statsd.collect()  # Coll expires
    statsd.receive(b"CollPerSecond:5|g")
    clock.advance(1)
    assert statsd.collect() == [Sample("CollPerSecond", 5.0, "None"), *self_metrics()]


def test_a_series_keeps_the_type_of_its_first_line() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    with capture_logs() as logs:
        statsd.receive(b"Rows:1|c\nRows:5|g\nRows:2|c\nLat:3|h\nLat:4|d\nLat:5|ms")
    clock.advance(1)
    assert statsd.collect() == [
        Sample("Rows", 3.0, "Count"),
        Sample("RowsPerSecond", 3.0, "Count/Second"),
        Sample("Lat", 3.0, "None"),
        Sample("Lat", 4.0, "None"),
        *self_metrics(dropped=2),
    ]
    assert logs == [
        {"event": "statsd_type_conflict", "metric": "Rows", "first": "c", "got": "g", "log_level": "warning"}
    ]


def test_parse_errors_are_counted_exactly_and_the_first_five_logged() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    with capture_logs() as logs:
        statsd.receive(b"\n".join([b"bad%d" % index for index in range(4)] + [b"Rows:1|c"]))
        statsd.receive(b"A:nan|c\nB:1|x\n\xff\xfe")
    clock.advance(1)
    assert statsd.collect()[-2:] == self_metrics(parse_errors=7)
    assert [(log["line"], log["reason"]) for log in logs] == [
        ("bad0", 'no ":" between name and value'),
        ("bad1", 'no ":" between name and value'),
        ("bad2", 'no ":" between name and value'),
        ("bad3", 'no ":" between name and value'),
        ("A:nan|c", "value must be a decimal number, got 'nan'"),
    ]
    clock.advance(1)
    assert statsd.collect()[-2:] == self_metrics(parse_errors=0)


def test_timer_values_past_the_window_budget_are_merged_never_dropped() -> None:
    clock, drops = FakeClock(), RecordingDrops()
    merged: list[int] = []
    statsd = collector(clock, max_series_values=4, on_drop=drops, on_merge=merged.append)
    statsd.receive(b"\n".join(b"A:%d|ms" % value for value in range(1, 9)) + b"\nA:100|ms|@0.5")
    clock.advance(1)
    # 1 the minimum, 100 the maximum; at 7, the middle 2..6 passed 4 values and was merged into 2 groups
    # of about equal count, each its mean; 7 and 8 came after.
    assert app_samples(statsd.collect()) == [
        Sample("A", 1.0, "Milliseconds"), Sample("A", 3.0, "Milliseconds", count=3.0),
        Sample("A", 5.5, "Milliseconds", count=2.0), Sample("A", 7.0, "Milliseconds"),
        Sample("A", 8.0, "Milliseconds"), Sample("A", 100.0, "Milliseconds", count=2.0),
    ]
    assert drops.counts == {}
    assert merged == [3]
    statsd.receive(b"A:4|ms|@0.2")  # the budget is per window
    clock.advance(1)
    assert app_samples(statsd.collect()) == [Sample("A", 4.0, "Milliseconds", count=5.0)]


def test_a_flood_of_distinct_timer_values_holds_a_bounded_window_and_keeps_every_observation() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    for start in range(0, 300_000, 50):
        statsd.receive(b"\n".join(b"Lat:%d.%03d|ms" % divmod(index, 1000) for index in range(start, start + 50)))
    clock.advance(1)
    timers = app_samples(statsd.collect())
    assert len(timers) <= 1500 + 2
    assert sum(sample.count for sample in timers) == 300_000.0
    assert (timers[0].value, timers[-1].value) == (0.0, 299.999)


def test_set_members_past_the_budget_are_dropped_and_counted() -> None:
    clock, drops = FakeClock(), RecordingDrops()
    statsd = collector(clock, max_members=2, on_drop=drops)
    statsd.receive(b"B:x|s\nB:y|s\nB:x|s\nB:z|s\nA:1|ms")
    clock.advance(1)
    samples = statsd.collect()
    assert [(s.name, s.value, s.count) for s in app_samples(samples)] == [("B", 2.0, 1.0), ("A", 1.0, 1.0)]
    assert drops.counts == {"statsd_value_limit": 1}  # z; a timer value never takes a member's room


def test_set_members_held_for_the_rest_of_the_minute_count_toward_the_budget() -> None:
    clock, wall, drops = FakeClock(), FakeClock(1_790_000_040.0), RecordingDrops()
    statsd = StatsdCollector(monotonic=clock, wall_clock=wall, max_members=2, on_drop=drops)
    statsd.receive(b"U:a|s\nU:b|s")
    clock.advance(10)
    wall.advance(10)
    statsd.collect()
    statsd.receive(b"U:a|s\nU:c|s")  # a and b are still held: no room for c
    clock.advance(10)
    wall.advance(10)
    assert app_samples(statsd.collect()) == [Sample("U", 0.0, "Count")]
    assert drops.counts == {"statsd_value_limit": 1}


def test_totals_beyond_what_cloudwatch_accepts_are_dropped_and_counted() -> None:
    clock, drops = FakeClock(), RecordingDrops()
    statsd = collector(clock, on_drop=drops)
    statsd.receive(b"Huge:1e108|c\nHuge:1e108|c\nBig:+1e108|g\nBig:+1e108|g\nFine:1|c")
    clock.advance(1)
    assert statsd.collect() == [
        Sample("Fine", 1.0, "Count"), Sample("FinePerSecond", 1.0, "Count/Second"), *self_metrics()
    ]
    assert drops.counts == {"out_of_range": 3}  # the counter's total and rate, the gauge


def test_a_gauge_too_small_for_cloudwatch_is_dropped_as_out_of_range_not_sent() -> None:
    # On 086c3d7 `loss:1e-200|g` was published and CloudWatch refused its whole request, Heartbeat included.
    clock, drops = FakeClock(), RecordingDrops()
    statsd = collector(clock, on_drop=drops)
    statsd.receive(b"loss:1e-200|g\nok:0|g")
    clock.advance(1)
    assert app_samples(statsd.collect()) == [Sample("ok", 0.0, "None")]
    assert drops.counts == {"out_of_range": 1}


def test_no_rate_when_no_time_passed() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    statsd.receive(b"Rows:4|c")
    assert app_samples(statsd.collect()) == [Sample("Rows", 4.0, "Count")]


def test_samples_carry_only_catalogue_or_statsd_units() -> None:
    clock = FakeClock()
    statsd = collector(clock)
    statsd.receive(b"A:1|c\nB:1|g\nC:1|ms\nD:1|h\nE:1|d\nReadBytes:1|c")
    clock.advance(1)
    units = {sample.unit for sample in statsd.collect()}
    assert units == {"Count", "Count/Second", "None", "Milliseconds", "Bytes", "Bytes/Second"}


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=300), max_size=10))
def test_nothing_a_client_sends_makes_receive_or_collect_raise(packets: list[bytes]) -> None:
    clock = FakeClock()
    statsd = collector(clock, max_series=5, max_values=50, dimension_keys=("a", "b"), max_dimensions=1)
    for packet in packets:
        statsd.receive(packet)
    clock.advance(1)
    for sample in statsd.collect():
        assert abs(sample.value) <= 2.0**360


def test_many_tag_sets_for_the_same_series_stay_one_series() -> None:
    clock = FakeClock()
    statsd = collector(clock, max_series=2, dimension_keys=("model",))
    for request in range(50):  # a per-request tag that is not a dimension: 50 tag sets, 1 series
        statsd.receive(f"Rows:1|c|#model:llama,request:{request}".encode())
    clock.advance(1)
    assert statsd.collect() == [
        Sample("Rows", 50.0, "Count", (("model", "llama"),)),
        Sample("RowsPerSecond", 50.0, "Count/Second", (("model", "llama"),)),
        *self_metrics(),
    ]


# --- the inlined path in receive agrees with the parser ------------------------------------------

VALUE_TEXTS = st.one_of(
    st.integers(0, 10**6).map(str),
    st.builds("{}.{}".format, st.integers(0, 999), st.integers(0, 999)),
    st.sampled_from([".5", "7.", "1.2.3", "-3", "+2.5", "1e3", "nan", "", "1_0", "9" * 120]),
)
FIELDS = st.sampled_from(
    ["c", "g", "ms", "h", "d", "c|@0.5", "ms|@0.1", "c|#k:a", "c|#j:x,k:b", "g|#k:a,k:b", "ms|#k:a|@0.25", "s", "c|"]
)
STATSD_LINES = st.one_of(
    st.builds("{}:{}|{}".format, st.sampled_from(["ZzRows", "ZzLat", "ZzDepth"]), VALUE_TEXTS, FIELDS),
    st.text(alphabet=st.characters(codec="ascii"), max_size=20),
)


def model_of_receive(packets: list[bytes], window: float) -> list[Sample]:
    """What collect publishes, computed from parse_packet's lines alone (names never reserved nor bytes)."""
    family_of = {"c": "c", "g": "g", "ms": "ms", "h": "h", "d": "h", "s": "s"}
    series: dict[tuple[str, Dimensions], tuple[str, dict[str, float], dict[float, float], set[str]]] = {}
    published_by: dict[str, tuple[str, str]] = {}  # metric name -> (family, StatsD name) of the first series
    dropped = parse_errors = 0
    for packet in packets:
        lines, rejected = parse_packet(packet)
        parse_errors += len(rejected)
        for name, kind, value, rate, tags, delta, member in lines:
            dims = tuple(sorted({key: val for key, val in reversed(tags) if key == "k" and val}.items()))
            if (name, dims) not in series:
                names = (name, name + "PerSecond") if kind == "c" else (name,)
                if any(published_by.get(n, (family_of[kind], name)) != (family_of[kind], name) for n in names):
                    dropped += 1
                    continue
                published_by.update(dict.fromkeys(names, (family_of[kind], name)))
            first_kind, state, values, members = series.setdefault((name, dims), (kind, {}, {}, set()))
            if family_of[kind] != family_of[first_kind]:
                dropped += 1
            elif kind == "c":
                state["total"] = state.get("total", 0.0) + value / rate
            elif kind == "g":
                state["value"] = value + state["value"] if delta and "value" in state else value
            elif kind == "s":
                members.add(member)
            else:
                values[value] = values.get(value, 0) + 1 / rate
    samples = []
    for (name, dims), (first_kind, state, values, members) in series.items():
        if first_kind == "c":
            samples.append(Sample(name, state.get("total", 0.0), "Count", dims))
            samples.append(Sample(name + "PerSecond", state.get("total", 0.0) / window, "Count/Second", dims))
        elif first_kind == "g":
            samples += [Sample(name, state["value"], "None", dims)] if "value" in state else []
        elif first_kind == "s":
            samples.append(Sample(name, float(len(members)), "Count", dims))
        else:
            unit = "Milliseconds" if first_kind == "ms" else "None"
            samples += [Sample(name, value, unit, dims, count) for value, count in sorted(values.items())]
    return samples + self_metrics(dropped, parse_errors)


@settings(max_examples=300)
@given(st.lists(st.lists(STATSD_LINES, min_size=1, max_size=8).map("\n".join), min_size=1, max_size=4))
def test_receive_publishes_what_the_parser_reads_also_once_lines_take_the_inlined_path(texts: list[str]) -> None:
    packets = [text.encode() for text in texts] * 2  # the second time, known lines take the inlined path
    clock = FakeClock()
    statsd = collector(clock, dimension_keys=("k",))
    for packet in packets:
        statsd.receive(packet)
    clock.advance(2)
    assert statsd.collect() == model_of_receive(packets, 2.0)


def memory_held_receiving(statsd: StatsdCollector, packets: Iterable[bytes]) -> int:
    """Bytes Python still holds after `statsd` received `packets` (tracemalloc: every allocation counted)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for packet in packets:
            statsd.receive(packet)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_set_members_cost_the_same_memory_however_long_they_are() -> None:
    """A member is any text, up to a 64 KiB datagram: held as text, 200 of them would be 12 MB."""
    clock = FakeClock()
    statsd = collector(clock)
    assert memory_held_receiving(statsd, (b"Users:%d%s|s" % (index, b"x" * 60_000) for index in range(200))) < 200_000
    clock.advance(10)
    assert app_samples(statsd.collect()) == [Sample("Users", 200.0, "Count")]


def test_tags_a_job_invents_per_line_are_not_remembered_however_long() -> None:
    """Tags the agent ignores can fill a datagram; remembering each line's fields and tags (up to 4 ×
    max_series of each) would hold 20 MB here."""
    clock = FakeClock()
    statsd = collector(clock)
    packets = (b"Rows:1|c|#request:%d%s" % (index, b"x" * 5000) for index in range(2000))
    assert memory_held_receiving(statsd, packets) < 500_000
    clock.advance(10)
    assert app_samples(statsd.collect()) == [
        Sample("Rows", 2000.0, "Count"), Sample("RowsPerSecond", 200.0, "Count/Second")
    ]
