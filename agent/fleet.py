"""Which dimensions each sample is published with: the host's identity, and once more per fleet roll-up.

Every sample is published once with the host dimensions: the EC2 identity names listed in
`append_dimensions` (default `InstanceId` only, since every dimension value is a billed metric), or
`Host` = the hostname when the host is not on EC2 or appends nothing, plus the static `dimensions`.

A roll-up set in `aggregate_dimensions`, e.g. `["AutoScalingGroupName"]`, publishes each selected
metric (`aggregate_metrics`) once more with exactly the dimensions the set names, taking values from
the host (identity, `Host`, static dimensions) or from the sample itself (`MountPath`, `GPU`, …). A
sample lacking one of them is not rolled up into that set, and a roll-up identical to the full series
is skipped so no sample is counted twice in one series.

The Auto Scaling group arrives later than the rest of the identity (IMDS tags or ec2:DescribeTags). While
it is looked up, samples are held, not dropped, for at most `ec2.tag_wait` seconds and then published with
what is known. A group that arrives after that applies from the next minute boundary, so no minute of a
series is split between the series without it and the series with it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import structlog

from agent.catalogue import CATALOGUE
from agent.logs import LogOnce
from agent.samples import Dimensions, Sample

log = structlog.get_logger()

ASG = "AutoScalingGroupName"
HOST = "Host"
IDENTITY_DIMENSIONS = ("InstanceId", "InstanceType", "ImageId", "AvailabilityZone", ASG)
# Host-level series without a per-device dimension, the agent's own metrics excepted.
DEFAULT_ROLLUP_METRICS = tuple(
    metric.name for metric in CATALOGUE if not metric.dimensions and metric.source != "agent"
)

Placed = tuple[list[Sample], float, Dimensions]
"""Samples, their timestamp, and the host dimensions to add to them."""


def needs_auto_scaling_group(append: Sequence[str], aggregate: Sequence[Sequence[str]]) -> bool:
    return ASG in append or any(ASG in group for group in aggregate)


class GroupSource(Protocol):
    """The Auto Scaling group lookup as the plan sees it: `done` is set once `value` is final."""

    done: threading.Event
    value: str | None


class DimensionPlan:
    def __init__(
        self,
        *,
        identity: Mapping[str, str] | None,
        hostname: str,
        static: Dimensions = (),
        append: Sequence[str] = ("InstanceId",),
        aggregate: Sequence[Sequence[str]] = (),
        rollup_metrics: Iterable[str] = DEFAULT_ROLLUP_METRICS,
        group: GroupSource | None = None,
        tag_wait: float = 30.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._identity = dict(identity) if identity is not None else None
        self._hostname = hostname
        self._static = dict(static)
        self._append = tuple(append)
        self._aggregate = [tuple(names) for names in aggregate]
        self._rollup_metrics = frozenset(rollup_metrics)
        self._group = group
        self._clock = wall_clock
        self._lock = threading.Lock()
        self._held: list[tuple[list[Sample], float]] = []
        self._released = False  # set from a signal handler: a plain flag, never a lock
        self._waiting_since = wall_clock()
        waiting = group is not None and not group.done.is_set()
        self._hold_until: float | None = self._waiting_since + tag_wait if waiting else None
        self._group_from: float | None = -math.inf if group is not None and not waiting else None
        self._warn = LogOnce(log)

    def place(self, samples: Iterable[Sample], timestamp: float) -> list[Placed]:
        """What to aggregate now: nothing while the group is awaited, then everything held and `samples`."""
        with self._lock:
            now = self._clock()
            self._observe_group(now)
            if self._hold_until is not None:
                if now < self._hold_until and not self._released:
                    self._held.append((list(samples), timestamp))
                    return []
                self._hold_until = None
                log.warning("auto_scaling_group_pending", waited_s=round(now - self._waiting_since, 3),
                            held_batches=len(self._held))
            batches, self._held = [*self._held, (list(samples), timestamp)], []
            return [placed for batch, at in batches for placed in self._expand(batch, at)]

    def stop_holding(self) -> None:
        """On shutdown or reload: the next `place` releases whatever is held, with what is known.

        Safe in a signal handler: it only sets a flag, so it cannot wait on the lock `place` holds."""
        self._released = True

    def _observe_group(self, now: float) -> None:
        if self._group is None or self._group_from is not None or not self._group.done.is_set():
            return
        # Arrived while samples were held: every sample carries it. Arrived later: from the next minute.
        self._group_from = -math.inf if self._hold_until is not None else math.ceil(now / 60) * 60
        self._hold_until = None
        log.info("auto_scaling_group_known", group=self._group.value,
                 applies_from=None if math.isinf(self._group_from) else self._group_from)

    def _host_values(self, timestamp: float) -> dict[str, str]:
        values = {HOST: self._hostname, **self._static, **(self._identity or {})}
        group = self._group.value if self._group is not None else None
        if group and self._group_from is not None and timestamp >= self._group_from:
            values[ASG] = group
        return values

    def _host_dimensions(self, values: Mapping[str, str]) -> Dimensions:
        if self._identity is None or not self._append:
            own = {HOST: self._hostname}
        else:
            own = {name: values[name] for name in self._append if name in values}
        return tuple(sorted({**own, **self._static}.items()))

    def _expand(self, samples: list[Sample], timestamp: float) -> list[Placed]:
        values = self._host_values(timestamp)
        host = self._host_dimensions(values)
        placed: list[Placed] = [(samples, timestamp, host)]
        for names in self._aggregate:
            rolled = [
                sample._replace(dimensions=dims)
                for sample in samples
                if sample.name in self._rollup_metrics
                and (dims := self._rollup(names, values, host, sample)) is not None
            ]
            if rolled:
                placed.append((rolled, timestamp, ()))
        return placed

    def _rollup(self, names: tuple[str, ...], values: Mapping[str, str], host: Dimensions,
                sample: Sample) -> Dimensions | None:
        own = dict(sample.dimensions)
        missing = [name for name in names if name not in own and name not in values]
        if missing:
            self._warn.warning(("rollup", names, missing[0]), "rollup_dimension_unknown",
                               rollup=list(names), dimension=missing[0], metric=sample.name)
            return None
        dims = tuple(sorted((name, own.get(name) or values[name]) for name in names))
        full = tuple(sorted({**dict(host), **own}.items()))
        return None if dims == full else dims
