"""Dashboards for the fleet's hosts and each SageMaker endpoint: deterministic, within CloudWatch's limits.

A `[[fleets]]` group of scope "fleet" has no hosts to draw: its row on the fleet dashboard graphs each of its
Metrics Insights queries (a metric widget whose `metrics` entry is `{"expression": <query>}`, as for a math or
search expression: "Dashboard Body Structure and Syntax") and shows the state of its alarms and composites in an
alarm status widget.

Same spec, same bytes: bodies are canonical JSON with widgets in inventory order. A fleet too large for
one dashboard (500 widgets, 2,500 metrics) continues on `<stack>-fleet-2`, `-3`, …; alarm status widgets
take at most 100 alarms each. Dashboards cannot carry tags, so the first widget of every dashboard is a
text widget whose marker (`managed-by=infrawatch`, the stack and the region) is what ownership and `--prune`
check. Dashboards are global to the account, so their names and marker carry the region.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.naming import profile, resolve
from provisioning.alarm_catalogue import SAGEMAKER_HOST_NAMESPACE, SAGEMAKER_NAMESPACE
from provisioning.alarms import AlarmDefinition, is_insights_query
from provisioning.aws import Account
from provisioning.composite import CompositeDefinition
from provisioning.discovery import AGENT_COMPONENT, Host, Inventory, Variant
from provisioning.notifications import canonical_json
from provisioning.series import published
from provisioning.spec import FLEET_SCOPE, Spec

MAX_WIDGETS = 500  # per dashboard
MAX_METRICS = 2_500  # per dashboard
MAX_WIDGET_METRICS = 500  # per metric widget
MAX_STATUS_ALARMS = 100  # per alarm status widget
GRID_COLUMNS = 24
WIDGET_WIDTH = 8
WIDGET_HEIGHT = 6
HEADER_HEIGHT = 2
PERIOD = 60


@dataclass(frozen=True)
class DashboardDefinition:
    name: str
    body: str  # canonical JSON


def marker(stack: str, region: str) -> str:
    return f"`managed-by=infrawatch` `infrawatch:stack={stack}` `infrawatch:region={region}`"


def is_owned(body: str, stack: str, region: str) -> bool:
    """Whether a dashboard body carries this stack's marker, for this region, in its first widget."""
    try:
        widgets = json.loads(body).get("widgets", [])
    except (ValueError, AttributeError):
        return False
    if not widgets or widgets[0].get("type") != "text":
        return False
    return marker(stack, region) in str(widgets[0].get("properties", {}).get("markdown", ""))


def name_prefix(stack: str, region: str) -> str:
    """Dashboards are global to the account, alarms are not: the same stack applied in two regions keeps a
    set of dashboards per region, each plotting its own region's series."""
    return f"{stack}-{region}-"


def fleet_name(stack: str, region: str, index: int) -> str:
    base = f"{name_prefix(stack, region)}fleet"
    return base if index == 0 else f"{base}-{index + 1}"


def endpoint_name(stack: str, region: str, endpoint: str) -> str:
    return f"{name_prefix(stack, region)}endpoint-{endpoint}"


def metric_count(widget: Mapping[str, Any]) -> int:
    return len(widget.get("properties", {}).get("metrics", []))


class DashboardBuilder:
    def __init__(
        self, spec: Spec, account: Account, alarms: Sequence[AlarmDefinition],
        composites: Sequence[CompositeDefinition] = (),
    ) -> None:
        self._spec = spec
        self._account = account
        self._alarms = alarms
        self._composites = composites

    def build(self, inventory: Inventory) -> list[DashboardDefinition]:
        dashboards = self.fleet(inventory.hosts)
        for endpoint in inventory.endpoints:
            variants = [variant for variant in inventory.variants if variant.endpoint == endpoint]
            dashboards.append(self.endpoint(endpoint, variants))
        return dashboards

    # --- fleet ------------------------------------------------------------------------------------

    def fleet(self, hosts: Sequence[Host]) -> list[DashboardDefinition]:
        """The fleet-scope groups' rows, then host rows, packed into as few dashboards as the limits allow."""
        pages: list[list[list[dict[str, Any]]]] = []
        widgets = metrics = 0
        rows = [self._fleet_row(fleet.name) for fleet in self._spec.fleets if fleet.scope == FLEET_SCOPE]
        for row in [row for row in rows if row] + [self._host_row(host) for host in hosts]:
            row_metrics = sum(metric_count(widget) for widget in row)
            if not pages or widgets + len(row) > MAX_WIDGETS or metrics + row_metrics > MAX_METRICS:
                pages.append([])
                widgets, metrics = 1, 0  # the header
            pages[-1].append(row)
            widgets += len(row)
            metrics += row_metrics
        return [
            self._dashboard(
                fleet_name(self._spec.stack, self._account.region, index), f"Fleet ({index + 1} of {len(pages)})",
                rows,
            )
            for index, rows in enumerate(pages)
        ]

    def _fleet_row(self, fleet: str) -> list[dict[str, Any]]:
        """One graph per Metrics Insights alarm of the fleet, its query as the alarm evaluates it, and the state
        of the fleet's alarms and composites."""
        prefix = f"{self._spec.stack}/{fleet}/"
        widgets = []
        for alarm in self._alarms:
            queries = [query for query in alarm.queries if is_insights_query(query.expression)]
            if not alarm.name.startswith(prefix) or not queries:
                continue
            properties: dict[str, Any] = {
                "title": f"{fleet}: {alarm.name.removeprefix(prefix)}", "region": self._account.region,
                "view": "timeSeries", "stacked": False, "period": queries[0].period,
                "metrics": [[{"expression": queries[0].expression, "id": "q0",
                              "label": alarm.name.removeprefix(prefix)}]],
                "annotations": {"horizontal": [{"label": "threshold", "value": alarm.threshold}]},
            }
            widgets.append({"type": "metric", "properties": properties})
        names = [alarm.name for alarm in self._alarms if alarm.name.startswith(prefix)]
        names += [composite.name for composite in self._composites if composite.name.startswith(prefix)]
        return widgets + self._status_widgets(f"fleet {fleet}: alarms and paging composites", names) if widgets else []

    def _host_row(self, host: Host) -> list[dict[str, Any]]:
        instance = host.instance_id
        widgets = [
            self._metric_widget(f"{instance}: CPU and memory (%)", [
                self._host_metric(host, "CPUUtilization", {}),
                self._host_metric(host, "MemoryUtilization", {}),
            ], percent=True),
        ]
        if host.gpus:
            widgets.append(self._metric_widget(f"{instance}: GPU utilization (%)", [
                self._host_metric(host, "HostGPUUtilization", {}),
                *(self._host_metric(host, "GPUUtilization", {"GPU": index}) for index in host.gpus),
            ], percent=True))
            widgets.append(self._metric_widget(f"{instance}: GPU memory utilization (%)", [
                self._host_metric(host, "GPUMemoryUtilization", {"GPU": index}) for index in host.gpus
            ], percent=True))
        if host.mounts:
            widgets.append(self._metric_widget(f"{instance}: storage utilization (%)", [
                self._host_metric(host, "StorageUtilization", {"MountPath": mount}) for mount in host.mounts
            ], percent=True))
        widgets.append(self._metric_widget(f"{instance}: disk and network throughput (bytes/s)", [
            line
            for index, (metric, dimension) in enumerate((
                ("DiskReadBytesPerSecond", "Device"), ("DiskWriteBytesPerSecond", "Device"),
                ("NetworkReceiveBytesPerSecond", "Interface"), ("NetworkTransmitBytesPerSecond", "Interface"),
            ))
            for line in self._throughput(host, metric, dimension, index)
        ]))
        if host.throughput_floors:
            widgets.append(self._metric_widget(f"{instance}: application throughput", [
                [self._spec.metric_namespace, floor.metric,
                 *_flat(self._floor_dimensions(host, floor.dimensions)), {"stat": floor.statistic}]
                for floor in host.throughput_floors
            ]))
        widgets.append(self._metric_widget(f"{instance}: agent health", [
            self._host_metric(host, "Heartbeat", AGENT_COMPONENT, stat="Sum"),
            self._host_metric(host, "DatapointsPublished", AGENT_COMPONENT, stat="Sum"),
        ]))
        widgets += self._status_widgets(f"{instance}: alarms", self._named(f"{self._spec.stack}/host/{instance}/"))
        return widgets

    def _host_metric(
        self, host: Host, metric: str, series: Mapping[str, str], stat: str = "Average"
    ) -> list[Any]:
        namespace, name, dims = published(self._spec.naming, self._spec.metric_namespace, host, metric, series)
        return [namespace, name, *_flat(dims), {"stat": stat}]

    def _floor_dimensions(self, host: Host, extra: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        return sorted({host.id_dimension: host.instance_id, **dict(host.dimensions), **dict(extra)}.items())

    def _throughput(self, host: Host, metric: str, dimension: str, index: int) -> list[list[Any]]:
        """Bytes per second of every device or interface, found by a SEARCH: they are whatever the host has,
        known only to its agent.

        A per-second rate (native) is averaged. A delta per collection interval (cwagent, as the CloudWatch
        agent publishes diskio_*_bytes and net_bytes_*) is summed over the period, which is the bytes of
        the period whatever the collection interval, and divided by the period.
        """
        sample = {host.id_dimension: host.instance_id, **dict(host.dimensions), dimension: "*"}
        name, names = resolve(self._spec.naming, metric, sample)
        schema = ",".join([self._spec.metric_namespace, *sorted(names)])
        filters = " ".join(f'{key}="{value}"' for key, value in sorted(names.items()) if value != "*")

        def search(statistic: str) -> str:
            return f"SEARCH('{{{schema}}} MetricName=\"{name}\" {filters}', '{statistic}', {PERIOD})"

        if not profile(self._spec.naming).alias(metric).per_interval:
            return [[{"expression": search("Average"), "id": f"search{index}", "label": name}]]
        return [
            [{"expression": search("Sum"), "id": f"sum{index}", "label": f"{name} per period", "visible": False}],
            [{"expression": f"sum{index}/{PERIOD}", "id": f"search{index}", "label": f"{name} per second"}],
        ]

    # --- SageMaker endpoints ----------------------------------------------------------------------

    def endpoint(self, endpoint: str, variants: Sequence[Variant]) -> DashboardDefinition:
        rows = [self._variant_row(variant) for variant in variants]
        name = endpoint_name(self._spec.stack, self._account.region, endpoint)
        return self._dashboard(name, f"SageMaker endpoint {endpoint}", rows)

    def _variant_row(self, variant: Variant) -> list[dict[str, Any]]:
        dims = ["EndpointName", variant.endpoint, "VariantName", variant.name]
        label = f"{variant.endpoint}/{variant.name}"

        def metric(namespace: str, name: str, stat: str, **options: Any) -> list[Any]:
            return [namespace, name, *dims, {"stat": stat, **options}]

        widgets = [
            self._metric_widget(f"{label}: invocations", [metric(SAGEMAKER_NAMESPACE, "Invocations", "Sum")]),
            self._metric_widget(f"{label}: error rates (fraction)", [
                metric(SAGEMAKER_NAMESPACE, name, "Average")
                for name in ("Invocation4XXErrors", "Invocation5XXErrors", "InvocationModelErrors")
            ]),
            self._metric_widget(f"{label}: latency (microseconds)", [
                *(metric(SAGEMAKER_NAMESPACE, "ModelLatency", stat, label=f"ModelLatency {stat}")
                  for stat in ("p50", "p90", "p99")),
                metric(SAGEMAKER_NAMESPACE, "OverheadLatency", "p99", label="OverheadLatency p99"),
            ]),
        ]
        if variant.instance_type:
            utilization = self._host_utilization(variant, dims)
            widgets.append(self._metric_widget(f"{label}: host utilization (%)", utilization, percent=True))
        widgets += self._status_widgets(f"{label}: alarms", self._named(f"{self._spec.stack}/sagemaker/{label}/"))
        return widgets

    @staticmethod
    def _host_utilization(variant: Variant, dims: list[str]) -> list[list[Any]]:
        lines: list[list[Any]] = []
        for index, (name, cores) in enumerate((
            ("CPUUtilization", variant.vcpus), ("MemoryUtilization", 1), ("DiskUtilization", 1),
            ("GPUUtilization", variant.gpus), ("GPUMemoryUtilization", variant.gpus),
        )):
            if not cores:
                continue
            if cores == 1:
                lines.append([SAGEMAKER_HOST_NAMESPACE, name, *dims, {"stat": "Average"}])
                continue
            # Summed over cores in the metric: divide so that 100 means every core busy.
            summed = {"stat": "Average", "id": f"m{index}", "visible": False}
            lines.append([SAGEMAKER_HOST_NAMESPACE, name, *dims, summed])
            normalized = {"expression": f"m{index} / {cores}", "id": f"e{index}", "label": f"{name} per core"}
            lines.append([normalized])
        return lines

    # --- common -----------------------------------------------------------------------------------

    def _metric_widget(
        self, title: str, metrics: list[list[Any]], *, percent: bool = False
    ) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "title": title, "metrics": metrics, "region": self._account.region, "view": "timeSeries",
            "stacked": False, "period": PERIOD,
        }
        if percent:
            properties["yAxis"] = {"left": {"min": 0, "max": 100}}
        return {"type": "metric", "properties": properties}

    def _named(self, prefix: str) -> list[str]:
        return [alarm.name for alarm in self._alarms if alarm.name.startswith(prefix)]

    def _status_widgets(self, title: str, names: Sequence[str]) -> list[dict[str, Any]]:
        arns = [self._account.arn("cloudwatch", f"alarm:{name}") for name in names]
        chunks = [arns[start:start + MAX_STATUS_ALARMS] for start in range(0, len(arns), MAX_STATUS_ALARMS)]
        return [
            {"type": "alarm",
             "properties": {"title": title, "alarms": chunk, "sortBy": "stateUpdatedTimestamp"}}
            for chunk in chunks
        ]

    def _dashboard(
        self, name: str, title: str, rows: Sequence[Sequence[dict[str, Any]]]
    ) -> DashboardDefinition:
        header = {
            "type": "text", "x": 0, "y": 0, "width": GRID_COLUMNS, "height": HEADER_HEIGHT,
            "properties": {"markdown": (
                f"## infrawatch {self._spec.stack} ({self._account.region}): {title}\n"
                f"{marker(self._spec.stack, self._account.region)}. Written by provision-alarms; edits here are "
                "overwritten."
            )},
        }
        widgets = [header]
        y = HEADER_HEIGHT
        for row in rows:
            x = 0
            for widget in row:
                if x + WIDGET_WIDTH > GRID_COLUMNS:
                    x, y = 0, y + WIDGET_HEIGHT
                widgets.append({**widget, "x": x, "y": y, "width": WIDGET_WIDTH, "height": WIDGET_HEIGHT})
                x += WIDGET_WIDTH
            y += WIDGET_HEIGHT
        return DashboardDefinition(name, canonical_json({"widgets": widgets}))


def _flat(pairs: Iterable[tuple[str, str]]) -> list[str]:
    return [item for pair in pairs for item in pair]
