"""Reading CloudWatch: ListMetrics for the series that exist, GetMetricData in batches of 500 queries.

One module talks to CloudWatch's read APIs, through provisioning's `Caller` (rate limits and retries), and
counts its calls so the bench can show they grow with series / 500, not with series.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from provisioning.aws import Caller

MAX_QUERIES_PER_CALL = 500  # GetMetricData: MetricDataQueries holds at most 500 entries
Dimensions = tuple[tuple[str, str], ...]
Points = dict[int, float]  # period start (epoch seconds) -> value
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Query:
    namespace: str
    metric: str
    dimensions: Dimensions  # sorted
    stat: str
    period: int

    def request(self, query_id: str) -> dict[str, object]:
        return {
            "Id": query_id,
            "ReturnData": True,
            "MetricStat": {
                "Metric": {
                    "Namespace": self.namespace, "MetricName": self.metric,
                    "Dimensions": [{"Name": name, "Value": value} for name, value in self.dimensions],
                },
                "Period": self.period,
                "Stat": self.stat,
            },
        }


def dimensions(raw: Iterable[Mapping[str, str]]) -> Dimensions:
    return tuple(sorted((item["Name"], item["Value"]) for item in raw))


SERVICES = ("cloudwatch", "ec2", "sagemaker")


class Reader:
    def __init__(self, caller: Caller, progress: Progress | None = None) -> None:
        self.caller = caller
        self.calls: Counter[str] = Counter()  # every request sent, retries included, by operation
        self._progress = progress
        self._expected: int | None = None  # queries the progress bar counts to, across fetches
        self._done = 0
        for service in SERVICES:
            caller.clients[service].meta.events.register("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def pages(self, service: str, operation: str, **params: object) -> Iterable[dict[str, Any]]:
        return self.caller.pages(service, operation, **params)

    def list_metrics(self, namespace: str, metric: str) -> list[Dimensions]:
        """The dimension sets of every series of `metric` in `namespace` (ListMetrics: data in the last 2 weeks),
        each once (moto lists a series once per datum)."""
        return list(dict.fromkeys(
            dimensions(item.get("Dimensions", []))
            for page in self.pages("cloudwatch", "ListMetrics", Namespace=namespace, MetricName=metric)
            for item in page.get("Metrics", [])
        ))

    def list_metrics_any(self, namespace: str) -> bool:
        """Whether the namespace holds any metric at all (one ListMetrics page)."""
        return bool(self.caller("cloudwatch", "ListMetrics", Namespace=namespace).get("Metrics"))

    def expect(self, queries: int | None) -> None:
        """Count progress over several fetches up to `queries`; None: each fetch counts on its own."""
        self._expected, self._done = queries, 0

    def fetch(self, queries: list[Query], start: dt.datetime, end: dt.datetime) -> dict[Query, Points]:
        """Every query's datapoints in [start, end); 500 queries per call, pages followed."""
        unique = list(dict.fromkeys(queries))
        results: dict[Query, Points] = {query: {} for query in unique}
        for offset in range(0, len(unique), MAX_QUERIES_PER_CALL):
            batch = unique[offset:offset + MAX_QUERIES_PER_CALL]
            by_id = {f"q{index}": query for index, query in enumerate(batch)}
            for page in self.pages(
                "cloudwatch", "GetMetricData", StartTime=start, EndTime=end, ScanBy="TimestampAscending",
                MetricDataQueries=[query.request(query_id) for query_id, query in by_id.items()],
            ):
                for result in page.get("MetricDataResults", []):
                    points = results[by_id[result["Id"]]]
                    for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=True):
                        if value is not None:
                            points[int(stamp.timestamp())] = float(value)
            self._done += len(batch)
            if self._progress:
                self._progress(self._done, self._expected or len(unique))
        if self._expected is None:
            self._done = 0
        return results
