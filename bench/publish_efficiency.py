"""Requests per flush versus the minimum, and gzip'd bytes per datapoint.

A flush carries one datum per series holding a minute of 1 s samples (60 values each). The publisher's
requests are counted with a recording client; the minimum is ceil(datums / 1,000). Bytes per datapoint
are the request bodies as botocore serializes them, gzip'd as botocore's request compression does.

    .venv/bin/python bench/publish_efficiency.py
"""

from __future__ import annotations

import gzip
import math
import random
import statistics
import time
from typing import Any

from agent.aggregate import Aggregator
from agent.distribution import MAX_HELD_VALUES
from agent.publisher import Publisher, RequestSizer
from agent.samples import Sample
from agent.selfstats import AgentStats

MINUTE = 1_790_000_040.0


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def put_metric_data(self, **request: Any) -> None:
        self.requests.append(request)


def minute_of(series: int, rng: random.Random) -> list[Any]:
    aggregator = Aggregator()
    for second in range(60):
        samples = [Sample(f"Metric{i % 50}", round(rng.uniform(0, 100), 1), "Percent", (("Device", f"dev{i // 50}"),))
                   for i in range(series)]
        aggregator.add(samples, MINUTE + second, (("InstanceId", "i-0123456789abcdef0"),))
    return aggregator.drain()


def main() -> int:
    rng = random.Random(7)
    sizer = RequestSizer()
    print("## Publish efficiency (a minute of 1 s samples per series)")
    print()
    print("| Series | Datums | Requests | Minimum ceil(datums/1000) | gzip'd bytes per datapoint "
          "| Pack+send time, median |")
    print("|---|---|---|---|---|---|")
    for series in (30, 200, 2500, 10_000):
        datums = minute_of(series, rng)
        timings = []
        for _ in range(3):
            client = Recorder()
            publisher = Publisher(client, "InfraWatch", stats=AgentStats(), sizer=sizer)
            start = time.perf_counter()
            publisher.publish(datums)
            timings.append(time.perf_counter() - start)
        gz_bytes = sum(len(gzip.compress(sizer.body(r["Namespace"], r["MetricData"]))) for r in client.requests)
        datapoints = sum(d.datapoints for d in datums)
        minimum = math.ceil(len(datums) / 1000)
        print(f"| {series:,} | {len(datums):,} | {len(client.requests)} | {minimum} | "
              f"{gz_bytes / datapoints:.2f} | {statistics.median(timings) * 1000:.0f} ms |")
    print()
    print(f"Past {MAX_HELD_VALUES:,} distinct values held (a minute of 2,500 series or more here), the aggregator "
          "merges each series' values into group means (agent.distribution; SampleCount, Sum, Minimum and Maximum "
          "stay exact): fewer values, fewer bytes. A batch whose proven size bound fits is packed without "
          "serializing it (agent.request_bound); one whose bound does not fit (datums of many values) is measured.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
