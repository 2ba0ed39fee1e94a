"""Assembles one report from CloudWatch and EC2: discover series, fetch them in batches, compute."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from agent.schema import ConfigError
from provisioning.alarms import AlarmDefinition
from provisioning.spec import Spec
from provisioning.state import StateReader
from report import backtest, endpoints
from report.backtest import Backtest
from report.endpoints import EndpointReport
from report.fetch import MAX_QUERIES_PER_CALL, Query, Reader
from report.hosts import (
    HostReport,
    HostSeries,
    Series,
    describe_instances,
    fleet_availability,
    host_reports,
    queries,
)
from report.prices import Prices
from report.window import Window


@dataclass(frozen=True)
class Scope:
    namespace: str
    naming: str
    stack: str  # "" without a spec: no alarms to backtest
    idle_threshold: float
    region: str
    alarm_prefix: str = ""  # backtest only the alarms whose name starts with this


@dataclass
class Report:
    window: Window
    scope: Scope
    hosts: list[HostReport]
    fleet_availability: float | None
    backtests: list[Backtest] = field(default_factory=list)
    endpoints: list[EndpointReport] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)


def build(scope: Scope, window: Window, prices: Prices, reader: Reader, spec: Spec | None = None) -> Report:
    finder = HostSeries(scope.namespace, scope.naming)
    series = finder.discover(reader)
    if not series:
        known = reader.list_metrics_any(scope.namespace)
        raise ConfigError([
            f'--namespace: "{scope.namespace}" holds no infrawatch host series under the '
            f'"{scope.naming}" naming profile' + ("" if known else " (ListMetrics finds no metric in it at all)")
        ])
    wanted = queries(series, scope.namespace, window)
    instances = describe_instances(reader, sorted({item.host for item in series}))
    reports: list[HostReport] = []
    found = False
    reader.expect(sum(len(stats) for stats in wanted.values()))
    for chunk in host_chunks(series, wanted):
        fetched = reader.fetch([query for item in chunk for query in wanted[item].values()], window.start, window.end)
        found = found or any(fetched.values())
        points = {item: {stat: fetched[query] for stat, query in wanted[item].items()} for item in chunk}
        reports += host_reports(window, chunk, points, instances, prices, scope.region, scope.idle_threshold)
    reader.expect(None)
    if not found:
        raise ConfigError([
            f'--since/--until: no datapoint in "{scope.namespace}" between {window.start.isoformat()} and '
            f"{window.end.isoformat()}"
        ])
    report = Report(window, scope, reports, fleet_availability(reports))
    alarms = owned_alarms(scope, reader) if scope.stack else []
    report.backtests = backtests(alarms, window, reader)
    if spec is not None:
        report.endpoints = endpoint_reports(spec, window, reader, alarms)
    report.calls = reader.calls
    return report


def host_chunks(series: list[Series], wanted: Mapping[Series, Mapping[str, Query]]) -> Iterator[list[Series]]:
    """Whole hosts packed into chunks of at most 500 queries (one GetMetricData call each): a chunk's
    datapoints are reduced to its hosts' figures before the next is read, so memory follows one call's
    answer, not the fleet's, and the calls stay ⌈queries / 500⌉ give or take a host per call."""
    by_host: dict[str, list[Series]] = {}
    for item in series:
        by_host.setdefault(item.host, []).append(item)
    chunk: list[Series] = []
    size = 0
    for host in sorted(by_host):
        count = sum(len(wanted[item]) for item in by_host[host])
        if chunk and size + count > MAX_QUERIES_PER_CALL:
            yield chunk
            chunk, size = [], 0
        chunk += by_host[host]
        size += count
    if chunk:
        yield chunk


def owned_alarms(scope: Scope, reader: Reader) -> list[AlarmDefinition]:
    """Every alarm the stack owns: named `<stack>/…` and marked as its own (its description's marker)."""
    found = StateReader(scope.stack, reader.caller).alarms()
    return [actual.definition for name, actual in sorted(found.items())
            if isinstance(actual.definition, AlarmDefinition) and actual.owned(scope.stack)
            and name.startswith(scope.alarm_prefix)]


def endpoint_reports(spec: Spec, window: Window, reader: Reader, alarms: list[AlarmDefinition]) -> list[EndpointReport]:
    found = endpoints.variants(spec, reader)
    wanted = {variant: endpoints.queries(variant, window) for variant in found}
    fetched = reader.fetch([query for queries in wanted.values() for query in queries.values()],
                           window.start, window.end)
    return [
        endpoints.report(variant, {key: fetched[query] for key, query in queries.items()}, alarms)
        for variant, queries in wanted.items()
    ]


def backtests(alarms: list[AlarmDefinition], window: Window, reader: Reader) -> list[Backtest]:
    """Each alarm replayed over the window."""
    results: list[Backtest] = []
    plan: list[tuple[AlarmDefinition, dict[str, Query]]] = []
    for alarm in alarms:
        reason = backtest.unsupported(alarm)
        if reason:
            results.append(Backtest(alarm.name, backtest.period_of(alarm), (), reason))
        else:
            plan.append((alarm, backtest.alarm_queries(alarm)))
    if plan:
        earliest = window.start - dt.timedelta(seconds=max(backtest.lookback(alarm) for alarm, _ in plan))
        fetched = reader.fetch([query for _, wanted in plan for query in wanted.values()], earliest, window.end)
        for alarm, wanted in plan:
            read = {key: fetched[query] for key, query in wanted.items()}
            values = backtest.values(alarm, read)
            results.append(backtest.replay(alarm, values, window.start, window.end, read.get(backtest.SAMPLES)))
    order = {alarm.name: index for index, alarm in enumerate(alarms)}
    return sorted(results, key=lambda item: order[item.alarm])

