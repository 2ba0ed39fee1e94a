"""A stand-in CloudWatch client for --dry-run: prints each PutMetricData request instead of sending it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, TextIO

from agent.config import HOST_DIMENSION
from agent.fleet import HOST

HOST_IDENTITY = (HOST_DIMENSION, HOST)
PRICE_PER_METRIC_MONTH = 0.30  # USD, first tier of custom metrics
PRICE_PER_1000_REQUESTS = 0.01  # USD, PutMetricData
HOURS_PER_MONTH = 730


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot serialize {type(value).__name__}")


class PrintingClient:
    """Implements the one client call the publisher makes; remembers what it saw for the cost line."""

    def __init__(self, stream: TextIO, output_format: str = "json") -> None:
        self._stream = stream
        self.output_format = output_format
        self.requests = 0
        self.series: set[tuple[str, str, tuple[tuple[str, str], ...]]] = set()

    def put_metric_data(self, **request: Any) -> dict[str, Any]:
        self.requests += 1
        for datum in request["MetricData"]:
            dims = tuple((d["Name"], d["Value"]) for d in datum.get("Dimensions", []))
            self.series.add((request["Namespace"], datum["MetricName"], dims))
        if self.output_format == "json":
            self._stream.write(json.dumps(request, default=_jsonable, sort_keys=True) + "\n")
        else:
            self._write_table(request)
        return {}

    def _write_table(self, request: dict[str, Any]) -> None:
        rows = []
        for datum in request["MetricData"]:
            values, counts = datum["Values"], datum["Counts"]
            n = sum(counts)
            mean = sum(v * c for v, c in zip(values, counts, strict=True)) / n
            dims = ",".join(f"{d['Name']}={d['Value']}" for d in datum["Dimensions"]
                            if d["Name"] not in HOST_IDENTITY)  # the same on every row
            rows.append((datum["MetricName"], dims, datum["Unit"], f"{int(n)}", f"{min(values):.6g}",
                         f"{mean:.6g}", f"{max(values):.6g}"))
        header = ("METRIC", "DIMENSIONS", "UNIT", "N", "MIN", "MEAN", "MAX")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        self._stream.write(f"# PutMetricData request {self.requests}: namespace {request['Namespace']}, "
                           f"{len(rows)} datums\n")
        for row in [header, *rows]:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            self._stream.write("  ".join(cells).rstrip() + "\n")

    def cost_line(self, publish_interval: int) -> str:
        """What this configuration costs at list prices, from what one flush looked like."""
        requests_per_hour = self.requests * 3600 / publish_interval
        monthly = (len(self.series) * PRICE_PER_METRIC_MONTH
                   + requests_per_hour * HOURS_PER_MONTH * PRICE_PER_1000_REQUESTS / 1000)
        return (f"{len(self.series)} series, {requests_per_hour:.0f} requests/hour, "
                f"about ${monthly:.2f}/month at list prices")
