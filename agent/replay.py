"""Replay: spooled datums go back to CloudWatch oldest first, one packed request at a time, at a bounded rate.

Replay runs only while the endpoint answers: after a failed request (live or replayed) it waits until a
live request gets through again, so an outage costs no replay traffic at all. A fresh start tries once
at once, since the endpoint may well be back. A replay request gets one attempt, no retries: what fails
stays in the spool for later, so a replay never holds the publish thread, and the live data behind it,
for a retry deadline. Rows are deleted only after the request that carried them succeeded, or after
CloudWatch rejected them as invalid (retrying those can never succeed).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence

from agent.aggregate import Datum
from agent.cloudwatch_rules import MAX_DATUMS_PER_REQUEST
from agent.publisher import Publisher
from agent.spool import Spool


class Replayer:
    def __init__(
        self,
        spool: Spool,
        publisher: Publisher,
        *,
        requests_per_second: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spool = spool
        self._publisher = publisher
        self._spacing = 1.0 / requests_per_second
        self._monotonic = monotonic
        self._next_at = monotonic()

    def due_in(self) -> float | None:
        """Seconds until the next replay request may go; None while there is nothing to replay or the
        endpoint is failing (the next live request tells)."""
        if self._spool.datums == 0 or self._publisher.reachable is False:
            return None
        return max(0.0, self._next_at - self._monotonic())

    def replay_one(self) -> bool:
        """Send the oldest spooled datums in one request; False if it failed and they stay spooled."""
        rows = self._spool.oldest(MAX_DATUMS_PER_REQUEST)
        if not rows:
            return True
        batch = self._publisher.pack([datum for _, datum in rows])[0]
        kept: list[Datum] = []
        self._publisher.send(batch, on_undeliverable=lambda datums, reason: kept.extend(datums), retry_deadline=0.0)
        self._spool.delete(settled(carried(rows, batch), kept))
        self._next_at = self._monotonic() + self._spacing
        return not kept


def carried(rows: Sequence[tuple[int, Datum]], batch: Sequence[Datum]) -> list[tuple[int, Datum]]:
    """The rows whose datums `batch` holds: packing keeps at most 150 values of one metric per request, so
    the first batch need not be a prefix of the rows."""
    remaining = Counter(batch)
    chosen: list[tuple[int, Datum]] = []
    for row_id, datum in rows:
        if remaining[datum] > 0:
            remaining[datum] -= 1
            chosen.append((row_id, datum))
    return chosen


def settled(rows: Sequence[tuple[int, Datum]], kept: Sequence[Datum]) -> list[int]:
    """Row ids of the datums that are not in `kept`. Equal datums are interchangeable (two flushes in one
    minute can spool identical Heartbeats), so `kept` is matched as a multiset."""
    remaining = Counter(kept)
    ids: list[int] = []
    for row_id, datum in rows:
        if remaining[datum] > 0:
            remaining[datum] -= 1
        else:
            ids.append(row_id)
    return ids
