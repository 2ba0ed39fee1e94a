"""The report as terminal tables, Markdown, CSV or JSON. Absent values print as "n/a", never as 0."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable
from typing import Any

from report.build import Report
from report.endpoints import EndpointReport
from report.hosts import UTILIZATION, HostReport, Stat

Table = tuple[str, list[str], list[list[str]]]  # title, header, rows
LABELS = {"cpu": "CPU", "memory": "memory", "gpu": "GPU", "gpu_memory": "GPU memory", "storage": "storage"}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _stat(stat: Stat | None) -> list[str]:
    return ["n/a"] * 3 if stat is None else [_pct(stat.p50), _pct(stat.p95), _pct(stat.max)]


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def _time(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def _coverage(stat: Stat | None) -> str:
    if stat is None:
        return "no data"
    share = 100 * stat.periods / stat.expected if stat.expected else 100.0
    return f"partial {share:.0f} %" if stat.partial else "full"


def tables(report: Report) -> list[Table]:
    hosts = report.hosts
    usage = [
        [host.host, LABELS[kind], *_stat(stat), _coverage(stat)]
        for host in hosts for kind in UTILIZATION
        for stat in [host.utilization.get(kind)] if stat is not None or kind in ("cpu", "memory")
    ]
    per_gpu = [
        [host.host, gpu.index, *_stat(gpu.utilization), f"{gpu.idle_hours:.2f}"]
        for host in hosts for gpu in host.gpus
    ]
    cost = [
        [host.host, host.instance_type or "unknown to EC2", str(len(host.gpus)), f"{host.idle_gpu_hours:.2f}",
         _money(host.price.per_gpu_hour) if host.price else "no price", _money(host.idle_cost)]
        for host in hosts
    ]
    total_cost = sum(host.idle_cost or 0.0 for host in hosts)
    cost.append(["fleet", "", str(sum(len(host.gpus) for host in hosts)),
                 f"{sum(host.idle_gpu_hours for host in hosts):.2f}", "", _money(total_cost)])
    availability = [_availability_row(host) for host in hosts]
    availability.append(["fleet", "", "", "", _pct2(report.fleet_availability), ""])
    result: list[Table] = [
        ("Utilization % (p50 / p95 of per-period averages, max of maxima)",
         ["host", "metric", "p50", "p95", "max", "data"], usage),
        (f"GPUs (idle: every datapoint of a {report.window.period} s period below "
         f"{report.scope.idle_threshold:g} %)", ["host", "GPU", "p50", "p95", "max", "idle h"], per_gpu),
        ("Idle GPU cost (idle GPU-hours × on-demand USD per GPU-hour)",
         ["host", "type", "GPUs", "idle GPU-h", "USD/GPU-h", "idle USD"], cost),
        ("Availability ((1 − downtime / total) × 100)",
         ["host", "since", "basis", "downtime", "availability %", "downtime intervals"], availability),
    ]
    hints = [[host.host, hint] for host in hosts for hint in host.hints]
    if hints:
        result.append(("Right-sizing evidence", ["host", "evidence"], hints))
    if report.endpoints:
        result.append((
            "SageMaker endpoints (ModelLatency in ms; \"over\": above the stack's alarm threshold)",
            ["endpoint", "variant", "type", "invocations", "5XX %", "model error %", "p50 ms", "p90 ms",
             "p99 ms", "thresholds ms"],
            [[item.endpoint, item.variant, item.instance_type or "serverless", _count(item.invocations),
              _pct(_percent(item.error_5xx_rate)), _pct(_percent(item.model_error_rate)),
              *(_latency(item, p) for p in ("p50", "p90", "p99")),
              ", ".join(f"{p} {value:g}" for p, value in sorted(item.thresholds_ms.items())) or "none"]
             for item in report.endpoints],
        ))
    if report.scope.stack:
        result.append((
            f"Alarm backtest (alarms of stack {report.scope.stack}, replayed over the window)",
            ["alarm", "period", "times in ALARM", "time in ALARM", "note"],
            [[item.alarm, f"{item.period} s", str(item.alarms) if not item.unsupported else "n/a",
              _duration(item.alarm_seconds) if not item.unsupported else "n/a", item.unsupported]
             for item in report.backtests],
        ))
    return result


def _count(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else fraction * 100


def _latency(item: EndpointReport, percentile: str) -> str:
    value = item.latency_ms.get(percentile)
    if value is None:
        return "n/a"
    return f"{value:,.1f}" + (" over" if item.over(percentile) else "")


def _pct2(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _availability_row(host: HostReport) -> list[str]:
    available = host.availability
    if available is None:
        return [host.host, "", "no heartbeat", "n/a", "n/a", ""]
    intervals = ", ".join(f"{_time(start)}–{end.strftime('%H:%M')}" for start, end in available.downtime)
    return [host.host, _time(available.start), available.basis, _duration(available.downtime_s),
            _pct2(available.percent), intervals]


def heading(report: Report) -> str:
    window = report.window
    return (f"infrawatch report: {report.scope.namespace} ({report.scope.naming} names), "
            f"{_time(window.start)} – {_time(window.end)} UTC, {window.period} s periods, "
            f"{len(report.hosts)} hosts")


def terminal(report: Report) -> str:
    lines = [heading(report)]
    for title, header, rows in tables(report):
        lines += ["", title, *_aligned(header, rows)]
    return "\n".join(lines) + "\n"


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    numeric = [all(_numeric(row[index]) for row in rows) and rows for index in range(len(header))]

    def line(cells: Iterable[str]) -> str:
        return "  ".join(cell.rjust(width) if numeric[index] else cell.ljust(width)
                         for index, (cell, width) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(header), line("-" * width for width in widths), *(line(row) for row in rows)]


def _numeric(cell: str) -> bool:
    return cell.replace(",", "").replace(".", "", 1).isdigit() or cell in ("n/a", "")


def markdown(report: Report) -> str:
    lines = [f"# {heading(report)}"]
    for title, header, rows in tables(report):
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(report: Report) -> str:
    """Every table, one after another; the first column names the table."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for title, header, rows in tables(report):
        writer.writerow(["table", *header])
        for row in rows:
            writer.writerow([title.split(" (")[0], *row])
    return out.getvalue()


def as_json(report: Report) -> str:
    return json.dumps(data(report), indent=2) + "\n"


def data(report: Report) -> dict[str, Any]:
    def stat(value: Stat | None) -> dict[str, Any] | None:
        return None if value is None else {"p50": value.p50, "p95": value.p95, "max": value.max,
                                           "periods": value.periods, "expected_periods": value.expected}

    return {
        "namespace": report.scope.namespace, "naming": report.scope.naming,
        "start": report.window.start.isoformat(), "end": report.window.end.isoformat(),
        "period_s": report.window.period, "idle_threshold_percent": report.scope.idle_threshold,
        "fleet_availability_percent": report.fleet_availability,
        "idle_cost_usd": sum(host.idle_cost or 0.0 for host in report.hosts),
        "hosts": [{
            "host": host.host, "instance_type": host.instance_type or None,
            "utilization": {kind: stat(host.utilization.get(kind)) for kind in UTILIZATION},
            "gpus": [{"index": gpu.index, "utilization": stat(gpu.utilization), "idle_hours": gpu.idle_hours}
                     for gpu in host.gpus],
            "idle_gpu_hours": host.idle_gpu_hours, "idle_cost_usd": host.idle_cost,
            "price": None if host.price is None else {
                "usd_per_hour": host.price.usd_per_hour, "gpus": host.price.gpus, "as_of": host.price.as_of,
                "source": host.price.source},
            "availability": None if host.availability is None else {
                "start": host.availability.start.isoformat(), "end": host.availability.end.isoformat(),
                "basis": host.availability.basis, "percent": host.availability.percent,
                "downtime_s": host.availability.downtime_s,
                "downtime": [[start.isoformat(), end.isoformat()] for start, end in host.availability.downtime]},
            "hints": host.hints,
        } for host in report.hosts],
        "backtests": [{
            "alarm": item.alarm, "period_s": item.period, "alarms": item.alarms, "alarm_s": item.alarm_seconds,
            "episodes": [[start.isoformat(), end.isoformat()] for start, end in item.episodes],
            "unsupported": item.unsupported or None,
        } for item in report.backtests],
        "endpoints": [{
            "endpoint": item.endpoint, "variant": item.variant, "instance_type": item.instance_type or None,
            "invocations": item.invocations, "error_5xx_rate": item.error_5xx_rate,
            "model_error_rate": item.model_error_rate, "latency_ms": dict(item.latency_ms),
            "thresholds_ms": dict(item.thresholds_ms),
        } for item in report.endpoints],
        "api_calls": dict(sorted(report.calls.items())),
    }


FORMATS = {"table": terminal, "markdown": markdown, "csv": csv_text, "json": as_json}
