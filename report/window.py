"""The report's time window and the period its datapoints are read at.

CloudWatch keeps 1-minute datapoints for 15 days, 5-minute ones for 63 days and hourly ones for 455 days
(15 months); one GetMetricData query returns at most 100,800 datapoints. The period is the smallest that
both the window's age and that limit allow, so every query is answered in full at the finest resolution
still stored.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from agent.schema import ConfigError

MAX_DATAPOINTS_PER_QUERY = 100_800  # GetMetricData: the most datapoints one query returns
MAX_AGE = dt.timedelta(days=455)  # CloudWatch keeps hourly datapoints for 15 months
# (how old the window's start may be, finest period still stored there), from "Metrics retention".
RETENTION = ((dt.timedelta(days=15), 60), (dt.timedelta(days=63), 300), (MAX_AGE, 3600))
PERIODS = (60, 300, 900, 3600, 21_600, 86_400)
# High-resolution metrics (StorageResolution 1, as the agent's high_resolution publishes) keep their
# sub-minute datapoints for 3 hours; a sub-minute period is only ever chosen explicitly (--period).
HIGH_RESOLUTION_PERIODS = (1, 5, 10, 30)
HIGH_RESOLUTION_AGE = dt.timedelta(hours=3)
DEFAULT_SINCE = "7d"

_DURATION = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800}


@dataclass(frozen=True)
class Window:
    start: dt.datetime  # inclusive, on a period (and heartbeat period) boundary
    end: dt.datetime  # exclusive, likewise
    period: int  # seconds
    heartbeat_period: int = 0  # seconds per availability slot, a multiple of period; 0: the period

    @property
    def periods(self) -> int:
        return int((self.end - self.start).total_seconds()) // self.period

    @property
    def heartbeat(self) -> int:
        return self.heartbeat_period or self.period

    def slots(self, period: int = 0) -> range:
        """Epoch seconds of every period start in the window (of `period`, default the window's)."""
        first = int(self.start.timestamp())
        return range(first, int(self.end.timestamp()), period or self.period)


def parse_duration(text: str) -> dt.timedelta | None:
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        return None
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_time(text: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def finest_period(start: dt.datetime, end: dt.datetime, now: dt.datetime) -> int:
    age = now - start
    stored = next((period for limit, period in RETENTION if age <= limit), RETENTION[-1][1])
    span = (end - start).total_seconds()
    return next(
        period for period in PERIODS if period >= stored and span / period <= MAX_DATAPOINTS_PER_QUERY
    )


def window(
    since: str, until: str | None, now: dt.datetime, period: int | None = None, heartbeat: int | None = None
) -> Window:
    """The window `since` (a duration back from `until`, or a time) to `until` (default: now).

    Raises ConfigError naming every bad value: a window older than CloudWatch keeps, one ending in the
    future, an empty one, or a period finer than the data still stored. `heartbeat`: the agents' heartbeat
    interval; availability is measured in slots of it, rounded up to whole periods, and the window's ends
    are aligned to those slots.
    """
    problems: list[str] = []
    end = now if until is None else parse_time(until)
    if end is None:
        problems.append(f'--until: must be an ISO 8601 time like "2026-01-31T00:00:00Z", got "{until}"')
        end = now
    elif end > now:
        problems.append(f"--until: must not be in the future, got {end.isoformat()} (now {now.isoformat()})")
    back = parse_duration(since)
    start = end - back if back is not None else parse_time(since)
    if start is None:
        problems.append(f'--since: must be a duration like "14d", "12h", "2w" or an ISO 8601 time, got "{since}"')
        start = end - dt.timedelta(days=7)
    if start >= end:
        problems.append(f"--since: must be before --until, got {start.isoformat()} .. {end.isoformat()}")
    if now - start > MAX_AGE:
        problems.append(
            f"--since: CloudWatch keeps 15 months (455 days) of data, got a window starting "
            f"{(now - start).days} days ago ({start.isoformat()})"
        )
    if problems:
        raise ConfigError(problems)
    finest = finest_period(start, end, now)
    if period in HIGH_RESOLUTION_PERIODS:
        span = (end - start).total_seconds()
        if now - start > HIGH_RESOLUTION_AGE or span / period > MAX_DATAPOINTS_PER_QUERY:
            raise ConfigError([
                f"--period: {period} s datapoints exist only for high-resolution metrics of the last 3 hours, "
                f"at most {MAX_DATAPOINTS_PER_QUERY:,} per query; this window starts "
                f"{_hours(now - start)} ago, got {period}"
            ])
    elif period is not None and (period % 60 or period < finest):
        raise ConfigError([
            f"--period: must be 1, 5, 10, 30 (high resolution, last 3 hours) or a multiple of 60 seconds and at "
            f"least {finest} for this window (the finest resolution CloudWatch still stores, ≤ "
            f"{MAX_DATAPOINTS_PER_QUERY:,} datapoints), got {period}"
        ])
    chosen = period or finest
    beat = chosen * -(-(heartbeat or chosen) // chosen)
    return Window(_floor(start, beat), _floor(end, beat), chosen, beat)


def _hours(age: dt.timedelta) -> str:
    return f"{age.total_seconds() / 3600:.1f} h"


def _floor(moment: dt.datetime, period: int) -> dt.datetime:
    seconds = int(moment.timestamp())
    return dt.datetime.fromtimestamp(seconds - seconds % period, tz=dt.timezone.utc)
