"""provision-alarms at 500 alarms, against a moto server over HTTP on loopback.

Measures the first run (creates everything) and the second run with the same spec (must write nothing):
wall time and API calls by operation, counted with botocore's `before-call` event. DescribeAlarms is paged as
CloudWatch pages it (at most 100 alarms a call; moto answers all in one) by tests/fakes/aws.py's AlarmPages, so
every page is a counted call. The rerun's target is ceil(alarms / 100) DescribeAlarms pages plus one call per
topic, dashboard and rule, and no write. The real command
paces PutMetricAlarm at CloudWatch's default 3/s, which alone takes 499/3 = 166 s for 500 alarms; the
timed runs use `--alarm-writes-per-second 1000` so the figure is the provisioner's own cost, and one
more run at 3/s counts the limiter's waits on an injected clock instead of sleeping them.

    .venv/bin/python bench/provision_500.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import boto3

from provisioning.aws import CLIENT_CONFIG, Clients
from provisioning.cli import main

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.fakes
from tests.fakes.aws import AlarmPages  # noqa: E402

HOSTS = 10  # 8 GPUs and one mount each: 45 alarms per host
ENDPOINTS = 5  # one CPU variant each: 10 alarms per endpoint
ALARMS = HOSTS * 45 + ENDPOINTS * 10
WRITE_VERBS = ("Put", "Create", "Delete", "Set", "Tag", "Untag", "Remove", "Subscribe", "Unsubscribe", "Publish")


def spec() -> str:
    lines = ['stack = "bench"', "[[hosts]]",
             "instance_ids = [" + ", ".join(f'"i-{index:017x}"' for index in range(HOSTS)) + "]",
             "gpus = 8", 'mounts = ["/"]']
    for index in range(ENDPOINTS):
        lines += ["[[endpoints]]", f'name = "endpoint-{index}"', 'variants = ["AllTraffic"]',
                  'instance_type = "ml.c5.xlarge"']
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Counted:
    """One provision-alarms run with its API calls counted and its wall time measured.

    With `paced_on_clock`, the rate limiter's waits are added to an injected clock instead of slept,
    so a run at CloudWatch's default quota shows what it would take without taking it.
    """

    def __init__(self, spec_path: Path, *args: str, paced_on_clock: bool = False) -> None:
        session = boto3.Session()
        self.calls: Counter[str] = Counter()
        session.events.register("before-call", lambda model, **_: self.calls.update([model.name]))
        AlarmPages(session, boto3.Session().client("cloudwatch", config=CLIENT_CONFIG))
        self.waited = 0.0
        timing = {"sleep": self._wait, "clock": self._clock} if paced_on_clock else {}
        started = time.perf_counter()
        code = main(["--config", str(spec_path), "--yes", *args], clients=Clients(session), out=io.StringIO(),
                    **timing)  # type: ignore[arg-type]
        self.seconds = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"provision-alarms exited {code}")

    def _wait(self, seconds: float) -> None:
        self.waited += seconds

    def _clock(self) -> float:
        return time.monotonic() + self.waited

    @property
    def writes(self) -> int:
        return sum(count for operation, count in self.calls.items() if operation.startswith(WRITE_VERBS))


def reset(endpoint: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).read()


def run(repeat: int) -> None:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    })
    try:
        with tempfile.TemporaryDirectory() as directory:
            spec_path = Path(directory) / "bench.toml"
            spec_path.write_text(spec())
            firsts, seconds = [], []
            for _ in range(repeat):
                reset(endpoint)
                firsts.append(Counted(spec_path, "--alarm-writes-per-second", "1000"))
                seconds.append(Counted(spec_path))
            reset(endpoint)
            paced = Counted(spec_path, paced_on_clock=True)  # the default 3/s
    finally:
        server.stop()
    report(firsts, seconds, paced, repeat)


def report(firsts: list[Counted], seconds: list[Counted], paced: Counted, repeat: int) -> None:
    first, second = firsts[0], seconds[0]
    alarms = first.calls["PutMetricAlarm"]
    assert alarms == ALARMS, alarms
    print(f"## provision-alarms: {ALARMS} alarms on a moto server over HTTP\n")
    print(f"{HOSTS} hosts × 8 GPUs and {ENDPOINTS} SageMaker endpoints: {ALARMS} alarms, "
          f"{first.calls['CreateTopic']} topics, {first.calls['PutDashboard']} dashboards, "
          f"{first.calls['PutRule']} rule. Wall time is the median of {repeat} runs.\n")
    print("| Run | Wall time | API calls | Write calls |")
    print("|---|---|---|---|")
    print(f"| first: create everything (alarm writes at 1000/s) | "
          f"{statistics.median(r.seconds for r in firsts):.2f} s | {sum(first.calls.values())} | {first.writes} |")
    print(f"| second: same spec | {statistics.median(r.seconds for r in seconds):.2f} s | "
          f"{sum(second.calls.values())} | {second.writes} |")
    print(f"| first, paced at CloudWatch's default 3 PutMetricAlarm/s | {paced.seconds + paced.waited:.1f} s "
          f"({paced.waited:.1f} s of it pacing) | {sum(paced.calls.values())} | {paced.writes} |\n")
    pages = -(-ALARMS // 100)
    per_resource = first.calls["CreateTopic"] + first.calls["PutDashboard"] + first.calls["PutRule"]
    reads = sum(second.calls.values())
    print(f"Rerun target: at most ceil({ALARMS} / 100) + {per_resource} (topics, dashboards, rule) = "
          f"{pages + per_resource} requests and 0 writes. Measured, with DescribeAlarms paged 100 a call as "
          f"CloudWatch does: {reads} requests ({second.calls['DescribeAlarms']} DescribeAlarms pages), "
          f"{second.writes} writes; the one beyond the target is ListTargetsByRule (DescribeRule does not return a "
          f"rule's targets, and without it a removed target, the critical alarms' path to the pager, goes unseen).\n")
    assert second.calls["DescribeAlarms"] == pages and second.writes == 0, second.calls
    print("| Operation | First run | Second run |")
    print("|---|---|---|")
    for operation in sorted(first.calls.keys() | second.calls.keys(), key=lambda op: (-first.calls[op], op)):
        print(f"| {operation} | {first.calls[operation]} | {second.calls[operation]} |")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each kind; the median is shown")
    return parser.parse_args()


if __name__ == "__main__":
    run(parse().repeat)
    sys.exit(0)
