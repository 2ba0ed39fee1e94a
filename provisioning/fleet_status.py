"""`provision-alarms --fleet-status`: which infrawatch version each host of the spec runs, and which hosts have
been silent, so a rollout can be followed from one command.

Versions come from the agents' `AgentVersion` series (ListMetrics only: agents publish it with
`version_series = true`); silence from each host's `Heartbeat` over the last 15 minutes (GetMetricData, at
most 500 queries a call).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from agent.naming import resolve
from provisioning.aws import Caller
from provisioning.discovery import AGENT_COMPONENT, Host, published_key
from provisioning.spec import Spec

SILENT_AFTER = dt.timedelta(minutes=15)
PERIOD_S = 300
MAX_QUERIES = 500  # GetMetricData's limit per call


def _versions(spec: Spec, hosts: Sequence[Host], caller: Caller) -> dict[str, set[str]]:
    """Host id → the versions its AgentVersion series name, for the hosts of the spec."""
    wanted = {host.instance_id for host in hosts}
    keys = {published_key(spec.naming, "AgentVersion", host.id_dimension, {}) for host in hosts}
    name, _ = resolve(spec.naming, "AgentVersion", {**AGENT_COMPONENT, "Version": "-"})
    versions: dict[str, set[str]] = {}
    # Series with data in the last 3 hours: a host upgraded within them is listed under both versions.
    for page in caller.pages("cloudwatch", "ListMetrics", Namespace=spec.metric_namespace, MetricName=name,
                             RecentlyActive="PT3H"):
        for metric in page["Metrics"]:
            dims = {dim["Name"]: dim["Value"] for dim in metric.get("Dimensions", [])}
            host_id = next((dims[key] for key in keys if key in dims), None)
            if host_id in wanted and "Version" in dims:
                versions.setdefault(host_id, set()).add(dims["Version"])
    return versions


def _silent(spec: Spec, hosts: Sequence[Host], caller: Caller, now: dt.datetime) -> list[str]:
    """The hosts whose Heartbeat summed to nothing over the last SILENT_AFTER."""
    queries: list[dict[str, Any]] = []
    for index, host in enumerate(hosts):
        name, dims = resolve(spec.naming, "Heartbeat", {host.id_dimension: host.instance_id,
                                                         **AGENT_COMPONENT, **dict(host.dimensions)})
        queries.append({"Id": f"h{index}", "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": spec.metric_namespace, "MetricName": name,
                       "Dimensions": [{"Name": key, "Value": value} for key, value in sorted(dims.items())]},
            "Period": PERIOD_S, "Stat": "Sum"}})
    beating: set[str] = set()
    for start in range(0, len(queries), MAX_QUERIES):
        for page in caller.pages("cloudwatch", "GetMetricData", MetricDataQueries=queries[start:start + MAX_QUERIES],
                                 StartTime=now - SILENT_AFTER, EndTime=now):
            beating |= {result["Id"] for result in page["MetricDataResults"] if sum(result.get("Values", [])) > 0}
    return [host.instance_id for index, host in enumerate(hosts) if f"h{index}" not in beating]


def _hosts(count: int) -> str:
    return f"{count} host" + ("" if count == 1 else "s")


def fleet_status(spec: Spec, hosts: Sequence[Host], caller: Caller, now: dt.datetime) -> tuple[list[str], bool]:
    """The report's lines, and whether every host has a heartbeat."""
    versions = _versions(spec, hosts, caller)
    by_version: dict[str, list[str]] = {}
    for host in hosts:
        for version in sorted(versions.get(host.instance_id, {"unknown"})):
            by_version.setdefault(version, []).append(host.instance_id)
    lines = []
    for version, members in sorted(by_version.items(), key=lambda item: (item[0] == "unknown", item[0])):
        label = ("no AgentVersion series (version_series is off there, or its agent predates it)"
                 if version == "unknown" else f"infrawatch {version}")
        lines.append(f"{label}: {_hosts(len(members))}: {', '.join(members)}")
    silent = _silent(spec, hosts, caller, now)
    minutes = int(SILENT_AFTER.total_seconds() // 60)
    lines.append(f"no heartbeat in the last {minutes} minutes: {_hosts(len(silent))}"
                 + (f": {', '.join(silent)}" if silent else ""))
    return lines, not silent
