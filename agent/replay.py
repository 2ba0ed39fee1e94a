"""Replay: spooled datums go back to CloudWatch oldest first, one packed request at a time, at a bounded rate.

Replay runs only while the endpoint answers: after a failed request (live or replayed) it waits until a
live request gets through again, so an outage costs no replay traffic at all. A fresh start tries once
at once, since the endpoint may well be back. A replay request gets one attempt, no retries: what fails
stays in the spool for later, so a replay never holds the publish thread, and the live data behind it,
for a retry deadline. Rows are deleted only after the request that carried them succeeded, or after
CloudWatch rejected them as invalid (retrying those can never succeed). Each request carries rows of one
namespace, the one they were spooled for.

A delivered row is never sent again. If the spool cannot delete what a request delivered (disk full),
replay stops: it says so once (`replay_stopped`, and the spool's `SpoolReplayStopped` self-metric),
sends nothing, and tries the deletion again every SETTLE_RETRY_SECONDS; live publishing goes on.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence

import structlog

from agent.aggregate import Datum
from agent.cloudwatch_rules import MAX_DATUMS_PER_REQUEST
from agent.publisher import Publisher
from agent.spool import Spool, Spooled

log = structlog.get_logger()

SETTLE_RETRY_SECONDS = 60.0  # a full disk rarely frees up within seconds; one DELETE a minute costs nothing


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
        self._stopped = False

    def due_in(self) -> float | None:
        """Seconds until the next replay request (or, while stopped, deletion attempt) may go; None while
        there is nothing to replay or the endpoint is failing (the next live request tells)."""
        if self._spool.datums == 0 or self._publisher.reachable is False:
            return None
        return max(0.0, self._next_at - self._monotonic())

    def replay_one(self) -> bool:
        """Send the oldest spooled datums of one namespace in one request; False if it failed and they
        stay spooled, or if replay is stopped because delivered rows could not be deleted."""
        if not self._settled():
            return False
        rows = self._spool.oldest(MAX_DATUMS_PER_REQUEST)
        self._next_at = self._monotonic() + self._spacing
        if not rows:
            return True
        namespace = rows[0].namespace
        same = list(itertools.takewhile(lambda row: row.namespace == namespace, rows))
        batch = self._publisher.pack([row.datum for row in same], namespace)[0]
        kept: list[Datum] = []
        self._publisher.send(batch, on_undeliverable=lambda datums, reason: kept.extend(datums), retry_deadline=0.0,
                             namespace=namespace)
        if not self._spool.delete(settled(carried(same, batch), kept)):
            self._stop()
            return False
        return not kept

    def _settled(self) -> bool:
        """True when no delivered row waits for deletion; while some do, retry the deletion at its pace."""
        if not self._stopped:
            return True
        if self._spool.settle():
            self._stopped = False
            log.info("replay_resumed")
            return True
        self._next_at = self._monotonic() + SETTLE_RETRY_SECONDS
        return False

    def _stop(self) -> None:
        self._stopped = True
        self._next_at = self._monotonic() + SETTLE_RETRY_SECONDS
        log.warning("replay_stopped", reason="the spool cannot delete rows a request delivered",
                    undeleted=self._spool.undeleted, retry_in_s=SETTLE_RETRY_SECONDS,
                    consequence="nothing is replayed until they are deleted; live data is still published")


def carried(rows: Sequence[Spooled], batch: Sequence[Datum]) -> list[Spooled]:
    """The rows whose datums `batch` holds: packing keeps at most 150 values of one metric per request, so
    the first batch need not be a prefix of the rows."""
    remaining = Counter(batch)
    chosen: list[Spooled] = []
    for row in rows:
        if remaining[row.datum] > 0:
            remaining[row.datum] -= 1
            chosen.append(row)
    return chosen


def settled(rows: Sequence[Spooled], kept: Sequence[Datum]) -> list[Spooled]:
    """The rows whose datums are not in `kept`. Equal datums are interchangeable (two flushes in one
    minute can spool identical Heartbeats), so `kept` is matched as a multiset."""
    remaining = Counter(kept)
    done: list[Spooled] = []
    for row in rows:
        if remaining[row.datum] > 0:
            remaining[row.datum] -= 1
        else:
            done.append(row)
    return done
