"""infrawatch-report at 10, 100 and 1,000 hosts × 8 GPUs over 14 days, against a moto server over HTTP.

For each fleet size a fresh moto server (its own process) is loaded with every series an 8-GPU host
publishes (8 GPUUtilization, CPUUtilization, MemoryUtilization, StorageUtilization, Heartbeat), then the
real `infrawatch-report` runs as a child process: API calls by operation (from its JSON), wall time, and
its peak RSS (the child's ru_maxrss; the server's memory is not counted).

moto answers GetMetricData by scanning every stored datum for every query and period (its time grows as
queries × periods × datums), so the fleet is loaded coarsely: `--points` datapoints per series over the
14 days (default 1, read at a 14-day period). The calls the report makes do not depend on that: they
follow series / 500 (GetMetricData), series / 500 per metric name (ListMetrics pages) and hosts / 200
(DescribeInstances filters).

    .venv/bin/python bench/report_scale.py [--hosts 10,100,1000] [--points 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DAYS = 14
# The report's own entry point, which then prints its peak RSS (KiB) as the last line of stderr.
MEASURED = ("import resource, sys; from report.cli import main; code = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); raise SystemExit(code)")
ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            return server, url
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("moto_server did not start")


def load(url: str, hosts: int, gpus: int, start: dt.datetime, period: int, points: int) -> int:
    cloudwatch: Any = boto3.client("cloudwatch", endpoint_url=url, **_credentials())
    datums = []
    for host in range(hosts):
        instance = f"i-{host:017x}"
        for point in range(points):
            at = start + dt.timedelta(seconds=period * point + 30)
            series = [("Heartbeat", 1.0, {"Component": "agent"}), ("CPUUtilization", 40.0, {}),
                      ("MemoryUtilization", 50.0, {}), ("StorageUtilization", 60.0, {"MountPath": "/"})]
            series += [("GPUUtilization", 2.0 if gpu % 2 else 80.0, {"GPU": str(gpu)}) for gpu in range(gpus)]
            for name, value, dims in series:
                dims = {"InstanceId": instance, **dims}
                datums.append({"MetricName": name, "Value": value, "Timestamp": at,
                               "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(dims.items())]})
    for offset in range(0, len(datums), 1000):
        cloudwatch.put_metric_data(Namespace="InfraWatch", MetricData=datums[offset:offset + 1000])
    return len(datums)


def _credentials() -> dict[str, str]:
    return {"region_name": "us-east-1", "aws_access_key_id": "bench", "aws_secret_access_key": "bench"}


def run_report(url: str, start: dt.datetime, end: dt.datetime, period: int) -> tuple[dict[str, Any], float, float]:
    command = [sys.executable, "-c", MEASURED, "--namespace", "InfraWatch", "--since", start.isoformat(),
               "--until", end.isoformat(), "--period", str(period), "--format", "json", "--no-progress"]
    env = {**os.environ, **ENV, "AWS_ENDPOINT_URL": url}
    began = time.perf_counter()
    child = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - began
    if child.returncode != 0:
        raise SystemExit(f"infrawatch-report failed ({child.returncode}): {child.stderr[-2000:]}")
    rss_kb = int(child.stderr.strip().splitlines()[-1])
    return json.loads(child.stdout), wall, rss_kb / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="10,100,1000", help="fleet sizes, comma-separated")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--points", type=int, default=1, help="datapoints per series over the 14 days")
    args = parser.parse_args()
    period = DAYS * 86_400 // args.points
    if period % 60:
        raise SystemExit("--points must divide 14 days into whole minutes")
    end = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(days=DAYS)
    rows = []
    for hosts in (int(item) for item in args.hosts.split(",")):
        server, url = start_server()
        try:
            datums = load(url, hosts, args.gpus, start, period, args.points)
            report, wall, rss = run_report(url, start, end, period)
        finally:
            server.terminate()
            server.wait()
        calls = report["api_calls"]
        series = hosts * (args.gpus + 4)
        queries = hosts * ((args.gpus + 3) * 2 + 1)
        rows.append(f"| {hosts:,} | {series:,} | {datums:,} | {queries:,} | {calls.get('GetMetricData', 0)} "
                    f"(⌈{queries:,} / 500⌉ = {math.ceil(queries / 500)}) | {calls.get('ListMetrics', 0)} | "
                    f"{calls.get('DescribeInstances', 0)} | {sum(calls.values())} | {wall:.1f} | {rss:.0f} |")
        print(f"{hosts} hosts: {calls} in {wall:.1f} s, {rss:.0f} MB", file=sys.stderr, flush=True)
    print(f"## infrawatch-report: {args.hosts.replace(',', ', ')} hosts × {args.gpus} GPUs over {DAYS} days, "
          f"moto server\n")
    print(f"{args.points} datapoint(s) per series, read at a {period:,} s period (moto scans every datum per "
          "query and period, so the fleet is loaded coarsely). Wall time includes moto's own work; peak RSS is "
          "the report process alone.\n")
    print("| hosts | series | datums | GetMetricData queries | GetMetricData calls | ListMetrics calls | "
          "DescribeInstances calls | all calls | wall s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
