"""StatsD under hostile load: peak RSS of a real agent process against the unit's MemoryHigh=192M.

Runs `infrawatch-agent` in a subprocess, publishing to a PutMetricData sink on loopback (a tiny HTTP
server in this process that answers 200 and counts the datapoints it was sent), while a sender process
floods its StatsD port. Two scenarios, each for --seconds:

- flood: one job timing requests in float milliseconds, every line a distinct value
  (`request.latency:1234.567|ms`), at --rate lines/s, with collect.interval = 1 (the worst case: every
  collect hands the minute's aggregator what arrived);
- series: statsd.max_series at its allowed maximum, every series live: half counters, half timers with
  distinct values, round robin at --rate lines/s.

Peak RSS is the agent's VmHWM. "Lines published" is what the sink was sent (a timer's SampleCount, a
counter's Sum); datagrams the kernel dropped because the agent did not read them in time (this host's
`RcvbufErrors` in /proc/net/snmp over the run, ~50 lines each) are lost on the wire, not in the agent.

    .venv/bin/python bench/statsd_memory.py [--seconds 120] [--rate 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path

from agent.config import StatsdConfig

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 150
MAX_DATAGRAM = 1400
FLOOD_NAME = "request.latency"


def max_series_allowed() -> int:
    """The config's own upper bound for statsd.max_series, so the bench follows the code it runs against."""
    (field,) = (field for field in fields(StatsdConfig) if field.name == "max_series")
    return int(field.metadata["range"][1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def receive_buffer_errors() -> int:
    """Datagrams this host's kernel dropped for a full socket receive buffer (every socket: keep the machine
    quiet for a clean figure)."""
    header, values = (line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
                      if line.startswith("Udp:"))
    return int(values[header.index("RcvbufErrors")])


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Sink(ThreadingHTTPServer):
    """Accepts every PutMetricData request (botocore's JSON protocol) and sums the Counts per metric name."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SinkHandler)
        self.lock = threading.Lock()
        self.counts: dict[str, float] = {}  # Σ Counts per metric name
        self.sums: dict[str, float] = {}  # Σ Values × Counts per metric name
        self.requests = 0


class SinkHandler(BaseHTTPRequestHandler):
    server: Sink

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            if self.headers.get("Content-Encoding") == "gzip":  # botocore compresses bodies of 10 KiB or more
                body = gzip.decompress(body)
            request = json.loads(body)
        except ValueError:
            request = {}
        with self.server.lock:
            self.server.requests += 1
            for datum in request.get("MetricData", []):
                name, counts = datum["MetricName"], datum.get("Counts", [1.0])
                self.server.counts[name] = self.server.counts.get(name, 0.0) + sum(counts)
                total = sum(v * c for v, c in zip(datum.get("Values", ()), counts, strict=False))
                self.server.sums[name] = self.server.sums.get(name, 0.0) + total
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per request would be the bench's main cost."""


def lines(scenario: str, series: int, start: int, count: int) -> list[bytes]:
    """`count` lines from the `start`-th on; every timer value distinct over the run."""
    if scenario == "flood":
        return [b"%s:%.3f|ms" % (FLOOD_NAME.encode(), i / 1000) for i in range(start, start + count)]
    out = []
    for i in range(start, start + count):
        k = i % series
        if k % 2:
            out.append(b"t.%d:%.3f|ms" % (k, i / 1000))
        else:
            out.append(b"c.%d:1|c" % k)
    return out


def send(sock: socket.socket, batch: list[bytes], port: int) -> None:
    if batch:
        with contextlib.suppress(BlockingIOError):  # a full send buffer: those lines are lost on the wire
            sock.sendto(b"\n".join(batch), ("127.0.0.1", port))


def sender(connection: Connection, port: int, scenario: str, series: int, rate: int, seconds: float) -> None:
    """Runs in its own process: paced multi-line datagrams, 20 ms worth at a time."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sent = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed * rate) + rate // 50
        if sent >= due:
            time.sleep(0.005)
            continue
        batch: list[bytes] = []
        size = 0
        for line in lines(scenario, series, sent, due - sent):
            if size + len(line) + 1 > MAX_DATAGRAM:
                send(sock, batch, port)
                batch, size = [], 0
            batch.append(line)
            size += len(line) + 1
        send(sock, batch, port)
        sent = due
    connection.send(sent)


def run(scenario: str, *, series: int, rate: int, seconds: float, collect_interval: int) -> dict[str, float]:
    sink = Sink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    statsd_port = free_port(socket.SOCK_DGRAM)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "agent.toml"
        config.write_text(
            f"[collect]\ninterval = {collect_interval}\n[publish]\ninterval = 60\n[ec2]\nidentity = false\n"
            f'[spool]\npath = "{tmp}/spool.db"\n'
            f'[statsd]\naddress = "127.0.0.1:{statsd_port}"\nmax_series = {series}\n'
        )
        env = {
            **os.environ, "AWS_ENDPOINT_URL_CLOUDWATCH": f"http://127.0.0.1:{sink.server_address[1]}",
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        agent = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(config)], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(3.0)  # imports and the first collection before the flood starts
            parent, child = multiprocessing.Pipe()
            process = multiprocessing.get_context("spawn").Process(
                target=sender, args=(child, statsd_port, scenario, series, rate, seconds))
            process.start()
            errors_before = receive_buffer_errors()
            sent = parent.recv()
            process.join()
            # The last datagrams, and one more collect: lines received after the last collect before a stop are
            # not this bench's subject.
            time.sleep(collect_interval + 1.5)
            dropped = receive_buffer_errors() - errors_before
            peak = peak_rss_mb(agent.pid)
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=60)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    sink.shutdown()
    # Lines the agent published: a timer's SampleCount, a counter's Sum (every counter line adds 1).
    published = sum(count for name, count in sink.counts.items() if name == FLOOD_NAME or name.startswith("t."))
    published += sum(total for name, total in sink.sums.items()
                     if name.startswith("c.") and not name.endswith("PerSecond"))
    return {"peak": peak, "sent": sent, "published": published, "requests": sink.requests, "dropped": dropped}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--rate", type=int, default=100_000, help="lines per second offered")
    parser.add_argument("--scenario", choices=("flood", "series", "both"), default="both")
    args = parser.parse_args()
    scenarios = ("flood", "series") if args.scenario == "both" else (args.scenario,)
    limit = max_series_allowed()
    load = os.getloadavg()
    results = {
        scenario: run(scenario, series=limit if scenario == "series" else 1000, rate=args.rate,
                      seconds=args.seconds, collect_interval=1 if scenario == "flood" else 10)
        for scenario in scenarios
    }
    print(f"## StatsD memory under a flood ({args.seconds:.0f} s per scenario, {args.rate:,} lines/s offered)\n")
    print(f"Agent publishing to a loopback sink; {os.cpu_count()} cores shared with the sender "
          f"(load average {load[0]:.2f} at start). Target: peak RSS ≤ {TARGET_MB} MB (unit: MemoryHigh=192M).\n")
    print("| Scenario | Lines sent | Datagrams dropped by the kernel | Lines published | Requests | Peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    labels = {"flood": "one timer, every value distinct, collect.interval = 1",
              "series": f"max_series = {limit:,} live series (counters and timers)"}
    for scenario, result in results.items():
        print(f"| {labels[scenario]} | {result['sent']:,.0f} | {result['dropped']:,.0f} | {result['published']:,.0f} "
              f"| {result['requests']:,.0f} | {result['peak']:.1f} MB |")
    print()
    worst = max(result["peak"] for result in results.values())
    print(f"Worst peak RSS {worst:.1f} MB ({'within' if worst <= TARGET_MB else 'OVER'} the {TARGET_MB} MB target).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
