"""The Prometheus endpoint's cost: scrape latency, and the agent's CPU with and without one scrape a second.

Runs the real `infrawatch-agent` (1 s collection, eight simulated H100s) twice for --seconds each, with a sender
process keeping 1,000 StatsD series alive (`--series`; one counter line per series per second): once with
`[prometheus]` off, once on with a scraper asking `/metrics` every second as a Prometheus server asks (its Accept
header, OpenMetrics first, and gzip; `--scrape text`: the text format uncompressed, as this bench asked before
2026-12-07). Every PutMetricData goes over HTTP to
a moto server on loopback, as production sends to CloudWatch: botocore validates, serializes, gzips and signs
each request (`--dry-run`: printed instead, as this bench did before 2026-12-07). Latency is the scraper's wall
time per request, from connect to the last byte.

The agent's CPU is its own process's (utime + stime in /proc/<pid>/stat, which psutil reads; the sender and
the scraper run in this process, moto in one of its own). A measured window is whole publish intervals (60 s):
the flush, which packs and sends every datum of the minute, is a large share of the agent's CPU, and a 30 s
window held either one flush or none. `--runs` alternates off and on runs and reports medians, beside the
1-minute load average at each run's start: the machine's other work slows the agent too.

    .venv/bin/python bench/prometheus_scrape.py [--seconds 60] [--runs 3] [--dry-run]
"""

from __future__ import annotations

import argparse
import functools
import gc
import gzip
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import boto3
import psutil

from agent.cli import build_agent, build_collectors, close_collectors, freeze_heap
from agent.collectors import Collector
from agent.config import parse
from agent.dryrun import PrintingClient
from agent.fleet import DimensionPlan
from agent.logs import configure
from agent.prometheus import GZIP_LEVEL, Pages, Snapshot
from agent.publisher import Publisher
from agent.samples import Sample
from agent.selfstats import AgentStats
from agent.statsd.collector import StatsdCollector
from agent.statsd.service import flush_interval

SERIES = 1000
GPUS = 8
GPU_SWEEP = "GPU sweep (8 fake H100s)"
TEXT = "scrape rendering, text format (the families that changed, encoded by prometheus_client)"
OPENMETRICS = "scrape rendering, OpenMetrics (the families that changed, encoded by prometheus_client)"
GZIP = "scrape gzip (the page, as a Prometheus server asks)"
ASIDE = "(aside, not in the total) the other scrape's rendering"


class Scrape(NamedTuple):
    """How the scraper asks, what that is called in the report, and the breakdown's parts that serve it."""

    headers: dict[str, str]
    described: str
    parts: tuple[str, ...]


# `prometheus`: what a Prometheus server sends with every scrape (prometheus/prometheus scrape/scrape.go,
# acceptHeader for OpenMetrics 1.0.0 and the text format, and Accept-Encoding: gzip); `text`: nothing.
SCRAPES = {
    "prometheus": Scrape(
        {"Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                   "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "Accept-Encoding": "gzip"},
        "OpenMetrics, gzip'd, as a Prometheus server asks", (OPENMETRICS, GZIP)),
    "text": Scrape({}, "the text format, uncompressed", (TEXT,)),
}
STATSD_DRAIN = "StatsD drain (1,000 series to 2,000 samples every 10 s)"
DRY_RUN_SINK = "dry-run sink (prints each request as JSON)"
PACKING = "flush: packing (batches by count, size bound, and botocore's measure past the bound)"
SEND = "sending (botocore: validation, serialization, gzip, signing, HTTP to moto)"
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
T = TypeVar("T")
PUBLISH_INTERVAL = 60  # seconds; the agent's default, written in the config so the window can follow it


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def datagrams(series: int = SERIES) -> list[bytes]:
    """One line per series, 50 lines to a datagram, as a batching client sends them."""
    lines = [f"bench.series{index}:1|c".encode() for index in range(series)]
    return [b"\n".join(lines[start:start + 50]) for start in range(0, series, 50)]


def send_statsd(address: tuple[str, int], stop: threading.Event, series: int) -> None:
    """Every series once a second."""
    lines = datagrams(series)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        while not stop.wait(1.0):
            for datagram in lines:
                sender.sendto(datagram, address)


def scrape_latencies(url: str, stop: threading.Event, latencies: list[float], headers: dict[str, str],
                     every: float = 1.0) -> None:
    while not stop.wait(every):
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
                response.read()
        except OSError:
            continue
        latencies.append((time.perf_counter() - start) * 1000)


class MotoServer:
    """CloudWatch for the agent to send to: a moto server in a process of its own, so its CPU is not the agent's."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(self.port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.1)

    def reset(self) -> None:
        """moto keeps every datapoint: each run starts with none."""
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10).close()

    def client(self) -> Any:
        return boto3.client("cloudwatch", endpoint_url=self.url, region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
                            aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"])

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=30)


def measured_seconds(requested: float) -> int:
    """Whole publish intervals, at least `requested`: every window holds the same number of flushes."""
    return max(1, math.ceil(requested / PUBLISH_INTERVAL)) * PUBLISH_INTERVAL


class Run(NamedTuple):
    cpu: float  # agent CPU, % of one core
    latencies: list[float]  # ms
    samples: int  # in the last scrape
    load: float  # 1-minute load average at the start


def run(seconds: float, prometheus: bool, series: int = SERIES, moto: MotoServer | None = None,
        scrape: str = "prometheus", scrape_every: float = 1.0) -> Run:
    """`moto`: where the agent sends its requests; None: the dry-run sink. `scrape`: how the scraper asks
    (SCRAPES), every `scrape_every` seconds."""
    statsd_port, metrics_port = free_port(socket.SOCK_DGRAM), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "agent.toml"
        config.write_text(
            "[ec2]\nidentity = false\n[spool]\nenabled = false\n[collect]\ninterval = 1\n"
            f"[publish]\ninterval = {PUBLISH_INTERVAL}\n"
            f'[statsd]\naddress = "127.0.0.1:{statsd_port}"\nmax_series = {series + 10}\n'
            f'[prometheus]\nenabled = {"true" if prometheus else "false"}\naddress = "127.0.0.1:{metrics_port}"\n'
        )
        command = [sys.executable, "-m", "agent", "--fake-gpus", str(GPUS), "--config", str(config)]
        env = dict(os.environ)
        if moto is None:
            command.append("--dry-run")
        else:
            moto.reset()
            env.update(FAKE_AWS, AWS_ENDPOINT_URL_CLOUDWATCH=moto.url)
        agent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        stop = threading.Event()
        latencies: list[float] = []
        threads = [threading.Thread(target=send_statsd, args=(("127.0.0.1", statsd_port), stop, series))]
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        if prometheus:
            threads.append(threading.Thread(target=scrape_latencies,
                                            args=(url, stop, latencies, SCRAPES[scrape].headers, scrape_every)))
        try:
            time.sleep(5)  # startup and the first collections: not part of the steady state measured
            for thread in threads:
                thread.start()
            time.sleep(3)
            latencies.clear()
            load = os.getloadavg()[0]
            start_cpu, start = cpu_seconds(agent.pid), time.monotonic()
            time.sleep(seconds)
            cpu = (cpu_seconds(agent.pid) - start_cpu) / (time.monotonic() - start) * 100
            served = 0
            if prometheus:
                with urllib.request.urlopen(url, timeout=5) as response:
                    served = sum(1 for line in response.read().decode().splitlines() if not line.startswith("#"))
        finally:
            stop.set()
            for thread in threads:
                if thread.is_alive():
                    thread.join()
            agent.terminate()
            agent.wait(timeout=30)
    return Run(cpu, latencies, served, load)


class _Spent:
    """CPU seconds of this thread (time.thread_time) spent in each part."""

    def __init__(self) -> None:
        self.parts: defaultdict[str, float] = defaultdict(float)

    def timed(self, part: str, call: Callable[[], T]) -> T:
        start = time.thread_time()
        try:
            return call()
        finally:
            self.parts[part] += time.thread_time() - start


class _TimedCollector:
    def __init__(self, name: str, collect: Callable[[], list[Sample]], part: str, spent: _Spent) -> None:
        self.name, self._collect, self._part, self._spent = name, collect, part, spent

    def collect(self) -> list[Sample]:
        return self._spent.timed(self._part, self._collect)


class _TimedSnapshot(Snapshot):
    def __init__(self, spent: _Spent) -> None:
        super().__init__(stale_after=3 * PUBLISH_INTERVAL)
        self._spent = spent

    def update(self, samples: Iterable[Sample]) -> None:
        self._spent.timed("Prometheus snapshot update", lambda: super(_TimedSnapshot, self).update(samples))


class _TimedSink:
    """The agent's client, its calls timed: a real one sending to moto, or the dry-run printer."""

    def __init__(self, spent: _Spent, client: Any, part: str) -> None:
        self._spent, self._client, self._part = spent, client, part
        self.meta = getattr(client, "meta", None)  # the publisher measures requests with the client's own model

    def put_metric_data(self, **request: Any) -> Any:
        return self._spent.timed(self._part, lambda: self._client.put_metric_data(**request))


class _SimulatedClock:
    """Monotonic and wall clocks that move one second per simulated second, each collection 0-3 ms late as the
    real loop's ticks are (so a StatsD window's per-second rate differs from window to window, as it does in the
    agent), starting just past a minute's start."""

    def __init__(self, seed: int = 0) -> None:
        self._late = random.Random(seed)
        self._mono_start, self._wall_start = 1000.0, 1_790_000_040.25
        self.mono, self.wall = self._mono_start, self._wall_start

    def at(self, second: int) -> None:
        late = self._late.uniform(0.0, 0.003)
        self.mono, self.wall = self._mono_start + second + late, self._wall_start + second + late

    def monotonic(self) -> float:
        return self.mono

    def wall_clock(self) -> float:
        return self.wall


def receive(statsd: StatsdCollector, datagrams: list[bytes]) -> None:
    for datagram in datagrams:
        statsd.receive(datagram)


def components(seconds: int, moto: MotoServer | None = None, scrape: str = "prometheus") -> dict[str, float]:
    """CPU ms per second of each part of the agent's work, run in this process on the bench's workload: the
    same collectors and agent the real one builds, `seconds` simulated seconds of one collection, 1,000 StatsD
    lines and one text-format scrape each (and one OpenMetrics scrape, timed apart), one flush per publish
    interval. Not measured here: the HTTP server (thread per request, request parsing, the socket write) and
    the threads that wait (Xid events, statvfs)."""
    configure("warning", stream=sys.stderr)  # stdout is the report
    seconds = measured_seconds(seconds)  # whole publish intervals: as many flushes as a real minute has
    spent = _Spent()
    clock = _SimulatedClock()  # the StatsD windows and the aggregator's minutes follow the simulated seconds
    config = parse({"collect": {"interval": 1}, "publish": {"interval": PUBLISH_INTERVAL},
                    "prometheus": {"enabled": True}})
    host = build_collectors(config, fake_gpus=GPUS)
    statsd = StatsdCollector(max_series=SERIES + 10, flush_interval=flush_interval(config),
                             monotonic=clock.monotonic, wall_clock=clock.wall_clock)
    collectors: list[Collector] = [
        _TimedCollector(c.name, c.collect, GPU_SWEEP if c.name == "gpu" else "host collectors", spent) for c in host]
    collectors.append(_TimedCollector("statsd", statsd.collect, STATSD_DRAIN, spent))
    snapshot = _TimedSnapshot(spent)
    publishers: list[Publisher] = []  # built with the agent; submit runs after
    if moto is None:
        sink = _TimedSink(spent, PrintingClient(open(os.devnull, "w")), DRY_RUN_SINK)  # noqa: SIM115 (a bench)
    else:
        moto.reset()
        sink = _TimedSink(spent, moto.client(), SEND)
    agent, publisher = build_agent(
        config, sink, AgentStats(), collectors, DimensionPlan(identity=None, hostname="bench"),
        submit=lambda datums: spent.timed("publish", lambda: publishers[0].publish(datums)), snapshot=snapshot,
        wall_clock=clock.wall_clock)
    publishers.append(publisher)
    freeze_heap()  # as the agent does once it is built
    pages = Pages(snapshot)  # the endpoint's renderer: families encoded when they change, kept bytes otherwise
    lines = datagrams()
    try:
        for second in range(PUBLISH_INTERVAL + seconds):
            if second == PUBLISH_INTERVAL:  # the first minute warms up: caches, series admitted, first flush
                agent.flush()
                spent.parts.clear()
            spent.timed("StatsD parsing (1,000 lines)", lambda: receive(statsd, lines))
            clock.at(second + 1)
            spent.timed("collection cycle", agent.collect)
            if (second + 1) % PUBLISH_INTERVAL == 0 and second >= PUBLISH_INTERVAL:
                spent.timed("flush", agent.flush)
            page, _ = spent.timed(OPENMETRICS, lambda: pages.render(SCRAPES["prometheus"].headers["Accept"]))
            spent.timed(GZIP, functools.partial(gzip.compress, page, compresslevel=GZIP_LEVEL))  # as the endpoint
            spent.timed(TEXT, lambda: pages.render(""))
    finally:
        close_collectors(host)
        gc.unfreeze()
    parts = {part: cpu * 1000 / seconds for part, cpu in spent.parts.items()}
    collected = ("host collectors", GPU_SWEEP, STATSD_DRAIN, "Prometheus snapshot update")
    parts["naming and aggregation"] = parts.pop("collection cycle") - sum(parts.get(part, 0.0) for part in collected)
    publish = parts.pop("publish")
    parts["flush: draining the minute's datums"] = parts.pop("flush") - publish
    parts[PACKING] = publish - parts[DRY_RUN_SINK if moto is None else SEND]
    # The scrape asked for is in the total; the other one, rendered beside it, is set aside.
    aside = sum(parts.pop(part) for name, other in SCRAPES.items() if name != scrape for part in other.parts)
    return {**parts, ASIDE: aside}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0,
                        help=f"measured seconds per run, rounded up to whole publish intervals ({PUBLISH_INTERVAL} s)")
    parser.add_argument("--series", type=int, default=SERIES,
                        help="StatsD series kept alive by the sender, one line each a second (0: no StatsD traffic); "
                        "the breakdown by component always has 1,000")
    parser.add_argument("--runs", type=int, default=1, help="runs of each kind, alternating off and on")
    parser.add_argument("--component-seconds", type=int, default=600,
                        help="simulated seconds of the breakdown by component, rounded up as --seconds (0: none)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the requests instead of sending them to moto (the bench before 2026-12-07)")
    parser.add_argument("--scrape-every", type=float, default=1.0,
                        help="seconds between two scrapes (the breakdown by component always scrapes every second)")
    parser.add_argument("--scrape", choices=sorted(SCRAPES), default="prometheus",
                        help="prometheus: OpenMetrics and gzip, as a Prometheus server asks; text: the text format, "
                        "uncompressed (the bench before 2026-12-07)")
    args = parser.parse_args()
    seconds = measured_seconds(args.seconds)
    offs: list[Run] = []
    ons: list[Run] = []
    moto = None if args.dry_run else MotoServer()
    try:
        for _ in range(args.runs):
            offs.append(run(seconds, prometheus=False, series=args.series, moto=moto, scrape=args.scrape))
            ons.append(run(seconds, prometheus=True, series=args.series, moto=moto, scrape=args.scrape,
                           scrape_every=args.scrape_every))
        parts = components(args.component_seconds, moto, args.scrape) if args.component_seconds else {}
    finally:
        if moto is not None:
            moto.close()
    latencies = sorted(latency for on in ons for latency in on.latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    off_cpu, on_cpu = statistics.median(r.cpu for r in offs), statistics.median(r.cpu for r in ons)
    extra = statistics.median(on.cpu - off.cpu for off, on in zip(offs, ons, strict=True))

    def each(runs: list[Run]) -> str:
        return ", ".join(f"{r.cpu:.2f}" for r in runs)

    def loads(runs: list[Run]) -> str:
        return ", ".join(f"{r.load:.1f}" for r in runs)

    print(f"## Prometheus scrape, {args.series:,} StatsD series ({args.runs} × {seconds:.0f} s per endpoint setting, "
          f"{os.cpu_count()} cores)")
    print()
    print(f"{GPUS} simulated H100s, {args.series:,} live StatsD series, 1 s collection, {PUBLISH_INTERVAL} s publish "
          f"interval, {'dry-run sink' if args.dry_run else 'requests sent to a moto server on loopback'}; "
          f"{ons[-1].samples:,} samples per scrape, {SCRAPES[args.scrape].described}. Agent CPU from /proc for its own "
          "process; medians of the runs, each run's value in brackets.")
    print()
    print("| Endpoint | Agent CPU, % of one core | Load average at start | Scrapes | Scrape latency median | p99 |")
    print("|---|---|---|---|---|---|")
    print(f"| off | {off_cpu:.2f} % ({each(offs)}) | {loads(offs)} | — | — | — |")
    print(f"| on, a scrape every {args.scrape_every:g} s | {on_cpu:.2f} % ({each(ons)}) | {loads(ons)} "
          f"| {len(latencies)} | {statistics.median(latencies):.1f} ms | {p99:.1f} ms |")
    print()
    print(f"Scraping every {args.scrape_every:g} s costs {extra:+.2f} points of one core (median of the paired runs). "
          "Targets: scrape median < 10 ms; the agent's CPU at 1 s collection ≤ 0.5 % of one core.")
    if parts:
        aside = parts.pop(ASIDE)
        print()
        print(f"Where the CPU goes, by component ({measured_seconds(args.component_seconds)} simulated seconds in "
              f"this process, the same collectors, agent, workload and a scrape a second "
              f"({SCRAPES[args.scrape].described}); CPU time of the "
              "thread that does each part):")
        print()
        print("| Part | CPU, ms per second | % of one core |")
        print("|---|---|---|")
        for part, ms in sorted(parts.items(), key=lambda item: -item[1]):
            print(f"| {part} | {ms:.2f} | {ms / 10:.3f} % |")
        total = sum(parts.values())
        print(f"| **total** | **{total:.2f}** | **{total / 10:.3f} %** |")
        print()
        other = next(name for name in SCRAPES if name != args.scrape)
        print(f"Not in it: the HTTP server (a thread per request, the request, the socket write), socket reads, "
              f"waiting threads and the interpreter's own overhead. Served with --scrape {other} "
              f"({SCRAPES[other].described}), the page would cost {aside:.2f} ms a second instead (its own cache, "
              "rendered beside).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
