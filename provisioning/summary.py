"""What a plan means for a person: each alarm in one line, how long the apply takes, what the alarms cost.

The apply time counts only the writes the rate limiter paces (`aws.DEFAULT_RATES`, the alarm writes at the
configured rate); the cost is the whole desired stack at CloudWatch's list prices, not only what changes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from provisioning.alarms import AlarmDefinition
from provisioning.plan import Plan

# CloudWatch list prices, us-east-1, USD per month (aws.amazon.com/cloudwatch/pricing, read 2026-12).
# A metric alarm is billed per metric it evaluates (a metric math alarm per metric in its expression);
# a period under 60 s is a high-resolution alarm. A Metrics Insights alarm is billed per metric its query
# analyzes, at the standard rate, and is outside the free tier; a composite alarm is billed per alarm.
# The first 3 dashboards of an account are free.
PRICES_AS_OF = "us-east-1 list prices, 2026-12"
STANDARD_ALARM_METRIC_USD = 0.10
HIGH_RESOLUTION_ALARM_METRIC_USD = 0.30
INSIGHTS_ALARM_METRIC_USD = 0.10
COMPOSITE_ALARM_USD = 0.50
DASHBOARD_USD = 3.00

COMPARISON_SIGNS = {
    "GreaterThanThreshold": ">", "GreaterThanOrEqualToThreshold": "≥",
    "LessThanThreshold": "<", "LessThanOrEqualToThreshold": "≤",
}


def _dimensions(dimensions: Iterable[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{name}={value}" for name, value in dimensions) + "}"


def _period(alarm: AlarmDefinition) -> int:
    return alarm.period or max((query.period for query in alarm.queries), default=0)


def alarm_detail(alarm: AlarmDefinition) -> str:
    """`InfraWatch GPUTemperature {GPU=0, InstanceId=i-1} Maximum > 85 for 3 of 3 × 60 s (missing: breaching)`."""
    if alarm.queries:
        expression = next(query for query in alarm.queries if query.return_data)
        watched = f"expression {expression.expression or expression.metric_name}"
        statistic = ", ".join(sorted({query.stat for query in alarm.queries if query.stat}))
    else:
        watched = f"{alarm.namespace} {alarm.metric_name} {_dimensions(alarm.dimensions)}"
        statistic = alarm.extended_statistic or alarm.statistic
    sign = COMPARISON_SIGNS.get(alarm.comparison, alarm.comparison)
    return (f"{watched} {statistic} {sign} {alarm.threshold:g} for {alarm.datapoints_to_alarm} of "
            f"{alarm.evaluation_periods} × {_period(alarm)} s (missing: {alarm.treat_missing_data})")


def detailed_lines(plan: Plan, alarms: Sequence[AlarmDefinition]) -> list[str]:
    """The plan's lines, each alarm's followed by an indented line saying what it watches."""
    by_name = {alarm.name: alarm for alarm in alarms}
    lines = []
    for change, line in zip(plan.changes, plan.lines(), strict=False):
        lines.append(line)
        alarm = by_name.get(change.name) if change.kind == "alarm" else None
        if alarm is not None:
            lines.append("    " + alarm_detail(alarm))
    return lines + plan.lines()[len(plan.changes):]


def apply_seconds(plan: Plan, rates: Mapping[str, float]) -> float:
    """Lower bound on the apply's wall time: each paced operation's writes spaced 1/rate apart."""
    counts = Counter(write.operation for change in plan.changes for write in change.writes)
    return sum(max(count - 1, 0) / rates[operation] for operation, count in counts.items() if operation in rates)


def alarm_metrics(alarm: AlarmDefinition, series: Mapping[str, int] | None = None) -> int:
    """Metrics an alarm is billed for; `series`: the metrics each Metrics Insights alarm's query analyzes."""
    if series and alarm.name in series:
        return series[alarm.name]
    return sum(1 for query in alarm.queries if not query.expression) if alarm.queries else 1


def monthly_cost(
    alarms: Sequence[AlarmDefinition], dashboards: int, series: Mapping[str, int] | None = None, composites: int = 0
) -> float:
    total = 0.0
    for alarm in alarms:
        if series and alarm.name in series:
            price = INSIGHTS_ALARM_METRIC_USD
        elif 0 < _period(alarm) < 60:
            price = HIGH_RESOLUTION_ALARM_METRIC_USD
        else:
            price = STANDARD_ALARM_METRIC_USD
        total += alarm_metrics(alarm, series) * price
    return total + composites * COMPOSITE_ALARM_USD + dashboards * DASHBOARD_USD


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def footer(
    plan: Plan, alarms: Sequence[AlarmDefinition], dashboards: int, rates: Mapping[str, float],
    series: Mapping[str, int] | None = None, composites: int = 0,
) -> list[str]:
    seconds = apply_seconds(plan, rates)
    shown = f"{math.ceil(seconds)} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    metrics = sum(alarm_metrics(alarm, series) for alarm in alarms)
    insights = f" ({_count(len(series), 'Metrics Insights alarm')} of them)" if series else ""
    paging = f", {_count(composites, 'composite alarm')}" if composites else ""
    return [
        f"Apply: {plan.writes} writes, about {shown} at "
        f"{rates['PutMetricAlarm']:g} alarm writes per second.",
        f"Cost of the stack: {_count(len(alarms), 'alarm')}{insights} over {_count(metrics, 'metric')}{paging} "
        f"and {_count(dashboards, 'dashboard')}, about "
        f"${monthly_cost(alarms, dashboards, series, composites):,.2f}/month ({PRICES_AS_OF}; an account's first "
        "3 dashboards and 10 alarm metrics are free).",
    ]
