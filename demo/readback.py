"""Reads what the demo produced back through the AWS APIs and prints it for a person."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agent.dryrun import HOST_IDENTITY

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return SPARK[3] * len(values)
    return "".join(SPARK[int((v - low) / (high - low) * (len(SPARK) - 1))] for v in values)


def series_table(cloudwatch: Any, namespace: str, start: dt.datetime, end: dt.datetime, period: int) -> list[str]:
    """One line per series: datapoints, min, mean, max over the run, and a sparkline of its averages."""
    unique = {}  # moto lists a series once per put; CloudWatch once
    for page in cloudwatch.get_paginator("list_metrics").paginate(Namespace=namespace):
        for metric in page["Metrics"]:
            key = (metric["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in metric["Dimensions"])))
            unique[key] = metric
    rows = []
    for _, metric in sorted(unique.items()):
        points = cloudwatch.get_metric_statistics(
            Namespace=namespace, MetricName=metric["MetricName"], Dimensions=metric["Dimensions"],
            StartTime=start, EndTime=end, Period=period,
            Statistics=["SampleCount", "Sum", "Minimum", "Maximum", "Average"],
        )["Datapoints"]
        if not points:
            continue
        points.sort(key=lambda p: p["Timestamp"])
        count = sum(p["SampleCount"] for p in points)
        dims = ",".join(f"{d['Name']}={d['Value']}" for d in metric["Dimensions"]
                        if d["Name"] not in HOST_IDENTITY)
        rows.append((metric["MetricName"], dims, points[0].get("Unit", ""), f"{count:.0f}",
                     f"{min(p['Minimum'] for p in points):.4g}", f"{sum(p['Sum'] for p in points) / count:.4g}",
                     f"{max(p['Maximum'] for p in points):.4g}", sparkline([p["Average"] for p in points])))
    header = ("SERIES", "DIMENSIONS", "UNIT", "DATAPOINTS", "MIN", "MEAN", "MAX", f"AVERAGE PER {period} s")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]


def alarm_lines(cloudwatch: Any, prefix: str) -> list[str]:
    lines = []
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix):
        for alarm in page["MetricAlarms"]:
            statistic = alarm.get("ExtendedStatistic") or alarm.get("Statistic")
            what = f"{alarm.get('MetricName')} {statistic}"
            period = alarm.get("Period")
            if "MetricName" not in alarm:  # metric math or a Metrics Insights query: show it and its period
                queries = alarm.get("Metrics", [])
                what = next((q["Expression"] for q in queries if q.get("ReturnData")), "metric math")
                period = next((q["MetricStat"]["Period"] if "MetricStat" in q else q["Period"]
                               for q in queries if "MetricStat" in q or "Period" in q), None)
            lines.append(f"{alarm['AlarmName']}: {what} {alarm['ComparisonOperator']} {alarm.get('Threshold', '')} "
                         f"for {alarm.get('DatapointsToAlarm', '?')} of {alarm['EvaluationPeriods']} × {period} s")
    return lines
