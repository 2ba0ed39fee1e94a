"""The scrape cache (`Pages`): a page joined from families rendered once per version is byte for byte what
prometheus_client renders from `SnapshotCollector` at that moment, in every format, and the endpoint answers
every request as prometheus_client's own server does.

Pages are compared whole, families in the served order: the cache walks the same table in the same order as
`SnapshotCollector`, so nothing is sorted before comparing.
"""

from __future__ import annotations

import gzip
import http.client
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import choose_encoder, generate_latest, start_http_server
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import CollectorRegistry

from agent.catalogue import COUNT, METRICS, MILLISECONDS, NONE
from agent.prometheus import MAX_FORMATS, Endpoint, Pages, Snapshot, SnapshotCollector
from agent.samples import Sample, dimensions
from tests.conftest import free_port
from tests.fakes.host import FakeClock

# prometheus_client's registry is told to keep a collector that declares no names, so that `name[]` can filter
# it (`support_collectors_without_names`), in versions after 0.20, the declared minimum, which keeps it anyway.
NAMELESS_COLLECTORS: dict[str, Any] = ({"support_collectors_without_names": True}
                       if "support_collectors_without_names" in inspect.signature(CollectorRegistry).parameters else {})
TEXT = ""  # no Accept header: text format 0.0.4
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# What prometheus_client also negotiates: text 1.0.0 and OpenMetrics with a name escaping. With the two above,
# as many formats as the cache keeps (MAX_FORMATS): a fifth would evict one at every scrape of this test.
OTHER_FORMATS = ("text/plain; version=1.0.0; escaping=allow-utf-8",
                 "application/openmetrics-text; version=1.0.0; escaping=dots")
STALE_AFTER, FORGET_AFTER = 30.0, 120.0
# Label values prometheus_client must escape (quote, backslash, newline), and a tag that comes and goes.
TAGS = ("/a", "/b", 'say "hi"', "back\\slash", "two\nlines")


def registry_of(snapshot: Snapshot) -> CollectorRegistry:
    """prometheus_client's own rendering of the snapshot, the reference: `SnapshotCollector` re-renders every
    family at every scrape. `name[]` needs a registry that keeps a collector without declared names."""
    registry = CollectorRegistry(auto_describe=False, **NAMELESS_COLLECTORS)
    registry.register(SnapshotCollector(snapshot))
    return registry


# One write: (kind, which series, value). Gauges and counters per GPU, StatsD counters, gauges and timers with
# tags, so families gain and lose series between scrapes.
WRITES = st.tuples(st.sampled_from(["gpu_gauge", "gpu_counter", "statsd_counter", "statsd_gauge", "timer"]),
                   st.integers(0, 9), st.integers(0, 3))  # repeated values and 0: writes that change nothing
STEPS = st.lists(st.tuples(st.one_of(
    st.lists(WRITES, max_size=6).map(lambda writes: ("update", writes)),
    # Around stale_after (30 s) and forget_after (120 s), so gauges go stale and series are forgotten.
    st.sampled_from([1.0, 10.0, 29.0, 30.0, 31.0, 90.0, 121.0]).map(lambda seconds: ("advance", seconds)),
    st.lists(st.sampled_from(["infrawatch_gpu_utilization_percent", "infrawatch_gpu_xid_errors_total",
                              "infrawatch_job_requests0_total", "infrawatch_job_step_time_seconds_count",
                              "infrawatch_job_step_time_seconds_sum", "infrawatch_job_queue_depth"]),
             min_size=1, max_size=3).map(lambda names: ("names", names)),
), st.booleans()), max_size=25)  # whether the pages are compared after the step: the cache sees several at once


def sample_of(kind: str, which: int, value: int) -> Sample:
    tag = TAGS[which % len(TAGS)]
    if kind == "gpu_gauge":
        return METRICS["GPUUtilization" if which < 5 else "GPUTemperature"].sample(value, GPU=str(which % 3))
    if kind == "gpu_counter":
        return METRICS["GPUXidErrors"].sample(value, GPU=str(which % 3))
    if kind == "statsd_counter":
        return Sample(f"Requests{which % 2}", float(value), COUNT, dimensions(route=tag))
    if kind == "statsd_gauge":
        return Sample("QueueDepth", float(value), NONE, dimensions(queue=tag) if which % 2 else ())
    return Sample("StepTime", float(value), MILLISECONDS, dimensions(model=tag), count=1 + which % 3)


class Counting:
    """prometheus_client's negotiation, counting the families its encoders are handed. `per_accept`: each Accept
    header is a format of its own (prometheus_client 0.20, the declared minimum, negotiates two content types
    only, too few to fill the cache)."""

    def __init__(self, per_accept: bool = False) -> None:
        self.encoded: list[str] = []
        self._per_accept = per_accept

    def negotiate(self, accept: str) -> tuple[Callable[[Any], bytes], str]:
        encoder, content_type = choose_encoder(accept)
        return encoder, f"{content_type}; accept={accept!r}" if self._per_accept else content_type

    def __call__(self, accept: str) -> tuple[Callable[[Any], bytes], str]:
        encoder, content_type = self.negotiate(accept)

        def counted(collector: Any) -> bytes:
            self.encoded.extend(metric.name for metric in collector.collect())
            return encoder(collector)

        return counted, content_type


def scrapes(forget_after: float = 3600.0) -> tuple[FakeClock, Snapshot, Counting, Pages, CollectorRegistry]:
    """A snapshot on a fake clock, its cached pages (counting what they encode), and the reference registry."""
    clock = FakeClock()
    snapshot = Snapshot(stale_after=STALE_AFTER, forget_after=forget_after, monotonic=clock)
    counting = Counting()
    return clock, snapshot, counting, Pages(snapshot, choose=counting), registry_of(snapshot)


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_the_cached_page_is_what_prometheus_client_renders_after_any_updates(
        steps: list[tuple[tuple[str, Any], bool]]) -> None:
    clock, snapshot, _counting, pages, registry = scrapes(FORGET_AFTER)
    for (step, argument), compare in steps:
        if step == "update":
            snapshot.update(sample_of(*write) for write in argument)
        elif step == "advance":
            clock.advance(argument)
        elif NAMELESS_COLLECTORS:  # ?name[]=...: what prometheus_client's restricted registry serves (0.20's: nothing)
            page, _ = pages.render(TEXT, argument)
            assert page == generate_latest(registry.restricted_registry(argument))
        if not compare:
            continue
        assert pages.render(TEXT) == (generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8")
        assert pages.render(OPENMETRICS) == (openmetrics_latest(registry), choose_encoder(OPENMETRICS)[1])
        for accept in OTHER_FORMATS:
            encoder, content_type = choose_encoder(accept)
            assert pages.render(accept) == (encoder(registry), content_type)


def test_the_cache_keeps_the_formats_scraped_last_and_serves_the_others_rendered_afresh() -> None:
    """The scraper names the format (its version and escaping): at most MAX_FORMATS are kept."""
    snapshot = Snapshot(stale_after=STALE_AFTER, monotonic=FakeClock())
    counting = Counting(per_accept=True)
    pages, registry = Pages(snapshot, choose=counting), registry_of(snapshot)
    snapshot.update([*gpus_at(70), Sample("Requests", 1.0, COUNT)])
    formats = [TEXT, OPENMETRICS, *OTHER_FORMATS, "application/openmetrics-text"]
    assert len(formats) == MAX_FORMATS + 1
    for accept in formats:  # the fifth evicts TEXT, the format scraped longest ago
        pages.render(accept)
    pages.render(OPENMETRICS)  # now scraped last
    counting.encoded.clear()
    for accept in formats:
        encoder, content_type = counting.negotiate(accept)
        assert pages.render(accept) == (encoder(registry), content_type)
    # TEXT is rendered afresh and stored, evicting the 1.0.0 text format, rendered afresh in turn, and so on:
    # only OPENMETRICS, scraped last before the loop, is served from the cache.
    assert counting.encoded == 4 * ["infrawatch_gpu_utilization_percent", "infrawatch_job_requests"]


def gpus_at(gpu_value: float) -> list[Sample]:
    return [METRICS["GPUUtilization"].sample(gpu_value, GPU=str(gpu)) for gpu in range(8)]


def test_a_scrape_encodes_only_the_families_that_changed_since_the_last_one() -> None:
    clock, snapshot, counting, pages, registry = scrapes()
    snapshot.update([*gpus_at(70), *(Sample(f"Series{index}", 1.0, COUNT) for index in range(1000))])
    assert pages.render(OPENMETRICS)[0] == openmetrics_latest(registry)
    assert len(counting.encoded) == 1001
    counting.encoded.clear()
    clock.advance(1)
    snapshot.update(gpus_at(71))  # a collection between two StatsD flushes
    assert pages.render(OPENMETRICS)[0] == openmetrics_latest(registry)
    assert pages.render(TEXT)[0] == generate_latest(registry)  # the first text scrape: every family
    assert counting.encoded == ["infrawatch_gpu_utilization_percent", "infrawatch_gpu_utilization_percent",
                                *(f"infrawatch_job_series{index}" for index in range(1000))]
    counting.encoded.clear()
    assert pages.render(OPENMETRICS)[0] == openmetrics_latest(registry)  # nothing changed: nothing encoded
    assert counting.encoded == []


def test_a_series_written_with_nothing_new_keeps_its_familys_text() -> None:
    """An idle StatsD counter is written as 0 at every drain, a GPU's Xid errors as 0 at every sweep, a GPU's
    clocks with the value they had: their families serve what they did. (A gauge that comes back from stale
    with its old value is encoded again: test_a_gauge_going_stale_ends_its_familys_cached_text_without_an_update.)"""
    clock, snapshot, counting, pages, registry = scrapes()

    def write(requests: float, steps: float, gpu: float) -> None:
        snapshot.update([Sample("Requests", requests, COUNT), Sample("StepTime", steps, MILLISECONDS, count=0.0),
                         METRICS["GPUXidErrors"].sample(0, GPU="0"), METRICS["GPUUtilization"].sample(gpu, GPU="0")])

    write(5.0, 100.0, 70.0)
    assert pages.render(TEXT)[0] == generate_latest(registry)
    counting.encoded.clear()
    clock.advance(1)
    write(0.0, 250.0, 70.0)  # a summary sample of weight 0 adds nothing either
    assert pages.render(TEXT)[0] == generate_latest(registry)
    assert counting.encoded == []
    clock.advance(1)
    write(1.0, 250.0, 71.0)
    assert pages.render(TEXT)[0] == generate_latest(registry)
    assert counting.encoded == ["infrawatch_job_requests", "infrawatch_gpu_utilization_percent"]


def test_a_gauge_going_stale_ends_its_familys_cached_text_without_an_update() -> None:
    clock, snapshot, counting, pages, _registry = scrapes()
    snapshot.update([METRICS["GPUUtilization"].sample(70, GPU="0")])
    clock.advance(10)
    snapshot.update([METRICS["GPUUtilization"].sample(71, GPU="1"), Sample("Requests", 1.0, COUNT)])
    assert pages.render(TEXT)[0].decode().splitlines()[2:4] == [
        'infrawatch_gpu_utilization_percent{gpu="0"} 70.0', 'infrawatch_gpu_utilization_percent{gpu="1"} 71.0']
    clock.advance(20)  # GPU 0 was written 30 s ago: still served (stale only after stale_after)
    counting.encoded.clear()
    assert pages.render(TEXT)[0].decode().splitlines()[2:4] == [
        'infrawatch_gpu_utilization_percent{gpu="0"} 70.0', 'infrawatch_gpu_utilization_percent{gpu="1"} 71.0']
    assert counting.encoded == []
    clock.advance(1)  # GPU 0 is stale, GPU 1 is not
    assert [line for line in pages.render(TEXT)[0].decode().splitlines() if line.startswith("infrawatch_gpu")] == [
        'infrawatch_gpu_utilization_percent{gpu="1"} 71.0']
    assert counting.encoded == ["infrawatch_gpu_utilization_percent"]
    clock.advance(10)  # both stale: the family is gone, the counter stays
    assert pages.render(TEXT)[0].decode().splitlines() == [
        "# HELP infrawatch_job_requests_total StatsD counter Requests from jobs on this host.",
        "# TYPE infrawatch_job_requests_total counter", "infrawatch_job_requests_total 1.0"]
    snapshot.update([METRICS["GPUUtilization"].sample(70, GPU="0")])  # the same value as before it went stale
    assert [line for line in pages.render(TEXT)[0].decode().splitlines() if line.startswith("infrawatch_gpu")] == [
        'infrawatch_gpu_utilization_percent{gpu="0"} 70.0']


def test_a_scrape_that_read_the_clock_earlier_is_not_served_a_later_scrapes_staleness() -> None:
    """Scrapes run concurrently and read the clock in any order: the one with the earlier cutoff still
    serves the gauge another one found stale."""
    clock, snapshot, _counting, pages, registry = scrapes()
    snapshot.update([METRICS["GPUUtilization"].sample(70, GPU="0"), Sample("Requests", 1.0, COUNT)])
    clock.advance(31)
    assert b"gpu_utilization" not in pages.render(TEXT)[0]
    clock.now -= 2  # the next scrape's clock reading was taken first
    page = pages.render(TEXT)[0]
    assert page == generate_latest(registry)
    assert b'infrawatch_gpu_utilization_percent{gpu="0"} 70.0' in page


def test_a_family_forgotten_and_written_again_is_rendered_again() -> None:
    """A version counted per family would start again after the forget sweep and match the old cached text;
    versions are the snapshot's update count, never reused."""
    clock, snapshot, _counting, pages, _registry = scrapes(FORGET_AFTER)
    snapshot.update([Sample("Requests", 5.0, COUNT)])
    assert pages.render(TEXT)[0].endswith(b"infrawatch_job_requests_total 5.0\n")
    clock.advance(FORGET_AFTER + 1)
    snapshot.update([Sample("Other", 1.0, COUNT)])  # the sweep forgets Requests; no scrape sees that
    assert [entry.exposed.name for entry in snapshot.series()] == ["infrawatch_job_other"]
    snapshot.update([Sample("Requests", 2.0, COUNT)])
    assert pages.render(TEXT)[0].endswith(b"infrawatch_job_requests_total 2.0\n")


def test_a_family_that_loses_series_at_the_forget_sweep_is_rendered_again() -> None:
    clock, snapshot, _counting, pages, _registry = scrapes(FORGET_AFTER)
    snapshot.update([Sample("Requests", 5.0, COUNT, dimensions(route="/a"))])
    clock.advance(60)
    snapshot.update([Sample("Requests", 1.0, COUNT, dimensions(route="/b"))])
    assert pages.render(TEXT)[0].decode().splitlines()[2:] == [
        'infrawatch_job_requests_total{route="/a"} 5.0', 'infrawatch_job_requests_total{route="/b"} 1.0']
    clock.advance(61)
    snapshot.update([])  # the sweep: /a was written 121 s ago, /b 61 s ago
    assert pages.render(TEXT)[0].decode().splitlines()[2:] == ['infrawatch_job_requests_total{route="/b"} 1.0']


def test_name_filters_as_prometheus_client_does_including_part_of_a_summary() -> None:
    """The old endpoint served nothing for `?name[]=`: its registry knew no names (no describe)."""
    snapshot = Snapshot(stale_after=STALE_AFTER, monotonic=FakeClock())
    pages = Pages(snapshot)
    snapshot.update([METRICS["GPUUtilization"].sample(70, GPU="0"), METRICS["GPUXidErrors"].sample(2, GPU="0"),
                     Sample("StepTime", 500.0, MILLISECONDS, dimensions(model="bert"))])
    pages.render(OPENMETRICS)  # fills the cache the filtered scrapes read
    page, _ = pages.render(OPENMETRICS, ["infrawatch_gpu_xid_errors_total", "infrawatch_job_step_time_seconds_sum"])
    assert page.decode().splitlines() == [
        "# HELP infrawatch_gpu_xid_errors Critical Xid errors reported by the driver.",
        "# TYPE infrawatch_gpu_xid_errors counter",
        'infrawatch_gpu_xid_errors_total{gpu="0"} 2.0',
        "# HELP infrawatch_job_step_time_seconds StatsD timer StepTime, in seconds.",
        "# TYPE infrawatch_job_step_time_seconds summary",
        'infrawatch_job_step_time_seconds_sum{model="bert"} 0.5',
        "# EOF",
    ]
    assert pages.render(TEXT, ["infrawatch_gpu_xid_errors"])[0] == b""  # the family's name is no sample's
    assert pages.render(OPENMETRICS)[0] == openmetrics_latest(registry_of(snapshot))


def test_an_update_landing_during_a_scrape_is_not_in_that_page() -> None:
    """The encoder runs after the scrape read its view: an update it makes is one that lands mid-scrape, at a
    set place, without threads. Updates build new families, so the page is the batch the scrape read."""
    snapshot = Snapshot(stale_after=STALE_AFTER, monotonic=FakeClock())
    registry = registry_of(snapshot)
    landed: list[int] = []

    def choose(accept: str) -> tuple[Callable[[Any], bytes], str]:  # once per scrape
        encoder, content_type = choose_encoder(accept)
        first = [len(landed) < 2]

        def interrupted(collector: Any) -> bytes:
            if first[0] and list(collector.collect()):  # at the first family of the first two scrapes
                first[0] = False
                landed.append(len(landed) + 2)
                snapshot.update([*gpus_at(landed[-1]), Sample("Requests", 1.0, COUNT)])
            return encoder(collector)

        return interrupted, content_type

    pages = Pages(snapshot, choose=choose)
    snapshot.update([*gpus_at(1), Sample("Requests", 1.0, COUNT)])
    for gpus, requests in ((1, 1), (2, 2), (3, 3)):  # the first two scrapes miss the update made during them
        page = pages.render(TEXT)[0].decode().splitlines()
        assert [line.rsplit(" ", 1)[1] for line in page if not line.startswith("#")] == [
            f"{gpus}.0"] * 8 + [f"{requests}.0"]
    assert pages.render(TEXT)[0] == generate_latest(registry)


def test_concurrent_scrapes_each_serve_one_batch_while_updates_run() -> None:
    """Every batch v sets the 8 GPUs to v and adds 1 to 8 Xid counters; every 10th adds 1 to 100 StatsD
    counters (a flush). Each page, whatever it took from the cache, must show one batch: GPUs at v, Xid
    totals v, StatsD totals v // 10. The writer waits, at every 25th batch, for a page of that batch, so
    the scrapes interleave with the writes without any sleep."""
    snapshot = Snapshot(stale_after=STALE_AFTER, monotonic=FakeClock())
    pages = Pages(snapshot)
    batches, milestones = 500, set(range(25, 501, 25))
    seen: list[int] = []
    progress = threading.Condition()
    done = threading.Event()
    problems: list[str] = []

    def scraper(accept: str) -> None:
        while not done.is_set():
            page = pages.render(accept)[0].decode()
            values = [line.rsplit(" ", 1) for line in page.splitlines() if line.startswith("infrawatch_")]
            gpus = [float(value) for name, value in values if name.startswith("infrawatch_gpu_")]
            jobs = [float(value) for name, value in values if name.startswith("infrawatch_job_")]
            if not gpus:
                continue  # before the first batch
            batch = int(gpus[0])
            if gpus != [batch] * 16 or jobs != [batch // 10] * (100 if batch >= 10 else 0):
                problems.append(page)
            with progress:
                seen.append(batch)
                progress.notify_all()

    threads = [threading.Thread(target=scraper, args=(accept,)) for accept in (TEXT, OPENMETRICS, OPENMETRICS)]
    for thread in threads:
        thread.start()
    try:
        for batch in range(1, batches + 1):
            samples = [*gpus_at(batch), *(METRICS["GPUXidErrors"].sample(1, GPU=str(g)) for g in range(8))]
            if batch % 10 == 0:
                samples += [Sample(f"Series{index}", 1.0, COUNT) for index in range(100)]
            snapshot.update(samples)
            if batch in milestones:
                with progress:
                    assert progress.wait_for(lambda: max(seen, default=0) >= batch, timeout=60)  # noqa: B023
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert problems == []
    assert milestones <= set(seen)
    assert pages.render(OPENMETRICS)[0] == openmetrics_latest(registry_of(snapshot))


@pytest.fixture(scope="module")
def both() -> Iterator[tuple[Snapshot, int, int]]:
    """The agent's endpoint and prometheus_client's own server, serving one snapshot (for the module: each
    server takes up to half a second to shut down, its poll interval)."""
    snapshot = Snapshot(stale_after=STALE_AFTER, monotonic=FakeClock())
    snapshot.update([METRICS["GPUUtilization"].sample(70, GPU="0"), METRICS["GPUXidErrors"].sample(2, GPU="0"),
                     Sample("StepTime", 500.0, MILLISECONDS, dimensions(model='say "hi"'))])
    ours = Endpoint(f"127.0.0.1:{free_port()}", snapshot)
    server, thread = start_http_server(0, "127.0.0.1", registry=registry_of(snapshot))
    yield snapshot, ours.port, server.server_port
    ours.close()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def ask(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        answer = {key: value for key, value in response.getheaders() if key != "Date"}  # the second it was sent
        if answer.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)  # gzip's header holds the time it was compressed
            del answer["Content-Length"]
        return response.status, answer, body
    finally:
        connection.close()


NAMED = "/metrics?name[]=infrawatch_gpu_xid_errors_total&name[]=infrawatch_job_step_time_seconds_count"
# Answered as prometheus_client 0.26 answers them; 0.20, the declared minimum, serves the page to any method and
# nothing to `name[]` for a collector without declared names. Ours answer so with every version.
NEWER_ANSWERS = {
    ("GET", NAMED): (200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8", "Content-Length": "361"}, (
        b"# HELP infrawatch_gpu_xid_errors_total Critical Xid errors reported by the driver.\n"
        b"# TYPE infrawatch_gpu_xid_errors_total counter\n"
        b'infrawatch_gpu_xid_errors_total{gpu="0"} 2.0\n'
        b"# HELP infrawatch_job_step_time_seconds StatsD timer StepTime, in seconds.\n"
        b"# TYPE infrawatch_job_step_time_seconds summary\n"
        b'infrawatch_job_step_time_seconds_count{model="say \\"hi\\""} 1.0\n')),
    ("OPTIONS", "/metrics"): (200, {"Allow": "OPTIONS,GET", "Content-Length": "0"}, b""),
    ("POST", "/metrics"): (405, {"Allow": "OPTIONS,GET", "Content-Length": "56"},
                           b"# HTTP 405 Method Not Allowed: POST; use OPTIONS or GET\n"),
}
# The installed prometheus_client answers so too (CI runs the newest and 0.20; both features are in the newest).
ANSWERS_AS_OURS = bool(NAMELESS_COLLECTORS)


@pytest.mark.parametrize(("method", "path"), list(NEWER_ANSWERS))
def test_the_endpoint_filters_names_and_refuses_methods_as_newer_prometheus_clients_do(
        both: tuple[Snapshot, int, int], method: str, path: str) -> None:
    _, ours, _ = both
    status, headers, body = ask(ours, method, path, {})
    headers.pop("Server")  # wsgiref's and this Python's version
    assert (status, headers, body) == NEWER_ANSWERS[(method, path)]


@pytest.mark.parametrize(("method", "path", "headers"), [
    ("GET", "/metrics", {}),
    ("GET", "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"}),
    ("GET", "/metrics", {"Accept": "text/plain; version=1.0.0; escaping=allow-utf-8", "Accept-Encoding": "br, gzip"}),
    ("GET", "/", {"Accept": "text/plain;q=0.5,application/openmetrics-text;q=1"}),
    ("GET", "/favicon.ico", {}),
    *([(method, path, {}) for method, path in NEWER_ANSWERS] if ANSWERS_AS_OURS else []),
])
def test_the_endpoint_answers_as_prometheus_clients_own_server(both: tuple[Snapshot, int, int], method: str,
                                                               path: str, headers: dict[str, str]) -> None:
    _, ours, theirs = both
    assert ask(ours, method, path, headers) == ask(theirs, method, path, headers)


def test_gzip_is_served_when_asked_for_and_round_trips(both: tuple[Snapshot, int, int]) -> None:
    snapshot, ours, _ = both
    connection = http.client.HTTPConnection("127.0.0.1", ours, timeout=5)
    try:
        connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert (response.getheader("Content-Encoding"), response.getheader("Content-Length")) == ("gzip", str(len(body)))
    assert gzip.decompress(body) == generate_latest(registry_of(snapshot))
    # At level 1, not prometheus_client's 9: from byte 8 on (after the time it was compressed) the bytes gzip writes
    # at that level, XFL (4: the fastest) included.
    assert body[8:] == gzip.compress(gzip.decompress(body), compresslevel=1)[8:]
    status, answer, plain = ask(ours, "GET", "/metrics", {})
    assert (status, "Content-Encoding" in answer, plain) == (200, False, gzip.decompress(body))
