"""What the scrape cache saves: a scrape's rendering CPU, and the HTTP server's CPU per request.

The agent's own collectors (host, eight fake H100s) and its StatsD collector run in this process at 1 s
collection for --seconds simulated seconds after a warm-up minute, feeding the Prometheus snapshot as the agent
does. 1,000 StatsD counters are sent once every 10 s (a StatsD flush interval: between two sends their families
do not change), the host and GPU families change every second. After each collection the page is rendered
four ways, each timed with this thread's CPU clock: prometheus_client's `generate_latest` and OpenMetrics
`generate_latest` on a registry holding `SnapshotCollector` (every family, every scrape: the old endpoint), and
`Pages.render` for the text format and for OpenMetrics (the cache; both formats kept, as with two scrapers).

Then the server: --requests sequential requests, the Accept and Accept-Encoding headers Prometheus 2.x sends
(OpenMetrics, gzip), from a child process, to prometheus_client's own server (`start_http_server`, a registry
holding `SnapshotCollector`) and to the agent's `Endpoint`, one collection before each request. This process's
CPU over the requests, less the collections' (timed on their thread), is the server's CPU per request.

    .venv/bin/python bench/prometheus_render.py [--seconds 60] [--requests 200]
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.exposition import generate_latest, start_http_server
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import CollectorRegistry

from agent.cli import build_agent, build_collectors, close_collectors, freeze_heap
from agent.collectors import Collector
from agent.config import parse
from agent.dryrun import PrintingClient
from agent.fleet import DimensionPlan
from agent.logs import configure
from agent.prometheus import Endpoint, Pages, Snapshot, SnapshotCollector
from agent.selfstats import AgentStats
from agent.statsd.collector import StatsdCollector

SERIES = 1000
FLUSH_EVERY = 10  # seconds between two sends of the StatsD series
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")  # Prometheus 2.x's scrape request
CLIENT = textwrap.dedent("""
    import http.client, sys
    port, accept = int(sys.argv[1]), sys.argv[2]
    for _ in sys.stdin:
        connection = http.client.HTTPConnection("127.0.0.1", port)
        connection.request("GET", "/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"})
        connection.getresponse().read()
        connection.close()
        print("ok", flush=True)
""")


class Agent:
    """The agent's collection at 1 s, feeding `snapshot`; StatsD lines sent every FLUSH_EVERY seconds."""

    def __init__(self, snapshot: Snapshot) -> None:
        config = parse({"collect": {"interval": 1}, "prometheus": {"enabled": True}})
        self.host = build_collectors(config, fake_gpus=8)
        self.statsd = StatsdCollector(max_series=SERIES + 10)
        collectors: list[Collector] = [*self.host, self.statsd]
        sink = PrintingClient(open(os.devnull, "w"))  # noqa: SIM115 (closed with the process: a bench; no flush here)
        self.agent, _ = build_agent(config, sink, AgentStats(), collectors, DimensionPlan(identity=None,
                                    hostname="bench"), snapshot=snapshot)
        self.lines = [f"bench.series{index}:1|c".encode() for index in range(SERIES)]
        self.second = 0

    def collect(self) -> None:
        if self.second % FLUSH_EVERY == 0:
            for start in range(0, SERIES, 50):
                self.statsd.receive(b"\n".join(self.lines[start:start + 50]))
        self.agent.collect()
        self.second += 1


def cpu_ms(call: Callable[[], Any]) -> float:
    start = time.thread_time()
    call()
    return (time.thread_time() - start) * 1000


def rendering(seconds: int) -> dict[str, list[float]]:
    snapshot = Snapshot(stale_after=180.0)
    agent = Agent(snapshot)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    pages = Pages(snapshot)
    ways: dict[str, Callable[[], Any]] = {
        "text, every family (generate_latest)": lambda: generate_latest(registry),
        "text, cached (Pages.render)": lambda: pages.render(""),
        "OpenMetrics, every family (generate_latest)": lambda: openmetrics_latest(registry),
        "OpenMetrics, cached (Pages.render)": lambda: pages.render(PROMETHEUS_ACCEPT),
    }
    spent: dict[str, list[float]] = {way: [] for way in ways}
    freeze_heap()
    try:
        for second in range(60 + seconds):
            agent.collect()
            for way, render in ways.items():
                took = cpu_ms(render)
                if second >= 60:  # the warm-up minute: series admitted, caches filled
                    spent[way].append(took)
        assert pages.render("")[0] == generate_latest(registry)  # the cache serves what prometheus_client renders
    finally:
        close_collectors(agent.host)
        gc.unfreeze()
    return spent


def server_cpu(requests: int, endpoint: bool) -> float:
    """CPU ms per request of the server in this process, one collection before each request."""
    snapshot = Snapshot(stale_after=180.0)
    agent = Agent(snapshot)
    if endpoint:
        with socket.socket() as probe:  # a free port: the endpoint takes a configured one
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        served = Endpoint(f"127.0.0.1:{free}", snapshot)
        port, close = served.port, served.close
    else:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(snapshot))
        server, thread = start_http_server(0, "127.0.0.1", registry=registry)
        port = server.server_port

        def close() -> None:
            server.shutdown()
            server.server_close()
            thread.join()

    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(port), PROMETHEUS_ACCEPT], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert client.stdin is not None and client.stdout is not None

    def scrape() -> None:
        client.stdin.write("go\n")  # type: ignore[union-attr]
        client.stdin.flush()  # type: ignore[union-attr]
        client.stdout.readline()  # type: ignore[union-attr]

    try:
        for _ in range(70):  # the warm-up: series admitted, caches filled
            agent.collect()
            scrape()
        collecting = 0.0
        start = time.process_time()
        for _ in range(requests):
            collecting += cpu_ms(agent.collect)
            scrape()
        return ((time.process_time() - start) * 1000 - collecting) / requests
    finally:
        client.stdin.close()
        client.wait()
        close()
        close_collectors(agent.host)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="simulated seconds of rendering measured")
    parser.add_argument("--requests", type=int, default=200, help="requests to each server")
    args = parser.parse_args()
    configure("warning", stream=sys.stderr)
    print(f"Rendering one scrape, CPU ms ({args.seconds} scrapes, 1,000 StatsD families sent every "
          f"{FLUSH_EVERY} s, host and GPU families every second):")
    print("| Rendering | median | mean | max |\n|---|---|---|---|")
    for way, spent in rendering(args.seconds).items():
        print(f"| {way} | {statistics.median(spent):.2f} | {statistics.fmean(spent):.2f} | {max(spent):.2f} |")
    print(f"\nServer CPU per request, ms (OpenMetrics + gzip as Prometheus asks, {args.requests} requests):")
    for name, endpoint in (("prometheus_client's start_http_server, SnapshotCollector", False),
                           ("agent Endpoint (Pages)", True)):
        print(f"| {name} | {server_cpu(args.requests, endpoint):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
