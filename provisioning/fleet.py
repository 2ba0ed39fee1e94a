"""Fleet alarms: one CloudWatch Metrics Insights alarm per alarm kind for a whole group of hosts.

A `[[fleets]]` group is declared by what its agents publish, not by instance ids. Each host alarm kind
becomes one alarm on a query such as

    SELECT MAX(GPUTemperature) FROM SCHEMA("InfraWatch", GPU, InstanceId) GROUP BY InstanceId, GPU
    ORDER BY MAX() DESC

whose every returned series is a contributor of the alarm, so a host launched later joins it when its
first datapoint arrives ("Create an alarm based on a Multi Time Series Metrics Insights query"). The
SCHEMA is exactly the dimension set the agents publish under their naming profile
(`agent.naming.published_dimensions`) and the metric name is the profile's (`agent.naming.resolve`): a
query with another dimension set matches no series.

The documented quotas are checked before anything is written ("Metrics Insights quotas"): at most 200
Metrics Insights alarms per account and Region, 10,000 metrics scanned and 500 series returned per query,
3 hours of data, no sub-minute periods. A query that would scan more than 10,000 metrics is split by GPU
index or mount path, and refused when even one part is too big; one that returns more than 500 series
keeps its worst 500 (ORDER BY ... LIMIT 500), which hold every breaching series as long as fewer than 500
breach at once.

`scope = "host"` keeps per-host alarms for the hosts publishing now (found with ListMetrics), for small
fleets and for EC2 actions, which a Metrics Insights alarm cannot take.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agent.catalogue import METRICS
from agent.config import HOST_DIMENSION
from agent.fleet import HOST as HOSTNAME_DIMENSION
from agent.naming import profile, published_dimensions, resolve
from agent.schema import render
from provisioning.alarm_catalogue import (
    ABOVE,
    GPU,
    HOST_KINDS,
    HOSTS_REPORTING,
    MOUNT,
    VARIANT_KINDS,
    AlarmKind,
)
from provisioning.alarms import AlarmBuilder, AlarmDefinition, MetricQuery, is_insights_query
from provisioning.aws import Caller
from provisioning.discovery import AGENT_COMPONENT, Discovery, Host, published_key
from provisioning.spec import FLEET_SCOPE, AlarmSettings, Fleet, HostGroup, Spec

# Metrics Insights quotas (CloudWatch User Guide, "Metrics Insights quotas" and "Alarms on Metrics Insights
# queries"), per account and Region.
MAX_INSIGHTS_ALARMS = 200
MAX_SCANNED_METRICS = 10_000
MAX_RETURNED_SERIES = 500
MAX_LOOKBACK_SECONDS = 3 * 3600  # alarms evaluate the latest 3 hours of data only
MIN_PERIOD = 60  # no high-resolution data in Metrics Insights
# The only functions Metrics Insights has; a percentile or a metric math expression has no query.
FUNCTIONS = {"Average": "AVG", "Maximum": "MAX", "Minimum": "MIN", "Sum": "SUM", "SampleCount": "COUNT"}
QUERY_ID = "fleet"

HEARTBEAT_WHY = (
    "a host that stops publishing drops out of a query's result instead of breaching, so a Metrics Insights "
    "alarm cannot see a dead host: [fleets.reporting] counts the hosts publishing, or use scope = \"host\""
)
_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def per_resource_reason(kind: AlarmKind) -> str | None:
    """Why a kind cannot be a Metrics Insights alarm, or None when it can."""
    if kind.key == "heartbeat_missing":
        return HEARTBEAT_WHY
    if not kind.metric:
        return "metric math over three metrics ((4XX + 5XX) / Invocations); a Metrics Insights alarm has one query"
    if kind.statistic not in FUNCTIONS:
        return f"percentile {kind.statistic}: Metrics Insights has only {', '.join(sorted(FUNCTIONS.values()))}"
    if kind.per_core:
        return f"SageMaker sums it over {kind.per_core}, and each endpoint's count differs: divided per endpoint"
    return None


def _identifier(name: str) -> str:
    return name if _BARE.match(name) else '"' + name.replace('"', '\\"') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Query:
    """One Metrics Insights query, as data; `text` is what the alarm stores."""

    function: str
    metric: str
    namespace: str
    schema: tuple[str, ...]
    where: tuple[tuple[str, tuple[str, ...]], ...]  # (dimension, allowed values), ANDed
    group_by: tuple[str, ...]
    descending: bool
    limit: int = 0

    @property
    def text(self) -> str:
        schema = ", ".join([f'"{self.namespace}"', *(_identifier(name) for name in self.schema)])
        text = f"SELECT {self.function}({_identifier(self.metric)}) FROM SCHEMA({schema})"
        if self.where:
            text += " WHERE " + " AND ".join(
                f"{_identifier(name)} = {_literal(values[0])}" if len(values) == 1 else
                f"{_identifier(name)} IN ({', '.join(_literal(value) for value in values)})"
                for name, values in self.where
            )
        if self.group_by:
            text += " GROUP BY " + ", ".join(_identifier(name) for name in self.group_by)
            text += f" ORDER BY {self.function}() {'DESC' if self.descending else 'ASC'}"
        if self.limit:
            text += f" LIMIT {self.limit}"
        return text


@dataclass
class FleetAlarms:
    """What the fleets add to the stack: alarms, the series each Metrics Insights alarm analyzes, and the
    plan's notes (what stays per resource and why). Problems are spec problems (exit 2)."""

    alarms: list[AlarmDefinition] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)  # hosts of scope = "host" fleets, alarmed per host
    series: dict[str, int] = field(default_factory=dict)  # Metrics Insights alarm name -> series analyzed
    members: dict[str, list[str]] = field(default_factory=dict)  # fleet name -> its alarms' names
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class FleetBuilder:
    def __init__(self, spec: Spec, builder: AlarmBuilder, quiet: AlarmBuilder, caller: Caller | None) -> None:
        """`builder` makes alarms that notify; `quiet` alarms that notify nothing (a paged fleet's children,
        whose composites notify instead). `caller` reads ListMetrics where a fleet's hosts are not given."""
        self._spec = spec
        self._builder = builder
        self._quiet = quiet
        self._call = caller

    def build(self) -> FleetAlarms:
        result = FleetAlarms()
        for index, fleet in enumerate(self._spec.fleets):
            path = f"fleets[{index}]"
            builder = self._quiet if fleet.paging.enabled else self._builder
            if fleet.scope == FLEET_SCOPE:
                alarms = self._insights_alarms(fleet, path, builder, result)
            else:
                hosts = self.hosts(fleet)
                result.hosts += hosts
                alarms = [alarm for host in hosts for alarm in builder.host_alarms(host)]
                result.notes.append(f"fleet {fleet.name}: scope host, {len(hosts)} hosts publishing now, "
                                    f"{len(alarms)} alarms; hosts launched later need a rerun")
            result.alarms += alarms
            result.members[fleet.name] = [alarm.name for alarm in alarms]
        insights = len(result.series)
        if insights > MAX_INSIGHTS_ALARMS:
            result.problems.append(
                f"fleets: {insights} Metrics Insights alarms, more than the {MAX_INSIGHTS_ALARMS} CloudWatch "
                "allows per account and Region; fewer fleets, fewer alarm kinds, or scope = \"host\""
            )
        if self._spec.fleets and self._spec.endpoints:  # said where fleets are in use: what stays per endpoint
            for kind in VARIANT_KINDS:
                reason = per_resource_reason(kind)
                if reason and self._spec.alarms[kind.key].enabled:
                    result.notes.append(f"per resource: {kind.key} ({reason})")
        return result

    # --- Metrics Insights alarms ------------------------------------------------------------------

    def _insights_alarms(
        self, fleet: Fleet, path: str, builder: AlarmBuilder, result: FleetAlarms
    ) -> list[AlarmDefinition]:
        hosts, counted = fleet.hosts, False
        if not hosts:
            hosts, counted = max(len(self.hosts(fleet)), 1), True
        source = f"{hosts} hosts publishing now (ListMetrics)" if counted else f"hosts = {hosts}"
        alarms: list[AlarmDefinition] = []
        largest = 0
        for kind in HOST_KINDS:
            settings = self._spec.alarms[kind.key]
            if not settings.enabled or (kind.requires_gpus and not fleet.gpus):
                continue
            reason = per_resource_reason(kind)
            if reason:
                result.notes.append(f"fleet {fleet.name}: no {kind.key} alarm ({reason})")
                continue
            if (kind.target == GPU and not fleet.gpus) or (kind.target == MOUNT and not fleet.mounts):
                continue
            result.problems += self._period_problems(fleet, kind)
            per_host = fleet.gpus if kind.target == GPU else len(fleet.mounts) if kind.target == MOUNT else 1
            parts: list[tuple[str, tuple[str, ...]]] = [("", ())]
            if hosts * per_host > MAX_SCANNED_METRICS and per_host > 1:
                values = [str(index) for index in range(fleet.gpus)] if kind.target == GPU else list(fleet.mounts)
                parts = [(f"@{'gpu' if kind.target == GPU else ''}{value}", (value,)) for value in values]
                result.notes.append(
                    f"fleet {fleet.name}: {kind.key} split into {len(parts)} alarms, one per "
                    f"{'GPU' if kind.target == GPU else 'mount'}: one query would scan {hosts * per_host:,} "
                    f"metrics, more than {MAX_SCANNED_METRICS:,}"
                )
                per_host = 1
            series = hosts * per_host
            if series > MAX_SCANNED_METRICS:
                result.problems.append(
                    f"{path}.hosts: the {kind.key} query would scan {series:,} metrics ({source}), more than "
                    f"the {MAX_SCANNED_METRICS:,} a Metrics Insights query may; split the fleet with a filter"
                )
                continue
            limit = MAX_RETURNED_SERIES if series > MAX_RETURNED_SERIES else 0
            if limit:
                result.notes.append(
                    f"fleet {fleet.name}: {kind.key} watches the worst {limit} of {series:,} series (ORDER BY "
                    f"... LIMIT {limit}): every breaching series while fewer than {limit} breach at once"
                )
            largest = max(largest, series)
            for suffix, only in parts:
                query = self.query(fleet, kind, only, limit)
                alarm = builder.alarm(
                    kind, settings, f"{fleet.name}/{kind.key}{suffix}", _target(fleet, kind, only),
                    queries=(MetricQuery(id=QUERY_ID, expression=query.text, period=settings.period),),
                )
                alarms.append(alarm)
                result.series[alarm.name] = series
        if fleet.reporting.enabled:
            reporting = self.reporting_alarm(fleet, builder)
            alarms.append(reporting)
            result.series[reporting.name] = hosts
        result.notes.append(
            f"fleet {fleet.name}: {len(alarms)} Metrics Insights alarms ({source}); the largest query covers "
            f"{largest:,} series (quotas: {MAX_SCANNED_METRICS:,} scanned, {MAX_RETURNED_SERIES} returned, "
            f"{MAX_INSIGHTS_ALARMS} alarms per Region)"
        )
        return alarms

    def reporting_alarm(self, fleet: Fleet, builder: AlarmBuilder) -> AlarmDefinition:
        """The dead-host signal: a query without GROUP BY returns one series, the fleet's heartbeats counted per
        period ("Create a CloudWatch alarm based on a Metrics Insights query": aggregate monitoring), which a
        host that stops publishing lowers, while it only leaves the result of every GROUP BY query."""
        settings = fleet.reporting
        period = MIN_PERIOD * -(-settings.publish_interval // MIN_PERIOD)
        per_host = period // settings.publish_interval  # the fewest heartbeats a live host sends a period
        kind = dataclasses.replace(HOSTS_REPORTING, threshold=settings.min_hosts * per_host)
        alarm_settings = AlarmSettings(
            enabled=True, threshold=kind.threshold, severity=kind.severity, period=period,
            datapoints=kind.datapoints, evaluation_periods=kind.evaluation_periods,
        )
        heartbeat = next(item for item in HOST_KINDS if item.key == "heartbeat_missing")
        query = dataclasses.replace(self.query(fleet, heartbeat), function=FUNCTIONS[kind.statistic], group_by=())
        return builder.alarm(
            kind, alarm_settings, f"{fleet.name}/{kind.key}",
            f"fleet {fleet.name} (at least {settings.min_hosts} hosts × {per_host} per {period} s)",
            queries=(MetricQuery(id=QUERY_ID, expression=query.text, period=period),),
        )

    def _period_problems(self, fleet: Fleet, kind: AlarmKind) -> list[str]:
        settings = self._spec.alarms[kind.key]
        path = f"alarms.{kind.key}"
        problems = []
        if settings.period < MIN_PERIOD:
            problems.append(
                f"{path}.period: must be at least {MIN_PERIOD} s for the Metrics Insights alarms of fleet "
                f"{render(fleet.name)} (no sub-minute data), got {settings.period}"
            )
        if settings.period * settings.evaluation_periods > MAX_LOOKBACK_SECONDS:
            problems.append(
                f"{path}.evaluation_periods: period * evaluation_periods must be at most {MAX_LOOKBACK_SECONDS} s "
                f"for fleet {render(fleet.name)} (Metrics Insights alarms see 3 hours), "
                f"got {settings.period} * {settings.evaluation_periods}"
            )
        return problems

    def query(self, fleet: Fleet, kind: AlarmKind, only: Sequence[str] = (), limit: int = 0) -> Query:
        """The query of `kind` over `fleet`; `only`: the one GPU index or mount path of a split part."""
        naming = self._spec.naming
        host_dims = _host_dimensions(fleet)
        entry = METRICS[kind.metric]
        native = {name: "" for name in host_dims}
        native.update(dict(fleet.dimensions))
        name, _ = resolve(naming, kind.metric, {**native, **{dim: "0" for dim in entry.dimensions}})
        schema = published_dimensions(naming, kind.metric, host=host_dims)
        where: dict[str, tuple[str, ...]] = {key: (value,) for key, value in fleet.dimensions}
        where.update({key: (value,) for key, value in fleet.filter})
        where.update({key: (value,) for key, value in profile(naming).alias(kind.metric).constant_dimensions})
        if kind.target == MOUNT:
            key = published_key(naming, kind.metric, "MountPath", dict(native))
            where[key] = tuple(only) or fleet.mounts
        elif kind.target == GPU and only:
            where[published_key(naming, kind.metric, "GPU", dict(native))] = tuple(only)
        elif entry.dimensions == ("Component",):
            where.update({key: (value,) for key, value in AGENT_COMPONENT.items()})
        host_key = published_key(naming, kind.metric, _host_id(fleet), dict(native))
        fixed = {key for key, values in where.items() if len(values) == 1}
        rest = sorted(dim for dim in schema if dim not in fixed and dim != host_key)
        return Query(
            function=FUNCTIONS[kind.statistic], metric=name, namespace=self._spec.metric_namespace,
            schema=schema, where=tuple(sorted(where.items())), group_by=(host_key, *rest),
            descending=kind.comparison == ABOVE, limit=limit,
        )

    # --- hosts publishing now ---------------------------------------------------------------------

    def hosts(self, fleet: Fleet) -> list[Host]:
        """The fleet's hosts whose agents published a Heartbeat in the last 3 hours, as `Discovery` finds a
        `discover = true` group's: the fleet's filter is a dimension every one of their series carries."""
        if self._call is None:
            return []
        carried = tuple(sorted({**dict(fleet.dimensions), **dict(fleet.filter)}.items()))
        group = HostGroup(discover=True, dimensions=carried, gpus=fleet.gpus, mounts=fleet.mounts)
        only = dataclasses.replace(self._spec, hosts=(group,), endpoints=())
        return list(Discovery(only, self._call).inventory().hosts)


def account_quota_problems(caller: Caller, region: str, wanted: Iterable[str], deleted: Iterable[str]) -> list[str]:
    """The 200 Metrics Insights alarms per account and Region, counted with the Region's other alarms on queries
    (other stacks', and this stack's that the spec no longer wants but the plan keeps). Reads every alarm of the
    Region (DescribeAlarms, 100 a page): call it only when the plan creates a Metrics Insights alarm."""
    wanted, gone = set(wanted), set(deleted)
    others = sum(
        1 for page in caller.pages("cloudwatch", "DescribeAlarms", AlarmTypes=["MetricAlarm"], MaxRecords=100)
        for alarm in page.get("MetricAlarms", [])
        if alarm["AlarmName"] not in wanted | gone
        and any(is_insights_query(str(query.get("Expression", ""))) for query in alarm.get("Metrics", []))
    )
    if len(wanted) + others <= MAX_INSIGHTS_ALARMS:
        return []
    return [
        f"fleets: {len(wanted) + others} Metrics Insights alarms in {region} after this run ({len(wanted)} of this "
        f"spec, {others} already there from other stacks or kept), more than the {MAX_INSIGHTS_ALARMS} CloudWatch "
        "allows per account and Region; nothing was written"
    ]


def _host_id(fleet: Fleet) -> str:
    return HOST_DIMENSION if fleet.append_dimensions else HOSTNAME_DIMENSION


def _host_dimensions(fleet: Fleet) -> tuple[str, ...]:
    """Names of the dimensions the agents add to every series: identity, then static."""
    return (*(fleet.append_dimensions or (HOSTNAME_DIMENSION,)), *(name for name, _ in fleet.dimensions))


def _target(fleet: Fleet, kind: AlarmKind, only: Iterable[str]) -> str:
    values = list(only)
    if kind.target == GPU:
        return f"fleet {fleet.name}, " + (f"GPU {values[0]} of each host" if values else "each host and GPU")
    if kind.target == MOUNT:
        return f"fleet {fleet.name}, " + (f"{values[0]} of each host" if values else "each host and mount")
    return f"fleet {fleet.name}, each host"
