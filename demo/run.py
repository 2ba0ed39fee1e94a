"""`make demo`: infrawatch end to end on an embedded CloudWatch (a moto server on loopback).

With the real commands, as subprocesses: `infrawatch-agent` publishes this machine's readings and two
simulated GPUs at 1 s collection, a small job reports its throughput over StatsD, and
`provision-alarms` creates the alarms, dashboards, SNS topic and EventBridge rule of a demo spec.
Then everything is read back through the AWS APIs and printed. No AWS account, no credentials, nothing
outside this machine. Every process started here is stopped on the way out, Ctrl-C included.

    .venv/bin/python demo/run.py [--seconds 90]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from demo.readback import alarm_lines, series_table

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NAMESPACE = "InfraWatch"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def say(message: str) -> None:
    print(f"\n=== {message}", flush=True)


class Processes:
    """Every child this demo starts, each in its own process group, all stopped on exit."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            child = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in self.children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=90.0, help="how long the agent runs")
    args = parser.parse_args()
    # Ctrl-C and SIGTERM both unwind through the finally blocks below.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the embedded server's access log is noise here
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update({k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                           "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")})
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="infrawatch-demo-") as tmp:
            return run(Path(tmp), env, processes, args.seconds)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", flush=True)
        return 130
    finally:
        processes.stop_all()
        server.stop()


def run(tmp: Path, env: dict[str, str], processes: Processes, seconds: float) -> int:
    config = tmp / "agent.toml"
    config.write_text(
        "[collect]\ninterval = 1\n"
        "[publish]\ninterval = 10\nhigh_resolution = true\n"
        f'[spool]\npath = "{tmp / "spool.db"}"\n'  # the demo leaves nothing in /var/lib/infrawatch
    )
    say(f"moto server on {env['AWS_ENDPOINT_URL']}: starting infrawatch-agent for {seconds:.0f} s "
        "(1 s collection, 2 simulated GPUs)")
    started = dt.datetime.now(dt.timezone.utc)
    agent = processes.start([str(BIN / "infrawatch-agent"), "--config", str(config), "--fake-gpus", "2"],
                            env, tmp / "agent.log")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            print((tmp / "agent.log").read_text()[-3000:])
            raise SystemExit(f"infrawatch-agent exited early with {agent.returncode}")
        time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
        print(f"  {time.monotonic() - deadline + seconds:5.0f} s", flush=True)
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=30)
    ended = dt.datetime.now(dt.timezone.utc)
    say(f"infrawatch-agent stopped (exit {agent.returncode}); what CloudWatch holds:")
    cloudwatch: Any = boto3.client("cloudwatch")
    for line in series_table(cloudwatch, NAMESPACE, started - dt.timedelta(minutes=1),
                             ended + dt.timedelta(minutes=1), period=10):
        print(line)
    say("alarms")
    for line in alarm_lines(cloudwatch, "infrawatch"):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
