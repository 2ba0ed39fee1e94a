"""`--html`: one self-contained page of charts, drawn by matplotlib as inline SVG (no script, no network).

matplotlib is the optional `report` extra (`pip install 'infrawatch[report]'`), imported only here and only
when a page is asked for.
"""

from __future__ import annotations

import datetime as dt
import html
import importlib.util
import io
from collections.abc import Callable
from typing import Any

from report import render
from report.build import Report

INSTALL = "pip install 'infrawatch[report]'"


def missing_library(find_spec: Callable[[str], object] = importlib.util.find_spec) -> list[str]:
    """The problem with --html on this installation, checked before anything is read from AWS."""
    if find_spec("matplotlib") is None:
        return [f"--html: needs matplotlib, which is not installed: {INSTALL}"]
    return []


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("svg")  # no display, no GUI toolkit
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "path", "font.size": 9})  # glyphs as paths: no font files needed
    return plt


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    _pyplot().close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _time(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


def heat_map(report: Report) -> str | None:
    """Mean GPU utilization per host and day (per hour when the window is two days or less)."""
    plt = _pyplot()
    hosts = [host for host in report.hosts if host.gpu_hourly]
    if not hosts:
        return None
    hourly = report.window.end - report.window.start <= dt.timedelta(days=2)
    bucket = 3600 if hourly else 86_400
    first = int(report.window.start.timestamp()) // bucket * bucket
    columns = list(range(first, int(report.window.end.timestamp()), bucket))
    grid = []
    for host in hosts:
        row = []
        for column in columns:
            parts = [part for hour, part in host.gpu_hourly.items() if column <= hour < column + bucket]
            count = sum(part[1] for part in parts)
            row.append(sum(part[0] for part in parts) / count if count else float("nan"))
        grid.append(row)
    figure, axes = plt.subplots(figsize=(max(6, 0.5 * len(columns) + 3), 0.4 * len(hosts) + 1.5))
    image = axes.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=100, interpolation="nearest")
    axes.set_yticks(range(len(hosts)), [host.host for host in hosts])
    labels = [_time(column).strftime("%H:%M" if hourly else "%m-%d") for column in columns]
    axes.set_xticks(range(len(columns)), labels, rotation=45)
    axes.set_title(f"GPU utilization %, mean over each host's GPUs, per {'hour' if hourly else 'day'} (blank: no data)")
    figure.colorbar(image, ax=axes, label="%")
    return _svg(figure)


def idle_cost(report: Report) -> str | None:
    plt = _pyplot()
    hosts = report.hosts
    if not hosts:
        return None
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(hosts) + 1.5))
    costs = [host.idle_cost or 0.0 for host in hosts]
    bars = axes.barh([host.host for host in hosts], costs, color="#d62728")
    for bar, host in zip(bars, hosts, strict=True):
        label = f"{host.idle_gpu_hours:.2f} GPU-h" + ("" if host.price else ", no price for its type")
        axes.annotate(label, (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(4, 0),
                      textcoords="offset points", va="center")
    axes.set_xlabel("idle cost, USD (on-demand)")
    axes.set_title(f"Idle GPU cost per host (GPU below {report.scope.idle_threshold:g} % for whole periods)")
    axes.invert_yaxis()
    return _svg(figure)


def availability(report: Report) -> str | None:
    plt = _pyplot()
    hosts = [host for host in report.hosts if host.availability is not None]
    if not hosts:
        return None
    figure, axes = plt.subplots(figsize=(9, 0.4 * len(hosts) + 1.5))
    for row, host in enumerate(hosts):
        available = host.availability
        assert available is not None
        start = available.start.timestamp()
        axes.broken_barh([(start, available.total_s)], (row - 0.35, 0.7), color="#2ca02c")
        axes.broken_barh([(begin.timestamp(), (end - begin).total_seconds()) for begin, end in available.downtime],
                         (row - 0.35, 0.7), color="#d62728")
    _time_axis(axes, report)
    axes.set_yticks(range(len(hosts)), [f"{host.host} {host.availability.percent:.2f} %" for host in hosts
                                        if host.availability])
    axes.set_title("Availability: green up, red without heartbeat")
    axes.invert_yaxis()
    return _svg(figure)


def backtest(report: Report) -> str | None:
    plt = _pyplot()
    items = [item for item in report.backtests if not item.unsupported]
    if not items:
        return None
    figure, axes = plt.subplots(figsize=(9, 0.35 * len(items) + 1.5))
    for row, item in enumerate(items):
        axes.broken_barh([(start.timestamp(), (end - start).total_seconds()) for start, end in item.episodes],
                         (row - 0.35, 0.7), color="#ff7f0e")
    _time_axis(axes, report)
    axes.set_yticks(range(len(items)), [f"{item.alarm} ({item.alarms}×)" for item in items])
    axes.set_title("Alarm backtest: when each alarm would have been in ALARM")
    axes.invert_yaxis()
    return _svg(figure)


def latency(report: Report) -> str | None:
    """ModelLatency p50 / p90 / p99 per variant, with the stack's alarm thresholds as markers."""
    plt = _pyplot()
    items = [item for item in report.endpoints if any(value is not None for value in item.latency_ms.values())]
    if not items:
        return None
    figure, axes = plt.subplots(figsize=(8, 0.9 * len(items) + 1.5))
    percentiles = ("p50", "p90", "p99")
    for offset, percentile in enumerate(percentiles):
        rows = [index + (offset - 1) * 0.27 for index in range(len(items))]
        axes.barh(rows, [item.latency_ms.get(percentile) or 0.0 for item in items], height=0.25, label=percentile)
        marks = [(row, item.thresholds_ms[percentile]) for row, item in zip(rows, items, strict=True)
                 if percentile in item.thresholds_ms]
        if marks:
            axes.scatter([value for _, value in marks], [row for row, _ in marks], marker="|", s=300,
                         color="black", label=f"{percentile} alarm threshold")
    axes.set_yticks(range(len(items)), [f"{item.endpoint}/{item.variant}" for item in items])
    axes.set_xlabel("ModelLatency, ms")
    axes.set_title("Endpoint latency percentiles over the window against the alarm thresholds")
    axes.legend(loc="lower right", fontsize=7)
    axes.invert_yaxis()
    return _svg(figure)


def _time_axis(axes: Any, report: Report) -> None:
    start, end = report.window.start.timestamp(), report.window.end.timestamp()
    axes.set_xlim(start, end)
    ticks = [start + (end - start) * step / 6 for step in range(7)]
    shape = "%H:%M:%S" if end - start < 3600 else "%m-%d %H:%M"
    axes.set_xticks(ticks, [_time(tick).strftime(shape) for tick in ticks], rotation=30)
    axes.set_xlabel("UTC")


def page(report: Report) -> str:
    charts = [
        ("Fleet GPU utilization", heat_map(report)),
        ("Idle GPU cost", idle_cost(report)),
        ("Availability", availability(report)),
        ("Endpoint latency", latency(report)),
        ("Alarm backtest", backtest(report)),
    ]
    sections = []
    for title, svg in charts:
        body = f'<figure class="chart">{svg}</figure>' if svg else "<p>No data for this chart.</p>"
        sections.append(f"<section><h2>{html.escape(title)}</h2>{body}</section>")
    tables = []
    for title, header, rows in render.tables(report):
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
        tables.append(f"<h3>{html.escape(title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(render.heading(report))}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
        "margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
        "figure.chart svg{max-width:100%;height:auto}</style></head><body>"
        f"<h1>{html.escape(render.heading(report))}</h1>{''.join(sections)}"
        f"<section><h2>Tables</h2>{''.join(tables)}</section></body></html>\n"
    )
