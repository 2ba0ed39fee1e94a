"""A 10-minute CloudWatch outage at 1 s collection on this machine's real host metrics, in compressed time.

How it is measured: the agent's parts are wired as `run_forever` wires them (the publisher hands what
it cannot deliver to the spool, a Replayer at the default 5 requests/s) but driven synchronously on
injected clocks: the wall clock moves 1 s per collection, the monotonic clock moves with it and with
every retry backoff, so ten minutes of agent time take seconds. The collectors are the real ones from
the default config, reading this machine. Every PutMetricData is real HTTP to a moto server on loopback
behind tests/faultproxy.py, which answers 503 for the whole outage and forwards afterwards. The run goes
on until the spool is empty; then every series is read back from moto with GetMetricStatistics, and
lost = collected − Σ SampleCount read back. Catch-up is agent time from the end of the outage to an empty
spool. Spool size, at the end of the outage: the pages in use (what spool.max_bytes bounds) and the
database and WAL files on disk (the WAL holds every page written since the last checkpoint, up to
SQLite's 1,000-page auto-checkpoint, and is cut back to 4 MiB after it).

    .venv/bin/python bench/outage.py [--runs 3] [--minutes 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
import structlog
from botocore.config import Config
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.faultproxy

from agent.aggregate import Aggregator, Datum  # noqa: E402
from agent.cli import build_collectors, close_collectors, retry_deadline  # noqa: E402
from agent.config import load  # noqa: E402
from agent.loop import Agent  # noqa: E402
from agent.publisher import Publisher  # noqa: E402
from agent.replay import Replayer  # noqa: E402
from agent.selfstats import AgentStats  # noqa: E402
from agent.spool import Spool  # noqa: E402
from tests.conftest import FAKE_AWS_ENV, free_port  # noqa: E402
from tests.faultproxy import Fault, FaultProxy  # noqa: E402

NAMESPACE = "InfraWatch"
PUBLISH_INTERVAL = 10

HOST = (("InstanceId", "i-0123456789abcdef0"),)  # a fixed identity: no IMDS lookup in a bench


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def pages_in_use(path: Path) -> int:
    """What spool.max_bytes bounds: (page_count − freelist_count) × page_size, read through the WAL."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        size, count, free = (connection.execute(f"PRAGMA {name}").fetchone()[0]
                             for name in ("page_size", "page_count", "freelist_count"))
    finally:
        connection.close()
    return int(size * (count - free))


def client_for(endpoint: str) -> Any:
    return boto3.client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=15))


def one_run(moto_url: str, minutes: int, spool_dir: Path) -> dict[str, float]:
    config = load(None)
    start = float((int(time.time()) // 60 - 2 * minutes - 5) * 60)
    wall, monotonic = Clock(start), Clock(0.0)
    stats = AgentStats()
    spool = Spool(spool_dir / "spool.db", namespace=NAMESPACE, stats=stats, wall_clock=wall)
    flushed: list[Datum] = []
    with FaultProxy(moto_url, clock=wall) as proxy:
        publisher = Publisher(client_for(proxy.url), NAMESPACE, stats=stats,
                              retry_deadline=retry_deadline(PUBLISH_INTERVAL), sleep=monotonic.sleep,
                              monotonic=monotonic, on_undeliverable=spool.put)
        replayer = Replayer(spool, publisher, requests_per_second=config.spool.replay_requests_per_second,
                            monotonic=monotonic)

        def submit(datums: Sequence[Datum]) -> None:
            flushed.extend(datums)
            publisher.publish(datums)

        collectors = build_collectors(config)
        agent = Agent(collectors=collectors, aggregator=Aggregator(on_drop=stats.add_dropped), stats=stats,
                      submit=submit, host_dimensions=HOST, wall_clock=wall,
                      gauges=[spool.samples])
        outage_end = start + minutes * 60
        proxy.inject(Fault.UNAVAILABLE, start=start, end=outage_end + 1)  # the flush at the last second too
        replay_requests = 0
        spool_datums = 0
        spool_bytes = wal_bytes = used_bytes = 0
        began = time.perf_counter()
        caught_up_at = None
        while caught_up_at is None:
            agent.collect()
            wall.sleep(1.0)
            if (wall.now - start) % PUBLISH_INTERVAL == 0:
                agent.flush()
            if wall.now == outage_end + 1:
                spool_datums = spool.datums
                spool_bytes = (spool_dir / "spool.db").stat().st_size
                wal_bytes = (spool_dir / "spool.db-wal").stat().st_size
                used_bytes = pages_in_use(spool_dir / "spool.db")
            second_ends = monotonic.now + 1.0
            while (due := replayer.due_in()) is not None and monotonic.now + due < second_ends:
                monotonic.sleep(due)
                replayer.replay_one()
                replay_requests += 1
            monotonic.now = max(monotonic.now, second_ends)
            if wall.now > outage_end + 1 and spool.datums == 0:
                caught_up_at = wall.now
        agent.flush()  # what the last seconds collected
        elapsed = time.perf_counter() - began
        close_collectors(collectors)
    spool.close()
    moto = client_for(moto_url)
    series = {(d.name, d.dimensions) for d in flushed}
    read_back = 0.0
    for name, dims in series:
        points = moto.get_metric_statistics(
            Namespace=NAMESPACE, MetricName=name, Dimensions=[{"Name": k, "Value": v} for k, v in dims],
            StartTime=dt.datetime.fromtimestamp(start - 60, dt.timezone.utc),
            EndTime=dt.datetime.fromtimestamp(wall.now + 120, dt.timezone.utc), Period=60,
            Statistics=["SampleCount"])["Datapoints"]
        read_back += sum(p["SampleCount"] for p in points)
    return {
        "series": len(series), "collected": stats.collected, "published": stats.published,
        "read_back": read_back, "lost": stats.collected - read_back, "dropped": sum(stats.dropped.values()),
        "spool_datums": spool_datums, "spool_kib": spool_bytes / 1024, "wal_kib": wal_bytes / 1024,
        "used_kib": used_bytes / 1024, "catch_up_s": caught_up_at - outage_end,
        "replay_requests": replay_requests, "wall_s": elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--minutes", type=int, default=10)
    args = parser.parse_args()
    os.environ.update(FAKE_AWS_ENV)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    runs = []
    try:
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as spool_dir:
                runs.append(one_run(f"http://127.0.0.1:{port}", args.minutes, Path(spool_dir)))
            # moto keeps every datapoint in one backend per process: each run starts with it empty
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST"))
    finally:
        server.stop()

    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    print(f"## A {args.minutes}-minute outage at 1 s collection ({args.runs} runs, medians)")
    print()
    print("| Series | Datapoints collected | Published | Read back from moto | Lost | Dropped "
          "| Spool at end of outage | Catch-up after recovery | Replay requests | Wall time of the run |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {median('series'):.0f} | {median('collected'):,.0f} | {median('published'):,.0f} "
          f"| {median('read_back'):,.0f} | {median('lost'):.0f} | {median('dropped'):.0f} "
          f"| {median('spool_datums'):,.0f} datums, {median('used_kib'):,.0f} KiB of pages in use; on disk "
          f"{median('spool_kib'):,.0f} KiB database + {median('wal_kib'):,.0f} KiB WAL "
          f"| {median('catch_up_s'):.0f} s of agent time | {median('replay_requests'):.0f} "
          f"| {median('wall_s'):.1f} s |")
    print()
    print(f"Lost in every run: {[int(run['lost']) for run in runs]} (must be 0). Catch-up waits for the first "
          "live flush after recovery (≤ publish.interval), then replays at 5 requests/s.")
    return 0 if all(run["lost"] == 0 for run in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
