"""Per host and per GPU: utilization percentiles, idle GPU-hours and their cost, availability, right-sizing evidence.

Metric names and dimensions come from the agent's catalogue through its naming profile (`agent.naming`),
so the report reads exactly the series the agents publish, under `native` or `cwagent` names.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.catalogue import METRICS
from agent.config import HOST_DIMENSION
from agent.fleet import HOST as HOSTNAME_DIMENSION
from agent.naming import profile, resolve
from report.fetch import Dimensions, Points, Query, Reader
from report.prices import Price, Prices
from report.window import Window

# What the report calls each utilization, and the catalogue metric behind it.
UTILIZATION = {"cpu": "CPUUtilization", "memory": "MemoryUtilization", "gpu": "GPUUtilization",
               "gpu_memory": "GPUMemoryUtilization", "storage": "StorageUtilization"}
HEARTBEAT = "Heartbeat"
DEVICE = {"GPUUtilization": "GPU", "GPUMemoryUtilization": "GPU", "StorageUtilization": "MountPath"}
GPU_LOW_P95 = 30.0  # % : hint that fewer or smaller GPUs would do
MEMORY_HIGH_P95 = 90.0  # % : hint that the host is short of memory
DEFAULT_IDLE_THRESHOLD = 5.0  # % GPU utilization
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
# StateTransitionReason of a terminated instance: "User initiated (2017-12-12 19:36:04 GMT)" (EC2's API
# reference); moto writes UTC.
_TERMINATED_AT = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:GMT|UTC)\)")
EC2_FILTER_VALUES = 200  # DescribeInstances: at most 200 values in one filter


@dataclass(frozen=True)
class Series:
    """One published series, as the report reads it."""

    kind: str  # a UTILIZATION key or "heartbeat"
    host: str
    device: str  # GPU index or mount path; "" for host-wide series
    query_dimensions: Dimensions
    metric: str  # published name


@dataclass(frozen=True)
class Stat:
    p50: float
    p95: float
    max: float
    periods: int  # periods with data
    expected: int  # periods the host should have published

    @property
    def partial(self) -> bool:
        return self.periods < self.expected


@dataclass(frozen=True)
class Gpu:
    index: str
    utilization: Stat | None
    idle_hours: float


@dataclass(frozen=True)
class Availability:
    start: dt.datetime
    end: dt.datetime
    basis: str  # "EC2 launch" or "heartbeats"
    downtime: tuple[tuple[dt.datetime, dt.datetime], ...]

    @property
    def total_s(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def downtime_s(self) -> float:
        return sum((end - start).total_seconds() for start, end in self.downtime)

    @property
    def percent(self) -> float:
        return (1 - self.downtime_s / self.total_s) * 100 if self.total_s else 100.0


@dataclass(frozen=True)
class Instance:
    instance_type: str
    launched: dt.datetime
    terminated: dt.datetime | None


@dataclass
class HostReport:
    host: str
    instance_type: str  # "" when EC2 does not know the host
    availability: Availability | None
    utilization: dict[str, Stat | None] = field(default_factory=dict)
    gpus: list[Gpu] = field(default_factory=list)
    price: Price | None = None
    hints: list[str] = field(default_factory=list)
    # hour start -> (sum, count) of the host's per-period GPU averages, for the heat map
    gpu_hourly: dict[int, tuple[float, int]] = field(default_factory=dict)

    @property
    def idle_gpu_hours(self) -> float:
        return sum(gpu.idle_hours for gpu in self.gpus)

    @property
    def idle_cost(self) -> float | None:
        return self.idle_gpu_hours * self.price.per_gpu_hour if self.price else None


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class HostSeries:
    """Finds every host's series under a naming profile (ListMetrics, one listing per metric name)."""

    def __init__(self, namespace: str, naming: str) -> None:
        self.namespace = namespace
        self._naming = naming
        self._profile = profile(naming)
        # The published names of the two host identity dimensions (InstanceId on EC2, Host off it).
        self.host_dimensions = tuple(
            self._published_dimension(HEARTBEAT, name) for name in (HOST_DIMENSION, HOSTNAME_DIMENSION)
        )

    def _published_dimension(self, metric: str, native: str) -> str:
        published = self._profile.dimensions(metric, {native: "\x00"})
        return next(name for name, value in published.items() if value == "\x00")

    def published(self, metric: str) -> str:
        return resolve(self._naming, metric, {})[0]

    def heartbeat_metric(self) -> str:
        return self.published(HEARTBEAT)

    def discover(self, reader: Reader) -> list[Series]:
        found = []
        kinds = {**UTILIZATION, "heartbeat": HEARTBEAT}
        for kind, metric in kinds.items():
            name = self.published(metric)
            device = self._published_dimension(metric, DEVICE[metric]) if metric in DEVICE else ""
            constant = dict(self._profile.alias(metric).constant_dimensions)
            own = {self._published_dimension(metric, native) for native in METRICS[metric].dimensions}
            for dims in reader.list_metrics(self.namespace, name):
                values = dict(dims)
                host = next((values[key] for key in self.host_dimensions if key in values), None)
                if host is None or any(values.get(key) != value for key, value in constant.items()):
                    continue  # a fleet aggregate (no host dimension), or another series under a shared name
                if not own <= set(values):
                    continue
                found.append(Series(kind, host, values.get(device, "") if device else "", dims, name))
        return found


def queries(series: list[Series], namespace: str, window: Window) -> dict[Series, dict[str, Query]]:
    """Average and Maximum per period for utilization; SampleCount per heartbeat period for heartbeats."""
    return {
        item: {"SampleCount": Query(namespace, item.metric, item.query_dimensions, "SampleCount", window.heartbeat)}
        if item.kind == "heartbeat" else {
            stat: Query(namespace, item.metric, item.query_dimensions, stat, window.period)
            for stat in ("Average", "Maximum")
        }
        for item in series
    }


def describe_instances(reader: Reader, hosts: list[str]) -> dict[str, Instance]:
    ids = sorted(host for host in hosts if _INSTANCE_ID.match(host))
    found: dict[str, Instance] = {}
    for offset in range(0, len(ids), EC2_FILTER_VALUES):
        chunk = ids[offset:offset + EC2_FILTER_VALUES]
        for page in reader.pages("ec2", "DescribeInstances",
                                 Filters=[{"Name": "instance-id", "Values": chunk}]):
            for reservation in page.get("Reservations", []):
                for raw in reservation.get("Instances", []):
                    terminated = None
                    if raw.get("State", {}).get("Name") in ("shutting-down", "terminated"):
                        match = _TERMINATED_AT.search(raw.get("StateTransitionReason", ""))
                        if match:
                            terminated = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(
                                tzinfo=dt.timezone.utc)
                    found[raw["InstanceId"]] = Instance(raw["InstanceType"], raw["LaunchTime"], terminated)
    return found


def availability(window: Window, heartbeats: Points, instance: Instance | None) -> Availability | None:
    """Downtime: periods without a heartbeat between when the host should have published and when it stopped.

    From launch (or the window start) to termination (or the window end) for an instance EC2 knows; from
    the first to the last heartbeat in the window otherwise. None when there is nothing to measure.
    """
    period = window.heartbeat
    slots = list(window.slots(period))
    if instance is not None:
        first = max(slots[0], _ceil(instance.launched.timestamp(), period))
        ended = instance.terminated.timestamp() if instance.terminated else window.end.timestamp()
        last = min(slots[-1] + period, int(ended) - int(ended) % period)
        basis = "EC2 launch"
    else:
        seen = [slot for slot in slots if slot in heartbeats]
        if not seen:
            return None
        first, last, basis = seen[0], seen[-1] + period, "heartbeats"
    if last <= first:
        return None
    gaps: list[tuple[dt.datetime, dt.datetime]] = []
    for slot in range(first, last, period):
        if slot in heartbeats:
            continue
        start = _time(slot)
        if gaps and gaps[-1][1] == start:
            gaps[-1] = (gaps[-1][0], _time(slot + period))
        else:
            gaps.append((start, _time(slot + period)))
    return Availability(_time(first), _time(last), basis, tuple(gaps))


def host_reports(
    window: Window, series: list[Series], points: Mapping[Series, Mapping[str, Points]],
    instances: Mapping[str, Instance], prices: Prices, region: str, idle_threshold: float,
) -> list[HostReport]:
    by_host: dict[str, list[Series]] = {}
    for item in series:
        by_host.setdefault(item.host, []).append(item)
    reports = []
    for host in sorted(by_host):
        own = by_host[host]
        instance = instances.get(host)
        heartbeats = next((dict(points[item]["SampleCount"]) for item in own if item.kind == "heartbeat"), {})
        available = availability(window, heartbeats, instance)
        expected = _expected_slots(window, available)
        report = HostReport(host, instance.instance_type if instance else "", available)
        report.price = prices.get((region, report.instance_type)) if instance else None
        for kind in UTILIZATION:
            chosen = [item for item in own if item.kind == kind]
            report.utilization[kind] = _stat(chosen, points, expected)
        for item in sorted((item for item in own if item.kind == "gpu"), key=lambda item: _index(item.device)):
            maxima = points[item]["Maximum"]
            idle = sum(1 for slot in expected if slot in maxima and maxima[slot] < idle_threshold)
            report.gpus.append(Gpu(item.device, _stat([item], points, expected), idle * window.period / 3600))
        report.gpu_hourly = _hourly([points[item]["Average"] for item in own if item.kind == "gpu"])
        report.hints = _hints(report)
        reports.append(report)
    return reports


def _hourly(series: list[Points]) -> dict[int, tuple[float, int]]:
    sums: dict[int, tuple[float, int]] = {}
    for points in series:
        for slot, value in points.items():
            total, count = sums.get(slot - slot % 3600, (0.0, 0))
            sums[slot - slot % 3600] = (total + value, count + 1)
    return sums


def _expected_slots(window: Window, available: Availability | None) -> list[int]:
    if available is None:
        return list(window.slots())
    return [slot for slot in window.slots() if available.start.timestamp() <= slot < available.end.timestamp()]


def _stat(chosen: list[Series], points: Mapping[Series, Mapping[str, Points]], expected: list[int]) -> Stat | None:
    """Percentiles of the per-period averages of every chosen series (all GPUs or mounts of a host pooled);
    max of the per-period maxima. None when no chosen series has data: absent, never 0 %."""
    wanted = set(expected)
    averages = [value for item in chosen for slot, value in points[item]["Average"].items() if slot in wanted]
    maxima = [value for item in chosen for slot, value in points[item]["Maximum"].items() if slot in wanted]
    if not averages:
        return None
    covered = max(len([slot for slot in points[item]["Average"] if slot in wanted]) for item in chosen)
    return Stat(percentile(averages, 50), percentile(averages, 95), max(maxima), covered, len(expected))


def _hints(report: HostReport) -> list[str]:
    hints = []
    gpu, memory = report.utilization.get("gpu"), report.utilization.get("memory")
    if gpu is not None and gpu.p95 < GPU_LOW_P95:
        hints.append(f"GPU p95 {gpu.p95:.1f} % < {GPU_LOW_P95:g} % over {len(report.gpus)} GPUs: "
                     "fewer or smaller GPUs would have carried this load")
    if memory is not None and memory.p95 > MEMORY_HIGH_P95:
        hints.append(f"memory p95 {memory.p95:.1f} % > {MEMORY_HIGH_P95:g} %: the host ran short of memory")
    return hints


def fleet_availability(reports: list[HostReport]) -> float | None:
    """Time-weighted mean: total time up over total time the hosts should have been up."""
    measured = [report.availability for report in reports if report.availability is not None]
    total = sum(item.total_s for item in measured)
    return (1 - sum(item.downtime_s for item in measured) / total) * 100 if total else None


def _index(device: str) -> tuple[int, str]:
    return (int(device), "") if device.isdigit() else (1 << 30, device)


def _ceil(seconds: float, period: int) -> int:
    return int(math.ceil(seconds / period) * period)


def _time(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
