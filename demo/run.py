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
import json
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
SPEC = Path(__file__).resolve().parent / "alarms.toml"
QUEUE = "infrawatch-demo-alerts"


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
    statsd_address = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
    config.write_text(
        "[collect]\ninterval = 1\n"
        "[publish]\ninterval = 10\nhigh_resolution = true\n"
        f'[spool]\npath = "{tmp / "spool.db"}"\n'  # the demo leaves nothing in /var/lib/infrawatch
        f'[statsd]\naddress = "{statsd_address}"\n'
        f'[prometheus]\nenabled = true\naddress = "{metrics_url.split("/")[2]}"\n'
    )
    say(f"moto server on {env['AWS_ENDPOINT_URL']}: starting infrawatch-agent for {seconds:.0f} s "
        "(1 s collection, 2 simulated GPUs)")
    started = dt.datetime.now(dt.timezone.utc)
    agent = processes.start([str(BIN / "infrawatch-agent"), "--config", str(config), "--fake-gpus", "2"],
                            env, tmp / "agent.log")
    say(f"a training job reports its throughput over StatsD to {statsd_address}")
    processes.start([sys.executable, "-m", "demo.job"], {**env, "INFRAWATCH_STATSD_ADDRESS": statsd_address},
                    tmp / "job.log")
    start = time.monotonic()
    provisioned = False
    next_progress = 10.0
    while (elapsed := time.monotonic() - start) < seconds or not provisioned:
        if agent.poll() is not None:
            print((tmp / "agent.log").read_text()[-3000:])
            raise SystemExit(f"infrawatch-agent exited early with {agent.returncode}")
        if not provisioned and heartbeat_published():
            provision(env)  # while the agent keeps publishing
            provisioned = True
        if elapsed >= next_progress:
            print(f"  {elapsed:5.0f} s", flush=True)
            next_progress += 10.0
        time.sleep(1.0)
    show_scrape(metrics_url)
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=30)
    ended = dt.datetime.now(dt.timezone.utc)
    say(f"infrawatch-agent stopped (exit {agent.returncode}); what CloudWatch holds:")
    cloudwatch: Any = boto3.client("cloudwatch")
    for line in series_table(cloudwatch, NAMESPACE, started - dt.timedelta(minutes=1),
                             ended + dt.timedelta(minutes=1), period=10):
        print(line)
    say("alarms")
    for line in alarm_lines(cloudwatch, "demo/"):
        print(line)
    say("dashboards")
    for dashboard in cloudwatch.list_dashboards()["DashboardEntries"]:
        print(f"{dashboard['DashboardName']}: {dashboard['Size']} bytes")
    say(f"the test notification, as the SQS queue {QUEUE} received it")
    sqs: Any = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    for message in messages:
        body = json.loads(message["Body"])
        print(f"{body.get('Subject', '')}: {body.get('Message', message['Body'])}")
    if not messages:
        print("no message arrived")
        return 1
    return show_report(env, started)


def show_report(env: dict[str, str], started: dt.datetime) -> int:
    """`infrawatch-report` over what the agent published: tables here, charts in demo-report.html.

    Only the host alarms are replayed: moto computes no percentiles, which the endpoint latency alarms use.
    """
    page = ROOT / "demo-report.html"
    since = (started - dt.timedelta(minutes=1)).isoformat()
    # 10 s periods: the demo's agent publishes high-resolution datapoints and a heartbeat every 10 s.
    command = [str(BIN / "infrawatch-report"), "--namespace", NAMESPACE, "--stack", "demo", "--alarms", "demo/host/",
               "--since", since, "--period", "10", "--html", str(page), "--no-progress"]
    say("infrawatch-report " + " ".join(command[1:]))
    done = subprocess.run(command, env=env, cwd=ROOT)
    if done.returncode == 0:
        print(f"\nthe report's charts: {page}")
    return done.returncode


def show_scrape(url: str) -> None:
    """The same readings on the agent's Prometheus endpoint: its URL and three of its lines."""
    import urllib.request

    say(f"the agent's Prometheus endpoint: curl -s {url}")
    with urllib.request.urlopen(url, timeout=5) as response:
        lines = response.read().decode().splitlines()
    wanted = ("infrawatch_cpu_utilization_percent ", 'infrawatch_gpu_utilization_percent{gpu="0"}',
              "infrawatch_job_samples_processed_total")
    for prefix in wanted:
        print(next((line for line in lines if line.startswith(prefix)), f"{prefix.strip()}: not served yet"))


def heartbeat_published() -> bool:
    cloudwatch: Any = boto3.client("cloudwatch")
    return bool(cloudwatch.list_metrics(Namespace=NAMESPACE, MetricName="Heartbeat")["Metrics"])


def provision(env: dict[str, str]) -> None:
    """The SageMaker endpoint and queue the spec names, then `provision-alarms` as a person runs it."""
    sagemaker: Any = boto3.client("sagemaker")
    sagemaker.create_model(ModelName="demo-model", ExecutionRoleArn="arn:aws:iam::123456789012:role/demo",
                           PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/demo:1"})
    sagemaker.create_endpoint_config(EndpointConfigName="demo-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "demo-model", "InitialInstanceCount": 1,
        "InstanceType": "ml.g4dn.xlarge"}])
    sagemaker.create_endpoint(EndpointName="demo-endpoint", EndpointConfigName="demo-config")
    boto3.client("sqs").create_queue(QueueName=QUEUE)
    command = [str(BIN / "provision-alarms"), "--config", str(SPEC), "--yes", "--alarm-writes-per-second", "50"]
    say("provision-alarms " + " ".join(command[1:]))
    subprocess.run(command, env=env, check=True, cwd=ROOT)
    say("provision-alarms --test-notification")
    subprocess.run([str(BIN / "provision-alarms"), "--config", str(SPEC), "--test-notification"],
                   env=env, check=True, cwd=ROOT)


if __name__ == "__main__":
    raise SystemExit(main())
