"""Per SageMaker endpoint variant: invocations, 5XX and model error rates, ModelLatency p50/p90/p99 against
the thresholds of the stack's latency alarms.

Invocation5XXErrors and InvocationModelErrors count 1 per failing request, so their Sum over Invocations'
Sum is the error rate. ModelLatency is in microseconds; it is shown in milliseconds. No traffic means no
datapoints: an idle variant reports no rate and no latency ("n/a"), never 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from provisioning.alarm_catalogue import SAGEMAKER_NAMESPACE
from provisioning.alarms import AlarmDefinition
from provisioning.discovery import Discovery, Variant
from provisioning.spec import Spec
from report.fetch import Points, Query, Reader
from report.window import Window

SUMS = ("Invocations", "Invocation5XXErrors", "InvocationModelErrors")
LATENCY = "ModelLatency"
PERCENTILES = ("p50", "p90", "p99")
MICROSECONDS_PER_MS = 1000.0


@dataclass(frozen=True)
class EndpointReport:
    endpoint: str
    variant: str
    instance_type: str
    invocations: float | None
    error_5xx_rate: float | None
    model_error_rate: float | None
    latency_ms: Mapping[str, float | None]  # p50 / p90 / p99 over the window
    thresholds_ms: Mapping[str, float]  # the stack's latency alarms' thresholds, by percentile
    latency_timeline_ms: Mapping[int, float]  # p99 per period, for the chart

    def over(self, percentile: str) -> bool | None:
        value, threshold = self.latency_ms.get(percentile), self.thresholds_ms.get(percentile)
        return None if value is None or threshold is None else value > threshold


def variants(spec: Spec, reader: Reader) -> tuple[Variant, ...]:
    """The spec's endpoint variants as the provisioner finds them (DescribeEndpoint, DescribeEndpointConfig)."""
    if not spec.endpoints:
        return ()
    return Discovery(dataclasses.replace(spec, hosts=()), reader.caller).inventory().variants


def _dims(variant: Variant) -> tuple[tuple[str, str], ...]:
    return (("EndpointName", variant.endpoint), ("VariantName", variant.name))


def queries(variant: Variant, window: Window) -> dict[str, Query]:
    """One datapoint over the whole window per statistic, and p99 per period for the chart."""
    span = int((window.end - window.start).total_seconds())
    wanted = {metric: Query(SAGEMAKER_NAMESPACE, metric, _dims(variant), "Sum", span) for metric in SUMS}
    wanted.update({p: Query(SAGEMAKER_NAMESPACE, LATENCY, _dims(variant), p, span) for p in PERCENTILES})
    wanted["timeline"] = Query(SAGEMAKER_NAMESPACE, LATENCY, _dims(variant), "p99", window.period)
    return wanted


def report(variant: Variant, fetched: Mapping[str, Points], alarms: list[AlarmDefinition]) -> EndpointReport:
    def total(key: str) -> float | None:
        points = fetched[key]
        return sum(points.values()) if points else None

    invocations = total("Invocations")

    def rate(key: str) -> float | None:
        errors = total(key)
        if not invocations:
            return None
        return (errors or 0.0) / invocations

    def latency(key: str) -> float | None:
        points = fetched[key]
        return next(iter(points.values())) / MICROSECONDS_PER_MS if points else None

    thresholds = {
        alarm.extended_statistic: alarm.threshold / MICROSECONDS_PER_MS
        for alarm in alarms
        if alarm.metric_name == LATENCY and alarm.extended_statistic in PERCENTILES
        and alarm.dimensions == tuple(sorted(_dims(variant)))
    }
    return EndpointReport(
        variant.endpoint, variant.name, variant.instance_type, invocations, rate("Invocation5XXErrors"),
        rate("InvocationModelErrors"), {p: latency(p) for p in PERCENTILES}, thresholds,
        {slot: value / MICROSECONDS_PER_MS for slot, value in fetched["timeline"].items()},
    )
