"""Apply: make exactly the writes the plan lists, in its order, paced and retried by the Caller.

A change whose write AWS refuses is reported and the others still go ahead (their names and ARNs do not
depend on each other). Alarm deletions are sent 100 names to a DeleteAlarms call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from provisioning.aws import OPTIONAL_OPERATIONS, Caller, error_code, not_implemented
from provisioning.plan import DELETE, Change, Plan, Write

log = structlog.get_logger()

MAX_ALARMS_PER_DELETE = 100  # DeleteAlarms takes at most 100 names


@dataclass
class Outcome:
    applied: list[Change] = field(default_factory=list)
    failed: list[tuple[Change, str]] = field(default_factory=list)
    unsupported: list[Change] = field(default_factory=list)  # composites an endpoint without them refused

    @property
    def ok(self) -> bool:
        return not self.failed


def _batches(changes: Sequence[Change]) -> Iterator[tuple[list[Change], list[Write]]]:
    """(changes, writes) to send together: alarm deletions merged up to 100 names, everything else alone."""
    pending: list[Change] = []
    for change in changes:
        if change.action == DELETE and change.kind == "alarm":
            pending.append(change)
            if len(pending) == MAX_ALARMS_PER_DELETE:
                yield pending, [_merged_deletion(pending)]
                pending = []
            continue
        if pending:
            yield pending, [_merged_deletion(pending)]
            pending = []
        yield [change], list(change.writes)
    if pending:
        yield pending, [_merged_deletion(pending)]


def _merged_deletion(changes: Sequence[Change]) -> Write:
    return Write("cloudwatch", "DeleteAlarms", {"AlarmNames": [change.name for change in changes]})


class Applier:
    def __init__(self, caller: Caller, report: Callable[[str], None]) -> None:
        self._call = caller
        self._report = report

    def apply(self, plan: Plan) -> Outcome:
        outcome = Outcome()
        for changes, writes in _batches([change for change in plan.changes if change.writes]):
            try:
                for write in writes:
                    self._call(write.service, write.operation, **write.params)
            except (ClientError, BotoCoreError, NotImplementedError) as error:
                if write.operation in OPTIONAL_OPERATIONS and not_implemented(error):
                    outcome.unsupported += changes
                    self._report(f"skipped {changes[0].line()}: this endpoint does not implement "
                                 "PutCompositeAlarm (moto does not; CloudWatch does)")
                    log.warning("composite_not_implemented", name=changes[0].name)
                    continue
                if isinstance(error, NotImplementedError):
                    raise
                reason = f"{error_code(error)}: {error}"
                for change in changes:
                    outcome.failed.append((change, reason))
                    self._report(f"failed {change.line()}: {reason}")
                    log.error("change_failed", kind=change.kind, name=change.name, operation=write.operation,
                              error_code=error_code(error))
                continue
            for change in changes:
                outcome.applied.append(change)
                self._report(f"applied {change.line()}")
        return outcome
