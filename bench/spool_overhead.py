"""What the spool costs on the healthy path: CPU % of one core with and without it.

How it is measured: both variants are wired as `run_forever` wires them, with this machine's real
collectors from the default config and a publish worker on its own thread. With the spool, the
publisher's undeliverable seam is `Spool.put`, the worker has a Replayer, and the spool's self-metrics
are read at every flush; without it, none of that. A client that accepts every request stands in for
CloudWatch, so nothing is ever spooled, which is the healthy path. One repeat runs `--seconds` cycles
of "collect, and flush every 10th" (1 s collection, 10 s publish interval) as fast as they go and
measures process CPU time (all threads, time.process_time) until the worker has sent everything.
CPU seconds per cycle = CPU seconds per second of agent time; × 100 = % of one core. The variants
alternate; medians over the repeats.

    .venv/bin/python bench/spool_overhead.py [--seconds 300] [--repeats 7]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from agent.aggregate import Aggregator
from agent.cli import build_collectors, close_collectors
from agent.config import load
from agent.loop import Agent, PublishWorker
from agent.publisher import Publisher
from agent.replay import Replayer
from agent.selfstats import AgentStats, ProcessUsage
from agent.spool import Spool

PUBLISH_EVERY = 10  # collections per flush: 1 s collection, 10 s publish interval

HOST = (("InstanceId", "i-0123456789abcdef0"),)  # a fixed identity: no IMDS lookup in a bench


class Accepting:
    def __init__(self) -> None:
        self.requests = 0

    def put_metric_data(self, **request: Any) -> dict[str, Any]:
        self.requests += 1
        return {}


def one_repeat(seconds: int, spool_dir: Path | None) -> float:
    """CPU seconds per second of agent time."""
    config = load(None)
    stats = AgentStats()
    spool = Spool(spool_dir / "spool.db", namespace=config.namespace, stats=stats) if spool_dir is not None else None
    publisher = Publisher(Accepting(), config.namespace, stats=stats,
                          on_undeliverable=spool.put if spool is not None else None)
    replayer = Replayer(spool, publisher) if spool is not None else None
    worker = PublishWorker(publisher, replayer)
    gauges = [ProcessUsage().samples, *([spool.samples] if spool is not None else [])]
    collectors = build_collectors(config)
    agent = Agent(collectors=collectors, aggregator=Aggregator(), stats=stats, submit=worker.submit,
                  host_dimensions=HOST, gauges=gauges)
    agent.collect()  # rates need a previous reading, as at start-up
    started = time.process_time()
    for cycle in range(1, seconds + 1):
        agent.collect()
        if cycle % PUBLISH_EVERY == 0:
            agent.flush()
    assert worker.close(timeout=60.0)
    cpu = time.process_time() - started
    close_collectors(collectors)
    if spool is not None:
        assert spool.datums == 0
        spool.close()
    return cpu / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=300, help="agent seconds (collections) per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    without: list[float] = []
    with_spool: list[float] = []
    for _ in range(args.repeats):
        without.append(one_repeat(args.seconds, None))
        with tempfile.TemporaryDirectory() as spool_dir:
            with_spool.append(one_repeat(args.seconds, Path(spool_dir)))
    base, spooled = statistics.median(without) * 100, statistics.median(with_spool) * 100
    deltas = [(w - b) * 100 for w, b in zip(with_spool, without, strict=True)]
    print(f"## Spool overhead on the healthy path ({args.repeats} × {args.seconds} agent seconds, medians)")
    print()
    print("| Variant | CPU, % of one core | Per second of agent time |")
    print("|---|---|---|")
    print(f"| without the spool | {base:.3f} % | {base * 10:.2f} ms |")
    print(f"| with the spool | {spooled:.3f} % | {spooled * 10:.2f} ms |")
    print()
    print(f"Difference: {spooled - base:+.3f} percentage points (median of paired differences "
          f"{statistics.median(deltas):+.3f}; target ≤ +0.1).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
