"""PutMetricData in the fewest requests CloudWatch's limits allow, with one declared retry policy."""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import botocore.exceptions
import botocore.session
import structlog
from botocore.awsrequest import AWSRequest
from botocore.serialize import create_serializer
from tenacity import RetryCallState, Retrying, retry_if_exception

from agent.aggregate import Datum
from agent.cloudwatch_rules import (
    MAX_DATUMS_PER_REQUEST,
    MAX_REQUEST_BYTES,
    MAX_VALUES_PER_METRIC,
    MAYBE_DELIVERED,
    REQUEST_TOO_LARGE,
    error_code,
    http_status,
    is_rejection,
    is_retryable,
)
from agent.request_bound import RequestBound, bound_for
from agent.selfstats import AgentStats

log = structlog.get_logger()

REQUEST_BYTES_BUDGET = MAX_REQUEST_BYTES * 9 // 10  # measured body stays under this: margin for framing
# How CloudWatch names a refused datum ("... for parameter MetricData.member.3.Value is invalid", counting
# from 1) and how botocore's own validation does ("parameter MetricData[2].MetricName", counting from 0).
_MEMBER_INDEX = re.compile(r"MetricData\.member\.(\d+)")
_PARAM_INDEX = re.compile(r"MetricData\[(\d+)\]")
_WHOLE_REQUEST = re.compile(r"parameter Namespace\b")


class MetricsClient(Protocol):
    def put_metric_data(self, **request: Any) -> Any: ...


Undeliverable = Callable[[Sequence[Datum], str], None]


class RequestSizer:
    """Measures a request body by serializing it as botocore will, in the protocol the client speaks."""

    def __init__(self, service_model: Any = None) -> None:
        if service_model is None:
            service_model = botocore.session.get_session().get_service_model("cloudwatch")
        protocol = getattr(service_model, "resolved_protocol", None) or service_model.protocol
        self._operation = service_model.operation_model("PutMetricData")
        self._serializer = create_serializer(protocol, include_validation=False)
        # What a batch can take at most, without serializing it (None: a protocol with no proven bound, every
        # batch measured).
        self.bound: RequestBound | None = bound_for(protocol)

    def body(self, namespace: str, metric_data: list[dict[str, Any]]) -> bytes:
        request = self._serializer.serialize_to_request(
            {"Namespace": namespace, "MetricData": metric_data}, self._operation
        )
        # botocore's own preparation: the query protocol (CloudWatch's before botocore 1.35) serializes to
        # a dict of form fields that only this encodes; JSON and CBOR bodies come out as they are.
        body = AWSRequest(method=request["method"], url="https://cloudwatch.invalid/", data=request["body"],
                          headers=request["headers"]).prepare().body
        return body.encode() if isinstance(body, str) else bytes(body)

    def body_bytes(self, namespace: str, metric_data: list[dict[str, Any]]) -> int:
        return len(self.body(namespace, metric_data))


Measure = Callable[[list[dict[str, Any]]], int]
Bound = Callable[[list[Datum]], int]


def pack(
    datums: Sequence[Datum], measure: Measure, budget: int = REQUEST_BYTES_BUDGET, bound: Bound | None = None
) -> list[list[Datum]]:
    """Split into the fewest batches of ≤1,000 datums, ≤150 values per metric, whose measured body fits.

    `bound`, when given, is never below `measure` (agent.request_bound): a batch whose bound fits is taken
    without measuring it, one whose bound does not is measured and split exactly as without a bound, so the
    batches are the same either way."""
    return [fitted for batch in _spread(datums) for fitted in _fit(batch, measure, budget, bound)]


def _spread(datums: Sequence[Datum]) -> list[list[Datum]]:
    """First fit into batches of at most 1,000 datums holding at most 150 values of any one metric (name and
    dimensions), as CloudWatch requires of one request: the chunks of a series with more than 150 distinct
    values in a minute, or the minutes of one series in a replay, go in different requests."""
    batches: list[list[Datum]] = []
    loads: list[Counter[tuple[str, tuple[tuple[str, str], ...]]]] = []
    first_open = 0  # batches before it hold 1,000 datums
    start_at: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}  # no room for the metric before it
    for datum in datums:
        metric = (datum.name, datum.dimensions)
        index = max(first_open, start_at.get(metric, 0))
        while True:
            if index == len(batches):
                batches.append([])
                loads.append(Counter())
            if len(batches[index]) < MAX_DATUMS_PER_REQUEST and loads[index][metric] + len(datum.values) <= (
                MAX_VALUES_PER_METRIC
            ):
                break
            index += 1
        batches[index].append(datum)
        loads[index][metric] += len(datum.values)
        start_at[metric] = index
        while first_open < len(batches) and len(batches[first_open]) == MAX_DATUMS_PER_REQUEST:
            first_open += 1
    return batches


def _fit(batch: list[Datum], measure: Measure, budget: int, bound: Bound | None) -> list[list[Datum]]:
    if len(batch) == 1 or (bound is not None and bound(batch) <= budget):  # one datum: nothing to split it into
        return [batch]
    size = measure([datum.to_api() for datum in batch])
    if size <= budget:
        return [batch]
    parts = math.ceil(size / budget)
    step = math.ceil(len(batch) / parts)
    pieces = (batch[start : start + step] for start in range(0, len(batch), step))
    return [fitted for piece in pieces for fitted in _fit(piece, measure, budget, bound)]


class Publisher:
    """Sends datums; what cannot be delivered within the deadline goes to `on_undeliverable`.

    Outcomes per datum: delivered (counted as published), refused as invalid (by CloudWatch, `InvalidParameter*`
    naming `MetricData.member.N`, or by botocore before sending: dropped, reason `rejected`, logged with the
    offending datum; only the datums named, or found by bisecting, are removed and the rest is sent again), or
    undeliverable for now (throttled past the deadline, endpoint down, no credentials): handed to
    `on_undeliverable`, which the spool implements; without it they are dropped with reason `undeliverable`.

    A request whose answer never came (read timeout, connection closed) may have been delivered: when it is
    sent again (retried, or kept for replay) its datapoints are counted in `PossibleDuplicates`
    (docs/data-loss.md).

    `abort()` ends retrying for good (shutdown): the retry in progress stops at its next check, its
    backoff sleep wakes up, and every later batch gets one attempt before it is handed over.
    """

    def __init__(
        self,
        client: MetricsClient,
        namespace: str,
        *,
        stats: AgentStats,
        retry_deadline: float = 30.0,
        sizer: RequestSizer | None = None,
        on_undeliverable: Undeliverable | None = None,
        sleep: Callable[[float], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._stats = stats
        self._retry_deadline = retry_deadline
        # The client's own service model when it has one: loading a second copy costs megabytes of RSS.
        self._sizer = sizer or RequestSizer(getattr(getattr(client, "meta", None), "service_model", None))
        self.on_undeliverable: Undeliverable = on_undeliverable or self._drop_undeliverable
        self._aborted = threading.Event()
        self._sleep = sleep or self._backoff_sleep
        self._monotonic = monotonic
        self.reachable: bool | None = None  # did the last request get an answer (None: none sent yet)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._uniform = uniform

    def _drop_undeliverable(self, datums: Sequence[Datum], reason: str) -> None:
        self._stats.add_dropped("undeliverable", sum(datum.datapoints for datum in datums))

    def abort(self) -> None:
        self._aborted.set()

    def _backoff_sleep(self, seconds: float) -> None:
        self._aborted.wait(seconds)  # a backoff that abort() cuts short

    def backoff(self, state: RetryCallState) -> float:
        """Full jitter (AWS's "Exponential Backoff and Jitter"): uniform over 0..min(cap, base × 2^(n-1))."""
        return self._uniform(0.0, min(self._backoff_max, self._backoff_base * 2 ** (state.attempt_number - 1)))

    def measure(self, metric_data: list[dict[str, Any]], namespace: str | None = None) -> int:
        return self._sizer.body_bytes(namespace or self._namespace, metric_data)

    def publish(self, datums: Sequence[Datum]) -> int:
        """Send every datum; returns how many requests succeeded."""
        delivered = 0
        for batch in self.pack(datums):
            delivered += self.send(batch)
        return delivered

    def pack(self, datums: Sequence[Datum], namespace: str | None = None) -> list[list[Datum]]:
        """Batches for the publisher's namespace, or for `namespace` (replay sends rows to the one they
        were spooled for)."""
        target, bound = namespace or self._namespace, self._sizer.bound
        return pack(datums, lambda metric_data: self.measure(metric_data, target),
                    bound=None if bound is None else lambda batch: bound.request(target, batch))

    def send(
        self, batch: list[Datum], *, on_undeliverable: Undeliverable | None = None, retry_deadline: float | None = None,
        namespace: str | None = None,
    ) -> int:
        """Send one packed batch with retries; returns how many requests succeeded.

        `on_undeliverable`, `retry_deadline` and `namespace` override the publisher's for this batch (replay
        makes one attempt, keeps what fails in the spool, and sends to the namespace rows were spooled for)."""
        give_up = on_undeliverable or self.on_undeliverable
        deadline = self._retry_deadline if retry_deadline is None else retry_deadline
        started = self._monotonic()
        timed_out = False  # an attempt got no answer (read timeout, closed connection): CloudWatch may hold it

        def past_deadline(state: RetryCallState) -> bool:
            if self._aborted.is_set():
                return True
            return self._monotonic() - started + state.upcoming_sleep >= deadline

        def count_error(state: RetryCallState) -> None:
            nonlocal timed_out
            if state.outcome is not None and state.outcome.failed:
                error = state.outcome.exception()
                assert error is not None
                self._stats.add_publish_error(error_code(error))
                timed_out = timed_out or isinstance(error, MAYBE_DELIVERED)

        retrying = Retrying(
            retry=retry_if_exception(is_retryable),
            wait=self.backoff,
            stop=past_deadline,
            sleep=self._sleep,
            before_sleep=count_error,
            reraise=True,
        )
        target = namespace or self._namespace
        request = {"Namespace": target, "MetricData": [datum.to_api() for datum in batch]}
        try:
            for attempt in retrying:
                with attempt:
                    sent_at = self._monotonic()
                    self._client.put_metric_data(**request)
                    latency_ms = (self._monotonic() - sent_at) * 1000
        except Exception as error:
            self._stats.add_publish_error(error_code(error))
            if is_rejection(error):
                if isinstance(error, botocore.exceptions.ClientError):
                    self.reachable = True  # CloudWatch answered; botocore's own refusals never left the host
                return self._reject(batch, error, give_up, deadline, target)
            log.warning("publish_failed", error=error_code(error), detail=str(error), datums=len(batch))
            self.reachable = False
            # Kept for replay (there is a spool, which every override also hands to): it will be sent again.
            if (timed_out or isinstance(error, MAYBE_DELIVERED)) and self.on_undeliverable != self._drop_undeliverable:
                self._stats.add_possible_duplicates(sum(datum.datapoints for datum in batch))
            give_up(batch, error_code(error))
            return 0
        self.reachable = True
        if timed_out:
            self._stats.add_possible_duplicates(sum(datum.datapoints for datum in batch))
        self._stats.add_published(sum(datum.datapoints for datum in batch), latency_ms)
        return 1

    def _reject(
        self, batch: list[Datum], error: Exception, give_up: Undeliverable, deadline: float, namespace: str
    ) -> int:
        """Remove what was refused, and only that, then send the rest again.

        The datums the error names go; without a name the batch is halved until each refused datum is alone.
        A 413 means the measurement was wrong for this body: halving resends every datum once."""
        code = error_code(error)
        named = self._named(batch, str(error)) if http_status(error) != REQUEST_TOO_LARGE else []
        whole = bool(_WHOLE_REQUEST.search(str(error)))  # no datum is to blame: halving would only multiply requests
        if not named and len(batch) > 1 and not whole:
            log.warning("request_split", error=code, datums=len(batch))
            half = len(batch) // 2
            return (self.send(batch[:half], on_undeliverable=give_up, retry_deadline=deadline, namespace=namespace)
                    + self.send(batch[half:], on_undeliverable=give_up, retry_deadline=deadline, namespace=namespace))
        refused = [batch[index] for index in named] or batch
        log.error("publish_rejected", error=code, detail=str(error), datums=len(batch),
                  offending=[_describe(index, batch[index]) for index in named or [0]])
        self._stats.add_dropped("rejected", sum(datum.datapoints for datum in refused))
        rest = [datum for index, datum in enumerate(batch) if index not in named] if named else []
        return (self.send(rest, on_undeliverable=give_up, retry_deadline=deadline, namespace=namespace)
                if rest else 0)

    @staticmethod
    def _named(batch: list[Datum], message: str) -> list[int]:
        """Indexes (from 0) of the datums an error message names, if they are in the batch."""
        indexes = {int(found) - 1 for found in _MEMBER_INDEX.findall(message)}
        indexes |= {int(found) for found in _PARAM_INDEX.findall(message)}
        return sorted(index for index in indexes if 0 <= index < len(batch))


def _describe(index: int, datum: Datum) -> dict[str, Any]:
    return {"index": index, "metric": datum.name, "dimensions": dict(datum.dimensions),
            "values": list(datum.values[:5])}
