"""The desired metric alarms: one per alarm kind and target, from the spec, the inventory and the catalogues.

Host alarms name their series through `provisioning.series` (the agent's metric catalogue and naming
profile, with the device dimensions discovery read from the host), so an alarm watches exactly the series
the agent publishes. `AlarmDefinition` is also the normalized form an
existing alarm is read back into, so desired and actual compare field by field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.catalogue import METRICS
from provisioning.alarm_catalogue import (
    ABOVE,
    GPU,
    HOST,
    HOST_KINDS,
    MOUNT,
    SAGEMAKER_HOST_NAMESPACE,
    SAGEMAKER_NAMESPACE,
    THROUGHPUT_KEY,
    VARIANT,
    VARIANT_KINDS,
    AlarmKind,
)
from provisioning.discovery import AGENT_COMPONENT, Host, Inventory, Variant
from provisioning.series import published
from provisioning.spec import FLEET_SCOPE, AlarmSettings, Spec, ThroughputFloor

Dimensions = tuple[tuple[str, str], ...]

HOST_NAME_PART = "host"  # host alarms are named `<stack>/host/<host id>/<key>[@<series>]`
# The critical error rate counts what the service and the model did wrong; a client's bad requests (4XX)
# are the separate warning `endpoint_4xx_rate`, so a client's 4XX burst never pages.
ERROR_RATE_EXPRESSION = "IF(invocations > 0, (errors5xx + modelerrors) / invocations, 0)"


def ownership_marker(stack: str) -> str:
    """Ends every description this stack writes: DescribeAlarms pages alone tell its alarms, no tag reads."""
    return f"Managed by infrawatch stack {stack}."


def owns(description: str, stack: str) -> bool:
    return ownership_marker(stack) in description


def is_insights_query(expression: str) -> bool:
    """Whether a Metrics entry's expression is a Metrics Insights query (every one starts with SELECT) rather
    than metric math or a search."""
    return expression.lstrip().upper().startswith("SELECT ")


@dataclass(frozen=True)
class MetricQuery:
    """One entry of a metric math alarm's `Metrics`: a metric with a stat, or an expression."""

    id: str
    expression: str = ""
    label: str = ""
    namespace: str = ""
    metric_name: str = ""
    dimensions: Dimensions = ()
    period: int = 0
    stat: str = ""
    return_data: bool = True

    def request(self) -> dict[str, Any]:
        query: dict[str, Any] = {"Id": self.id, "ReturnData": self.return_data}
        if self.label:
            query["Label"] = self.label
        if self.expression:
            query["Expression"] = self.expression
            if self.period:  # a Metrics Insights query names its period; metric math takes its metrics'
                query["Period"] = self.period
        else:
            query["MetricStat"] = {
                "Metric": {
                    "Namespace": self.namespace, "MetricName": self.metric_name,
                    "Dimensions": [{"Name": name, "Value": value} for name, value in self.dimensions],
                },
                "Period": self.period,
                "Stat": self.stat,
            }
        return query

    @classmethod
    def from_described(cls, raw: Mapping[str, Any]) -> MetricQuery:
        stat = raw.get("MetricStat", {})
        metric = stat.get("Metric", {})
        return cls(
            id=raw["Id"], expression=raw.get("Expression", ""), label=raw.get("Label", ""),
            namespace=metric.get("Namespace", ""), metric_name=metric.get("MetricName", ""),
            dimensions=_dimensions(metric.get("Dimensions", [])),
            period=int(stat.get("Period", 0) or raw.get("Period", 0) or 0),
            stat=stat.get("Stat", ""), return_data=bool(raw.get("ReturnData", True)),
        )


@dataclass(frozen=True)
class AlarmDefinition:
    """A metric alarm as PutMetricAlarm takes it, normalized: dimensions and actions sorted, defaults set."""

    name: str
    description: str
    comparison: str
    threshold: float
    evaluation_periods: int
    datapoints_to_alarm: int
    treat_missing_data: str
    alarm_actions: tuple[str, ...] = ()
    ok_actions: tuple[str, ...] = ()
    insufficient_data_actions: tuple[str, ...] = ()
    actions_enabled: bool = True
    namespace: str = ""
    metric_name: str = ""
    dimensions: Dimensions = ()
    statistic: str = ""
    extended_statistic: str = ""
    period: int = 0
    queries: tuple[MetricQuery, ...] = ()
    evaluate_low_sample_count_percentile: str = ""

    def request(self) -> dict[str, Any]:
        """PutMetricAlarm's parameters, without Tags (applied only at creation; reconciled separately)."""
        params: dict[str, Any] = {
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "ActionsEnabled": self.actions_enabled,
            "AlarmActions": list(self.alarm_actions),
            "OKActions": list(self.ok_actions),
            "InsufficientDataActions": list(self.insufficient_data_actions),
            "ComparisonOperator": self.comparison,
            "Threshold": self.threshold,
            "EvaluationPeriods": self.evaluation_periods,
            "DatapointsToAlarm": self.datapoints_to_alarm,
            "TreatMissingData": self.treat_missing_data,
        }
        if self.queries:
            params["Metrics"] = [query.request() for query in self.queries]
        else:
            params.update(
                Namespace=self.namespace, MetricName=self.metric_name, Period=self.period,
                Dimensions=[{"Name": name, "Value": value} for name, value in self.dimensions],
            )
            if self.extended_statistic:
                params["ExtendedStatistic"] = self.extended_statistic
            else:
                params["Statistic"] = self.statistic
        if self.evaluate_low_sample_count_percentile:
            params["EvaluateLowSampleCountPercentile"] = self.evaluate_low_sample_count_percentile
        return params

    @classmethod
    def from_described(cls, raw: Mapping[str, Any]) -> AlarmDefinition:
        """An alarm from DescribeAlarms: defaults AWS leaves out filled in, server-set fields dropped."""
        evaluation_periods = int(raw["EvaluationPeriods"])
        return cls(
            name=raw["AlarmName"],
            description=raw.get("AlarmDescription", ""),
            comparison=raw["ComparisonOperator"],
            threshold=float(raw.get("Threshold", 0.0)),
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=int(raw.get("DatapointsToAlarm") or evaluation_periods),
            treat_missing_data=raw.get("TreatMissingData") or "missing",
            alarm_actions=tuple(sorted(raw.get("AlarmActions", []))),
            ok_actions=tuple(sorted(raw.get("OKActions", []))),
            insufficient_data_actions=tuple(sorted(raw.get("InsufficientDataActions", []))),
            actions_enabled=bool(raw.get("ActionsEnabled", True)),
            namespace=raw.get("Namespace", "") or "",
            metric_name=raw.get("MetricName", "") or "",
            dimensions=_dimensions(raw.get("Dimensions", [])),
            statistic=raw.get("Statistic", "") or "",
            extended_statistic=raw.get("ExtendedStatistic", "") or "",
            period=int(raw.get("Period") or 0),
            queries=tuple(MetricQuery.from_described(query) for query in raw.get("Metrics", []) or []),
            evaluate_low_sample_count_percentile=raw.get("EvaluateLowSampleCountPercentile", "") or "",
        )


def _dimensions(raw: list[Mapping[str, str]]) -> Dimensions:
    return tuple(sorted((item["Name"], item["Value"]) for item in raw))


@dataclass(frozen=True)
class Actions:
    """Where one severity notifies."""

    alarm: tuple[str, ...]
    ok: tuple[str, ...] = ()


class AlarmBuilder:
    def __init__(self, spec: Spec, actions: Mapping[str, Actions]) -> None:
        self._spec = spec
        self._actions = actions

    def build(self, inventory: Inventory) -> list[AlarmDefinition]:
        alarms = [alarm for host in inventory.hosts for alarm in self.host_alarms(host)]
        alarms += [alarm for variant in inventory.variants for alarm in self.variant_alarms(variant)]
        return alarms

    # --- hosts ------------------------------------------------------------------------------------

    def host_alarms(self, host: Host) -> list[AlarmDefinition]:
        alarms = []
        for kind in HOST_KINDS:
            settings = self._spec.alarms[kind.key]
            if not settings.enabled:
                continue
            for suffix, series in self._series(kind, host):
                namespace, name, dims = self._published(host, kind.metric, series)
                alarms.append(self.alarm(
                    kind, settings, f"{HOST_NAME_PART}/{host.instance_id}/{kind.key}{suffix}",
                    f"{host.instance_id}{_describe_series(series)}",
                    namespace=namespace, metric_name=name, dimensions=dims, statistic=kind.statistic,
                    period=settings.period,
                ))
        alarms += [self._throughput_alarm(host, floor) for floor in host.throughput_floors]
        return alarms

    @staticmethod
    def _series(kind: AlarmKind, host: Host) -> list[tuple[str, dict[str, str]]]:
        """(alarm name suffix, per-series dimensions) of every series of `kind` on `host`."""
        if kind.target == GPU:
            return [(f"@gpu{index}", {"GPU": index}) for index in host.gpus]
        if kind.target == MOUNT:
            return [(f"@{mount}", {"MountPath": mount}) for mount in host.mounts]
        if kind.requires_gpus and not host.gpus:
            return []
        return [("", dict(AGENT_COMPONENT) if METRICS[kind.metric].dimensions == ("Component",) else {})]

    def _published(self, host: Host, metric: str, series: dict[str, str]) -> tuple[str, str, Dimensions]:
        return published(self._spec.naming, self._spec.metric_namespace, host, metric, series)

    def _throughput_alarm(self, host: Host, floor: ThroughputFloor) -> AlarmDefinition:
        dims = {host.id_dimension: host.instance_id, **dict(host.dimensions), **dict(floor.dimensions)}
        name = floor.name or floor.metric
        kind = AlarmKind(
            THROUGHPUT_KEY, f"Throughput {name}", HOST, floor.metric, floor.statistic, "LessThanThreshold",
            floor.minimum, floor.unit, floor.period, floor.datapoints, floor.evaluation_periods,
            floor.severity, "breaching",
        )
        settings = AlarmSettings(
            enabled=True, threshold=floor.minimum, severity=floor.severity, period=floor.period,
            datapoints=floor.datapoints, evaluation_periods=floor.evaluation_periods,
        )
        return self.alarm(
            kind, settings, f"{HOST_NAME_PART}/{host.instance_id}/{THROUGHPUT_KEY}@{name}", host.instance_id,
            namespace=self._spec.metric_namespace, metric_name=floor.metric,
            dimensions=tuple(sorted(dims.items())), statistic=floor.statistic, period=floor.period,
        )

    # --- SageMaker endpoint variants ----------------------------------------------------------------

    def variant_alarms(self, variant: Variant) -> list[AlarmDefinition]:
        dims = (("EndpointName", variant.endpoint), ("VariantName", variant.name))
        target = f"{variant.endpoint}/{variant.name}"
        alarms = []
        for kind in VARIANT_KINDS:
            settings = self._spec.alarms[kind.key]
            if not settings.enabled:
                continue
            if kind.namespace == SAGEMAKER_HOST_NAMESPACE and not variant.instance_type:
                continue  # serverless variants publish no instance metrics
            name = f"sagemaker/{variant.endpoint}/{variant.name}/{kind.key}"
            if kind.key == "endpoint_error_rate":
                queries = _error_rate_queries(dims, settings)
                alarms.append(self.alarm(kind, settings, name, target, queries=queries))
            elif kind.per_core:
                if variant.vcpus if kind.per_core == "vcpus" else variant.gpus:
                    queries = _per_core_queries(kind, dims, settings, variant)
                    alarms.append(self.alarm(kind, settings, name, target, queries=queries))
            else:
                percentile = kind.statistic.startswith("p")
                alarms.append(self.alarm(
                    kind, settings, name, target, namespace=kind.namespace, metric_name=kind.metric,
                    dimensions=dims, statistic="" if percentile else kind.statistic,
                    extended_statistic=kind.statistic if percentile else "", period=settings.period,
                    evaluate_low_sample_count_percentile="ignore" if percentile else "",
                ))
        return alarms

    # --- common -----------------------------------------------------------------------------------

    def alarm(
        self, kind: AlarmKind, settings: AlarmSettings, name: str, target: str, **metric: Any
    ) -> AlarmDefinition:
        actions = self._actions[settings.severity]
        return AlarmDefinition(
            name=f"{self._spec.stack}/{name}",
            description=self._description(kind, settings, target),
            comparison=kind.comparison,
            threshold=settings.threshold * kind.scale,
            evaluation_periods=settings.evaluation_periods,
            datapoints_to_alarm=settings.datapoints,
            treat_missing_data=kind.missing_data,
            alarm_actions=tuple(sorted(actions.alarm)),
            ok_actions=tuple(sorted(actions.ok)),
            **metric,
        )

    def _description(self, kind: AlarmKind, settings: AlarmSettings, target: str) -> str:
        direction = "above" if kind.comparison == ABOVE else "below"
        unit = f" {kind.unit}" if kind.unit else ""
        converted = f" ({settings.threshold * kind.scale:g} µs)" if kind.scale != 1 else ""
        text = (
            f"{kind.title} of {target} {direction} {settings.threshold:g}{unit}{converted} in "
            f"{settings.datapoints} of {settings.evaluation_periods} periods of {settings.period} s "
            f"({settings.severity})."
        )
        if kind.missing_data == "breaching":
            text += " Missing data counts as breaching."
        text += " " + ownership_marker(self._spec.stack)
        if self._spec.runbook_url:
            text += f" Runbook: {self._spec.runbook_url}"
        return text


def host_of(stack: str, alarm_name: str) -> str:
    """The host id (instance id or hostname) in a host alarm's name; "" for any other alarm."""
    prefix = f"{stack}/{HOST_NAME_PART}/"
    return alarm_name.removeprefix(prefix).split("/", 1)[0] if alarm_name.startswith(prefix) else ""


def name_patterns(spec: Spec, severity: str) -> list[str]:
    """EventBridge `wildcard` filters matching the names of every alarm of `severity` this spec creates,
    for any host or variant: the names are built above as `host/<id>/<key>[@<series>]` and
    `sagemaker/<endpoint>/<variant>/<key>`, and ids, endpoint and variant names never contain `/`; a fleet's
    as `<fleet>/<key>[@<series>]` (`provisioning.fleet`), or only its composite `<fleet>/<severity>` when paged."""
    patterns = set()
    for kind in (*HOST_KINDS, *VARIANT_KINDS):
        settings = spec.alarms[kind.key]
        if not settings.enabled or settings.severity != severity:
            continue
        if kind.target == VARIANT:
            patterns.add(f"{spec.stack}/sagemaker/*/{kind.key}")
        else:
            per_series = "@*" if kind.target in (GPU, MOUNT) else ""
            patterns.add(f"{spec.stack}/{HOST_NAME_PART}/*/{kind.key}{per_series}")
    for group in spec.hosts:
        for floor in group.throughput_floors:
            if floor.severity == severity:
                patterns.add(f"{spec.stack}/{HOST_NAME_PART}/*/{THROUGHPUT_KEY}@{floor.name or floor.metric}")
    for fleet in spec.fleets:
        if fleet.scope != FLEET_SCOPE:
            continue  # per-host alarms, named and matched as a [[hosts]] group's above
        if fleet.paging.enabled:
            patterns.add(f"{spec.stack}/{fleet.name}/{severity}")  # its composite: the children notify nothing
            continue
        for kind in HOST_KINDS:
            settings = spec.alarms[kind.key]
            if settings.enabled and settings.severity == severity:
                patterns.update((f"{spec.stack}/{fleet.name}/{kind.key}", f"{spec.stack}/{fleet.name}/{kind.key}@*"))
    return sorted(patterns)


def _describe_series(series: dict[str, str]) -> str:
    if "GPU" in series:
        return f" GPU {series['GPU']}"
    if "MountPath" in series:
        return f" {series['MountPath']}"
    return ""


def _error_rate_queries(dims: Dimensions, settings: AlarmSettings) -> tuple[MetricQuery, ...]:
    def summed(query_id: str, metric: str) -> MetricQuery:
        return MetricQuery(
            id=query_id, namespace=SAGEMAKER_NAMESPACE, metric_name=metric, dimensions=dims,
            period=settings.period, stat="Sum", return_data=False,
        )

    return (
        summed("invocations", "Invocations"),
        summed("errors5xx", "Invocation5XXErrors"),
        summed("modelerrors", "InvocationModelErrors"),
        MetricQuery(id="rate", expression=ERROR_RATE_EXPRESSION, label="Error rate"),
    )


def _per_core_queries(
    kind: AlarmKind, dims: Dimensions, settings: AlarmSettings, variant: Variant
) -> tuple[MetricQuery, ...]:
    cores = variant.vcpus if kind.per_core == "vcpus" else variant.gpus
    return (
        MetricQuery(
            id="summed", namespace=kind.namespace, metric_name=kind.metric, dimensions=dims,
            period=settings.period, stat=kind.statistic, return_data=False,
        ),
        MetricQuery(id="utilization", expression=f"summed / {cores}",
                    label=f"{kind.metric} per core (%)" + INSTANCE_LABEL.format(
                        type=variant.instance_type, vcpus=variant.vcpus, gpus=variant.gpus)),
    )


# The end of a per-core alarm's label: the instance type's counts it divides by, so a rerun reads them from the
# alarm (DescribeAlarms) instead of asking EC2 (DescribeInstanceTypes) again; a type's counts never change.
INSTANCE_LABEL = " of {type}: {vcpus} vCPUs, {gpus} GPUs"
INSTANCE_COUNTS = re.compile(r" of (\S+): (\d+) vCPUs, (\d+) GPUs$")


def instance_counts(alarms: Iterable[object]) -> dict[str, tuple[int, int]]:
    """{SageMaker instance type: (vCPUs, GPUs)} as this stack's per-core alarms recorded them (composites,
    also described, have none)."""
    found = {}
    for alarm in alarms:
        for query in alarm.queries if isinstance(alarm, AlarmDefinition) else ():
            match = INSTANCE_COUNTS.search(query.label)
            if match:
                found[match[1]] = (int(match[2]), int(match[3]))
    return found

