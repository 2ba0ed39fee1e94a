"""Pre-flight validation of every alarm and dashboard against CloudWatch's limits, before anything is written.

moto accepts anything, and CloudWatch rejects a bad alarm only when it is put, half-way through an apply.
Each limit is a named constant; each problem is one line: `alarm "<name>": what is allowed, got value`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from agent.cloudwatch_rules import MAX_DIMENSIONS
from provisioning.alarms import AlarmDefinition, Dimensions, MetricQuery
from provisioning.aws import Caller
from provisioning.dashboards import (
    MAX_METRICS,
    MAX_STATUS_ALARMS,
    MAX_WIDGET_METRICS,
    MAX_WIDGETS,
    DashboardDefinition,
    metric_count,
)

MAX_NAME_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 1024
MAX_ACTIONS_PER_STATE = 5
MAX_METRIC_QUERIES = 10
HIGH_RESOLUTION_PERIODS = (10, 30)
AWS_NAMESPACE_MIN_PERIOD = 60  # AWS/ namespaces publish at most once a minute
MAX_EVALUATION_SECONDS = 86_400  # Period * EvaluationPeriods
MAX_DASHBOARD_NAME_LENGTH = 255
MAX_DATA_QUERIES = 500  # GetMetricData: at most 500 queries per request
RECENT_DATA = timedelta(hours=1)
DATA_PERIOD = timedelta(minutes=1)
QUERY_ID = re.compile(r"^[a-z][A-Za-z0-9_]*$")
DASHBOARD_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def alarm_problems(alarm: AlarmDefinition) -> list[str]:
    return [f'alarm "{alarm.name}": {problem}' for problem in _alarm_problems(alarm)]


def _alarm_problems(alarm: AlarmDefinition) -> Iterable[str]:
    if not 1 <= len(alarm.name) <= MAX_NAME_LENGTH:
        yield f"AlarmName must be 1..{MAX_NAME_LENGTH} characters, got {len(alarm.name)}"
    if len(alarm.description) > MAX_DESCRIPTION_LENGTH:
        yield (
            f"AlarmDescription must be at most {MAX_DESCRIPTION_LENGTH} characters, "
            f"got {len(alarm.description)}"
        )
    for field, actions in (
        ("AlarmActions", alarm.alarm_actions), ("OKActions", alarm.ok_actions),
        ("InsufficientDataActions", alarm.insufficient_data_actions),
    ):
        if len(actions) > MAX_ACTIONS_PER_STATE:
            yield f"{field} must have at most {MAX_ACTIONS_PER_STATE} actions, got {len(actions)}"
    if alarm.evaluation_periods < 1:
        yield f"EvaluationPeriods must be at least 1, got {alarm.evaluation_periods}"
    if not 1 <= alarm.datapoints_to_alarm <= alarm.evaluation_periods:
        yield (
            f"DatapointsToAlarm must be 1..EvaluationPeriods ({alarm.evaluation_periods}), "
            f"got {alarm.datapoints_to_alarm}"
        )
    if not math.isfinite(alarm.threshold):
        yield f"Threshold must be a finite number, got {alarm.threshold}"
    if alarm.queries:
        yield from _math_problems(alarm)
    else:
        yield from _single_metric_problems(alarm)


def _single_metric_problems(alarm: AlarmDefinition) -> Iterable[str]:
    if bool(alarm.statistic) == bool(alarm.extended_statistic):
        yield (
            "exactly one of Statistic and ExtendedStatistic must be set, "
            f'got "{alarm.statistic}" and "{alarm.extended_statistic}"'
        )
    if not alarm.namespace or not alarm.metric_name:
        yield "Namespace and MetricName must be set"
    yield from _period_problems(alarm.period, alarm.namespace, alarm.evaluation_periods)
    if len(alarm.dimensions) > MAX_DIMENSIONS:
        yield f"Dimensions must be at most {MAX_DIMENSIONS}, got {len(alarm.dimensions)}"


def _math_problems(alarm: AlarmDefinition) -> Iterable[str]:
    single = (alarm.namespace, alarm.metric_name, alarm.statistic, alarm.extended_statistic, alarm.dimensions)
    if any(single) or alarm.period:
        yield "a metric math alarm must not set Namespace, MetricName, Statistic, Dimensions or Period"
    queries = alarm.queries
    if len(queries) > MAX_METRIC_QUERIES:
        yield f"Metrics must have at most {MAX_METRIC_QUERIES} entries, got {len(queries)}"
    returned = [query.id for query in queries if query.return_data]
    if len(returned) != 1:
        yield f"exactly one of Metrics must have ReturnData true, got {len(returned)}"
    ids = [query.id for query in queries]
    for query_id in ids:
        if not QUERY_ID.match(query_id):
            yield f'Metrics Id must match {QUERY_ID.pattern}, got "{query_id}"'
    if len(set(ids)) != len(ids):
        yield f"Metrics Ids must be unique, got {ids}"
    periods = {query.period for query in queries if not query.expression}
    if len(periods) > 1:
        yield f"every metric of Metrics must have the same Period, got {sorted(periods)}"
    for query in queries:
        yield from _query_problems(query, alarm.evaluation_periods)


def _query_problems(query: MetricQuery, evaluation_periods: int) -> Iterable[str]:
    if bool(query.expression) == bool(query.metric_name):
        yield f'Metrics "{query.id}" must have exactly one of Expression and MetricStat'
    if query.metric_name:
        if not query.stat:
            yield f'Metrics "{query.id}" must have a Stat'
        if len(query.dimensions) > MAX_DIMENSIONS:
            count = len(query.dimensions)
            yield f'Metrics "{query.id}" Dimensions must be at most {MAX_DIMENSIONS}, got {count}'
        yield from (f'Metrics "{query.id}" {problem}'
                    for problem in _period_problems(query.period, query.namespace, evaluation_periods))


def _period_problems(period: int, namespace: str, evaluation_periods: int) -> Iterable[str]:
    if not (period in HIGH_RESOLUTION_PERIODS or (period > 0 and period % 60 == 0)):
        yield f"Period must be 10, 30 or a multiple of 60, got {period}"
    elif namespace.startswith("AWS/") and period < AWS_NAMESPACE_MIN_PERIOD:
        yield f"Period must be at least {AWS_NAMESPACE_MIN_PERIOD} for an AWS/ namespace, got {period}"
    if period * evaluation_periods > MAX_EVALUATION_SECONDS:
        yield (
            f"Period * EvaluationPeriods must be at most {MAX_EVALUATION_SECONDS} seconds, "
            f"got {period} * {evaluation_periods}"
        )


def dashboard_problems(dashboard: DashboardDefinition) -> list[str]:
    prefix = f'dashboard "{dashboard.name}": '
    problems = []
    if not DASHBOARD_NAME.match(dashboard.name) or len(dashboard.name) > MAX_DASHBOARD_NAME_LENGTH:
        problems.append(f"name must be 1..{MAX_DASHBOARD_NAME_LENGTH} letters, digits, - or _")
    widgets: list[dict[str, Any]] = json.loads(dashboard.body)["widgets"]
    if len(widgets) > MAX_WIDGETS:
        problems.append(f"must have at most {MAX_WIDGETS} widgets, got {len(widgets)}")
    total = sum(metric_count(widget) for widget in widgets)
    if total > MAX_METRICS:
        problems.append(f"must have at most {MAX_METRICS} metrics, got {total}")
    for widget in widgets:
        title = widget.get("properties", {}).get("title", "")
        count = metric_count(widget)
        if count > MAX_WIDGET_METRICS:
            problems.append(f'widget "{title}" must have at most {MAX_WIDGET_METRICS} metrics, got {count}')
        alarms = widget.get("properties", {}).get("alarms", [])
        if widget.get("type") == "alarm" and not 1 <= len(alarms) <= MAX_STATUS_ALARMS:
            problems.append(f'widget "{title}" must have 1..{MAX_STATUS_ALARMS} alarms, got {len(alarms)}')
    return [prefix + problem for problem in problems]


def problems(alarms: Iterable[AlarmDefinition], dashboards: Iterable[DashboardDefinition]) -> list[str]:
    """Every problem of every alarm and dashboard, and names used twice."""
    found: list[str] = []
    seen: set[str] = set()
    for alarm in alarms:
        if alarm.name in seen:
            found.append(f'alarm "{alarm.name}": AlarmName is used by two alarms')
        seen.add(alarm.name)
        found += alarm_problems(alarm)
    for dashboard in dashboards:
        found += dashboard_problems(dashboard)
    return found


Series = tuple[str, str, Dimensions]  # namespace, metric name, dimensions


def _watched(alarm: AlarmDefinition) -> list[Series]:
    if not alarm.queries:
        return [(alarm.namespace, alarm.metric_name, alarm.dimensions)]
    return [(query.namespace, query.metric_name, query.dimensions) for query in alarm.queries if query.metric_name]


def series_without_data(alarms: Iterable[AlarmDefinition], caller: Caller, now: datetime) -> list[str]:
    """One warning per alarm watching a series with no datapoint in the last hour: a misspelt dimension, a
    host that is down, or an agent with another naming profile all look like this, and such an alarm never
    fires (or, breaching on missing data, always does)."""
    alarms = list(alarms)
    # Whole minutes, up to the end of the current one: the agent stamps a minute's datapoint with the minute's
    # start, and EndTime is exclusive, so a window ending at `now` would miss a datapoint stamped this minute.
    end = now.replace(second=0, microsecond=0) + DATA_PERIOD
    series = sorted({watched for alarm in alarms for watched in _watched(alarm)})
    ids = {watched: f"s{index}" for index, watched in enumerate(series)}
    with_data: set[str] = set()
    for start in range(0, len(series), MAX_DATA_QUERIES):
        queries = [
            {"Id": ids[watched], "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": watched[0], "MetricName": watched[1],
                           "Dimensions": [{"Name": name, "Value": value} for name, value in watched[2]]},
                "Period": int(DATA_PERIOD.total_seconds()), "Stat": "SampleCount",
            }}
            for watched in series[start:start + MAX_DATA_QUERIES]
        ]
        for page in caller.pages(
            "cloudwatch", "GetMetricData", MetricDataQueries=queries, StartTime=end - RECENT_DATA, EndTime=end
        ):
            with_data.update(result["Id"] for result in page.get("MetricDataResults", []) if result.get("Values"))
    warnings = []
    for alarm in alarms:
        missing = [watched for watched in _watched(alarm) if ids[watched] not in with_data]
        if missing:
            shown = "; ".join(
                f"{namespace} {name} {{{', '.join(f'{key}={value}' for key, value in dims)}}}"
                for namespace, name, dims in missing
            )
            warnings.append(f'alarm "{alarm.name}": no datapoints in the last hour for {shown}')
    return warnings
