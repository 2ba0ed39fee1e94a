"""CPU of packing one flush of 1,000 typical StatsD datums into requests: every batch measured by serializing
it (as 1ad258a did) versus the proven bound (agent/request_bound.py), in the protocol this botocore speaks.

Typical: a 40-character name, 2 to 4 dimensions, 1 to 10 values (issue 17's 1,000 live StatsD series).
Median process CPU time of `Publisher.pack` over --runs runs, after one warm-up.

    .venv/bin/python bench/pack_cpu.py [--runs 21]
"""

from __future__ import annotations

import argparse
import statistics
import time

import botocore.session

from agent.aggregate import Datum
from agent.publisher import Publisher, RequestSizer
from agent.selfstats import AgentStats

MINUTE = 1_790_000_040.0
DIMENSIONS = (("AutoScalingGroupName", "training-p5-48xlarge"), ("InstanceId", "i-0123456789abcdef0"),
              ("Job", "llama-70b-sft-run-0042"), ("Model", "llama-3.1-70b"))


def typical(count: int) -> list[Datum]:
    return [Datum(f"trainer.step.data_loader_wait_seconds_{i:03d}", DIMENSIONS[: 2 + i % 3], MINUTE, "Milliseconds",
                  tuple(0.1234567890123456 + value for value in range(1 + i % 10)), (1.0,) * (1 + i % 10))
            for i in range(count)]


def cpu_ms(publisher: Publisher, datums: list[Datum], runs: int) -> tuple[float, int]:
    """Median CPU milliseconds of one pack, and how many requests it made."""
    batches = publisher.pack(datums)
    timings = []
    for _ in range(runs):
        start = time.process_time_ns()
        publisher.pack(datums)
        timings.append((time.process_time_ns() - start) / 1e6)
    return statistics.median(timings), len(batches)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--datums", type=int, default=1000)
    args = parser.parse_args()
    datums = typical(args.datums)
    bounded = RequestSizer()
    measured = RequestSizer()
    measured.bound = None  # every batch serialized to measure it, as before the bound
    model = botocore.session.get_session().get_service_model("cloudwatch")
    protocol = getattr(model, "resolved_protocol", None) or model.protocol  # as RequestSizer picks it
    rows = []
    for label, sizer in (("every batch measured (1ad258a)", measured), ("proven bound", bounded)):
        publisher = Publisher(None, "InfraWatch", stats=AgentStats(), sizer=sizer)  # type: ignore[arg-type]
        rows.append((label, *cpu_ms(publisher, datums, args.runs)))
    print(f"## Packing {args.datums:,} typical datums (protocol {protocol}, median of {args.runs} runs)")
    print()
    print("| Packing | Requests | CPU per pack (ms) |")
    print("|---|---|---|")
    for label, ms, requests in rows:
        print(f"| {label} | {requests} | {ms:.2f} |")
    print()
    print(f"Packing costs {rows[1][1] / rows[0][1]:.1%} of what measuring every batch did.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
