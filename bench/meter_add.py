"""Cost of the Python meter in the job's own thread: ns per `Meter.add` and per timed block.

The client sends to a bound socket nobody reads, flushing every second in its background thread as
in production, so the numbers include the flusher's share of the GIL. Medians of --runs runs.

    .venv/bin/python bench/meter_add.py [--runs 7] [--calls 200000]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from collections.abc import Callable

from agent.meter import Meter, MeterClient


def per_call_ns(call: Callable[[], object], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        call()
    return (time.perf_counter_ns() - start) / calls


def timed_block(meter: Meter) -> Callable[[], None]:
    def block() -> None:
        with meter.time():
            pass

    return block


def contended_add_ns(meter: Meter, calls: int, threads: int) -> float:
    """Wall ns per add while `threads` threads add at once (they share the GIL and the client's lock)."""
    share = calls // threads
    workers = [threading.Thread(target=per_call_ns, args=(meter.add, share)) for _ in range(threads)]
    start = time.perf_counter_ns()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.perf_counter_ns() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        client = MeterClient(f"127.0.0.1:{sink.getsockname()[1]}")
        plain = Meter("SamplesProcessed", client=client)
        tagged = Meter("SamplesProcessed", tags={"model": "llama-8b", "rank": "0"}, client=client)
        step_time = Meter("StepTime", client=client)
        cases: dict[str, Callable[[], float]] = {
            "no-op function call (baseline)": lambda: per_call_ns(lambda: None, args.calls),
            "Meter.add(32)": lambda: per_call_ns(lambda: plain.add(32), args.calls),
            "Meter.add(32), 2 tags": lambda: per_call_ns(lambda: tagged.add(32), args.calls),
            "with meter.time(): pass": lambda: per_call_ns(timed_block(step_time), args.calls),
            "Meter.add(1), 4 threads at once": lambda: contended_add_ns(plain, args.calls, 4),
        }
        results = {name: [case() for _ in range(args.runs)] for name, case in cases.items()}
        client.close()
    print("## Meter.add cost in the job's thread\n")
    print(f"{args.runs} runs of {args.calls:,} calls; median ns per call (min..max); target: add under 2,000 ns\n")
    print("| call | ns per call |")
    print("|---|---:|")
    for name, runs in results.items():
        print(f"| {name} | {statistics.median(runs):,.0f} ({min(runs):,.0f}..{max(runs):,.0f}) |")
    print(f"\nlines sent {client.sent_lines:,}, dropped {client.dropped_lines}, errors {client.errors}")


if __name__ == "__main__":
    main()
