"""The agent as a real process against the fault proxy: SIGKILL and restart, and SIGTERM with the endpoint down.

These run in real time, so they are kept short with real config keys: one-second collection, the
shortest publish interval (10 s), and `publish.phase` set so the first flush comes two seconds after
start instead of anywhere in the interval.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import boto3
import pytest

from agent.aggregate import Datum
from agent.spool import decode
from tests.conftest import free_port
from tests.faultproxy import Fault, FaultProxy

REPO = Path(__file__).parent.parent
NAMESPACE = "InfraWatch"


def write_config(path: Path, spool: Path, run: str, *, first_flush_in: float, shutdown_timeout: float = 10) -> Path:
    phase = round(time.time() + first_flush_in, 3) % 10  # never "10.000", which is not below the interval
    path.write_text(
        f'shutdown_timeout = {shutdown_timeout}\n'
        f'[dimensions]\nRun = "{run}"\n'
        f'[collect]\ninterval = 1\n'
        f'[publish]\ninterval = 10\nphase = {phase:.3f}\n'
        f'[spool]\npath = "{spool}"\n'
        "[storage]\nenabled = false\n[diskio]\nenabled = false\n[network]\nenabled = false\n"
        # Not the default 127.0.0.1:8125, which an agent in a test running beside this one may hold.
        f'[statsd]\naddress = "127.0.0.1:{free_port()}"\n'
    )
    return path


def start_agent(config: Path, endpoint: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env={**os.environ, "AWS_ENDPOINT_URL_CLOUDWATCH": endpoint},
    )


def wait_for_line(process: subprocess.Popen[str], event: str) -> dict[str, Any]:
    assert process.stdout is not None
    for line in process.stdout:
        if f'"event": "{event}"' in line:
            return dict(json.loads(line))
    raise AssertionError(f"{event} never logged")


def spooled_rows(path: Path) -> list[Datum]:
    if not path.exists():
        return []
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [decode(body) for (body,) in connection.execute("SELECT body FROM datums ORDER BY id")]
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
    finally:
        connection.close()


def poll(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def totals(datums: list[Datum]) -> dict[tuple[str, tuple[tuple[str, str], ...], float], tuple[float, float]]:
    table: dict[tuple[str, tuple[tuple[str, str], ...], float], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for datum in datums:
        entry = table[(datum.name, datum.dimensions, datum.timestamp)]
        entry[0] += sum(datum.counts)
        entry[1] += sum(v * c for v, c in zip(datum.values, datum.counts, strict=True))
    return {key: (count, total) for key, (count, total) in table.items()}


def test_sigkill_after_spooling_then_a_healthy_restart_delivers_everything_spooled(
    moto_server: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.db"
    with FaultProxy(moto_server) as proxy:
        proxy.inject(Fault.UNAVAILABLE)
        first = start_agent(write_config(tmp_path / "one.toml", spool, "1", first_flush_in=2.5), proxy.url)
        try:
            poll(lambda: spooled_rows(spool), timeout=20)  # the first flush failed past its 5 s deadline
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(5)
        before_kill = spooled_rows(spool)
        assert {datum.name for datum in before_kill} >= {"CPUUtilization", "MemoryUtilization", "Heartbeat"}

        proxy.heal()
        second = start_agent(write_config(tmp_path / "two.toml", spool, "2", first_flush_in=8), proxy.url)
        try:
            poll(lambda: not spooled_rows(spool), timeout=10)  # replayed at start, before any flush of its own
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0

    moto = boto3.client("cloudwatch", endpoint_url=moto_server)
    stored: list[Datum] = []
    for key in totals(before_kill):
        name, dims, minute = key
        points = moto.get_metric_statistics(
            Namespace=NAMESPACE, MetricName=name, Dimensions=[{"Name": k, "Value": v} for k, v in dims],
            StartTime=dt.datetime.fromtimestamp(minute, dt.timezone.utc),
            EndTime=dt.datetime.fromtimestamp(minute + 60, dt.timezone.utc), Period=60,
            Statistics=["SampleCount", "Sum"])["Datapoints"]
        assert len(points) == 1
        stored.append(Datum(name, dims, minute, "None", (points[0]["Sum"],), (points[0]["SampleCount"],)))
    # Nothing of run 1 reached CloudWatch before the kill, so every spooled datapoint arrives exactly once.
    expected = totals(before_kill)
    got = {(d.name, d.dimensions, d.timestamp): (d.counts[0], d.values[0]) for d in stored}
    assert {key: count for key, (count, _) in got.items()} == {key: count for key, (count, _) in expected.items()}
    for key, (_, total) in got.items():  # moto adds in its own order: equal to the last bits of a double
        assert abs(total - expected[key][1]) <= 1e-9 * max(1.0, abs(expected[key][1]))
    run_one = moto.list_metrics(Namespace=NAMESPACE, Dimensions=[{"Name": "Run", "Value": "1"}])["Metrics"]
    assert {m["MetricName"] for m in run_one} == {datum.name for datum in before_kill}


@pytest.mark.parametrize(("fault", "flushed"), [
    (Fault.UNAVAILABLE, True),  # the last flush gets its one attempt, fails, and is spooled by the worker
    (Fault.DELAY, False),  # accepted and never answered: the stuck batch is taken over and spooled at the timeout
])
def test_sigterm_with_the_endpoint_down_exits_0_in_time_with_every_unsent_datum_spooled(
    moto_server: str, tmp_path: Path, fault: Fault, flushed: bool
) -> None:
    spool = tmp_path / "spool.db"
    with FaultProxy(moto_server, delay=30.0) as proxy:
        proxy.inject(fault)
        config = write_config(tmp_path / "agent.toml", spool, "1", first_flush_in=9, shutdown_timeout=2)
        agent = start_agent(config, proxy.url)
        wait_for_line(agent, "agent_started")
        time.sleep(1.5)  # a real process: let it take a few real samples
        stopped_at = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        stopped = wait_for_line(agent, "agent_stopped")
        assert agent.wait(5) == 0
        took = time.monotonic() - stopped_at
    assert took <= 2 + 2
    assert stopped["flushed"] is flushed
    assert (stopped["published"], stopped["dropped"]) == (0, {})
    assert stopped["spooled"] == stopped["collected"]
    assert sum(datum.datapoints for datum in spooled_rows(spool)) == stopped["collected"]
    assert {datum.name for datum in spooled_rows(spool)} >= {"CPUUtilization", "MemoryUtilization", "Heartbeat"}
