"""PutMetricData in the fewest requests CloudWatch's limits allow, with one declared retry policy."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import botocore.exceptions
import botocore.session
import structlog
from botocore.awsrequest import AWSRequest
from botocore.serialize import create_serializer
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from agent.aggregate import Datum
from agent.selfstats import AgentStats

log = structlog.get_logger()

MAX_DATUMS_PER_REQUEST = 1000
MAX_REQUEST_BYTES = 1_000_000  # CloudWatch's 1 MB, in decimal bytes to be safe
REQUEST_BYTES_BUDGET = 900_000  # measured body stays under this: margin for headers and protocol framing

RETRYABLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestThrottled", "LimitExceeded", "LimitExceededException",
    "InternalServiceError", "InternalFailure", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException",
})
# Bad data: retrying the same request can never succeed.
REJECTED_CODES = frozenset({
    "InvalidParameterValue", "InvalidParameterCombination", "MissingParameter", "InvalidParameterValueException",
    "InvalidParameterCombinationException", "MissingRequiredParameterException",
})
NETWORK_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
)
_MEMBER_INDEX = re.compile(r"MetricData\.member\.(\d+)")


class MetricsClient(Protocol):
    def put_metric_data(self, **request: Any) -> Any: ...


Undeliverable = Callable[[Sequence[Datum], str], None]


def error_code(error: BaseException) -> str:
    if isinstance(error, botocore.exceptions.ClientError):
        return str(error.response.get("Error", {}).get("Code") or error.response.get("ResponseMetadata", {})
                   .get("HTTPStatusCode", "ClientError"))
    return type(error).__name__


def http_status(error: BaseException) -> int | None:
    if isinstance(error, botocore.exceptions.ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, NETWORK_ERRORS):
        return True
    if isinstance(error, botocore.exceptions.ClientError):
        status = http_status(error) or 0
        return error_code(error) in RETRYABLE_CODES or (status >= 500 and error_code(error) not in REJECTED_CODES)
    return False


class RequestSizer:
    """Measures a request body by serializing it as botocore will, in the protocol the client speaks."""

    def __init__(self, service_model: Any = None) -> None:
        if service_model is None:
            service_model = botocore.session.get_session().get_service_model("cloudwatch")
        protocol = getattr(service_model, "resolved_protocol", None) or service_model.protocol
        self._operation = service_model.operation_model("PutMetricData")
        self._serializer = create_serializer(protocol, include_validation=False)

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


def pack(
    datums: Sequence[Datum], measure: Callable[[list[dict[str, Any]]], int], budget: int = REQUEST_BYTES_BUDGET
) -> list[list[Datum]]:
    """Split into the fewest batches of ≤1,000 datums whose measured body fits the byte budget."""
    batches: list[list[Datum]] = []
    for start in range(0, len(datums), MAX_DATUMS_PER_REQUEST):
        batches.extend(_fit(list(datums[start : start + MAX_DATUMS_PER_REQUEST]), measure, budget))
    return batches


def _fit(batch: list[Datum], measure: Callable[[list[dict[str, Any]]], int], budget: int) -> list[list[Datum]]:
    size = measure([datum.to_api() for datum in batch])
    if size <= budget or len(batch) == 1:
        return [batch]
    parts = math.ceil(size / budget)
    step = math.ceil(len(batch) / parts)
    pieces = (batch[start : start + step] for start in range(0, len(batch), step))
    return [fitted for piece in pieces for fitted in _fit(piece, measure, budget)]


class Publisher:
    """Sends datums; what cannot be delivered within the deadline goes to `on_undeliverable`.

    Outcomes per datum: delivered (counted as published), rejected by CloudWatch as invalid (dropped,
    reason `rejected`, logged with the offending datum), or undeliverable for now (throttled past the
    deadline, endpoint down, no credentials): handed to `on_undeliverable`, which the spool implements;
    without it they are dropped with reason `undeliverable`.

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
        self._wait = wait_random_exponential(multiplier=backoff_base, max=backoff_max)  # full jitter

    def _drop_undeliverable(self, datums: Sequence[Datum], reason: str) -> None:
        self._stats.add_dropped("undeliverable", sum(datum.datapoints for datum in datums))

    def abort(self) -> None:
        self._aborted.set()

    def _backoff_sleep(self, seconds: float) -> None:
        self._aborted.wait(seconds)  # a backoff that abort() cuts short

    def measure(self, metric_data: list[dict[str, Any]]) -> int:
        return self._sizer.body_bytes(self._namespace, metric_data)

    def publish(self, datums: Sequence[Datum]) -> int:
        """Send every datum; returns how many requests succeeded."""
        delivered = 0
        for batch in self.pack(datums):
            delivered += self.send(batch)
        return delivered

    def pack(self, datums: Sequence[Datum]) -> list[list[Datum]]:
        return pack(datums, self.measure)

    def send(
        self, batch: list[Datum], *, on_undeliverable: Undeliverable | None = None, retry_deadline: float | None = None
    ) -> int:
        """Send one packed batch with retries; returns how many requests succeeded.

        `on_undeliverable` and `retry_deadline` override the publisher's for this batch (replay makes one
        attempt and keeps what fails in the spool)."""
        give_up = on_undeliverable or self.on_undeliverable
        deadline = self._retry_deadline if retry_deadline is None else retry_deadline
        started = self._monotonic()

        def past_deadline(state: RetryCallState) -> bool:
            if self._aborted.is_set():
                return True
            return self._monotonic() - started + state.upcoming_sleep >= deadline

        def count_error(state: RetryCallState) -> None:
            if state.outcome is not None and state.outcome.failed:
                error = state.outcome.exception()
                assert error is not None
                self._stats.add_publish_error(error_code(error))

        retrying = Retrying(
            retry=retry_if_exception(is_retryable),
            wait=self._wait,
            stop=past_deadline,
            sleep=self._sleep,
            before_sleep=count_error,
            reraise=True,
        )
        request = {"Namespace": self._namespace, "MetricData": [datum.to_api() for datum in batch]}
        try:
            for attempt in retrying:
                with attempt:
                    sent_at = self._monotonic()
                    self._client.put_metric_data(**request)
                    latency_ms = (self._monotonic() - sent_at) * 1000
        except botocore.exceptions.ClientError as error:
            self._stats.add_publish_error(error_code(error))
            return self._handle_refusal(batch, error, give_up, deadline)
        except Exception as error:
            self._stats.add_publish_error(error_code(error))
            log.warning("publish_failed", error=error_code(error), detail=str(error), datums=len(batch))
            self.reachable = False
            give_up(batch, error_code(error))
            return 0
        self.reachable = True
        self._stats.add_published(sum(datum.datapoints for datum in batch), latency_ms)
        return 1

    def _handle_refusal(
        self, batch: list[Datum], error: botocore.exceptions.ClientError, give_up: Undeliverable, deadline: float
    ) -> int:
        code = error_code(error)
        if http_status(error) == 413 and len(batch) > 1:
            # Our measurement was wrong for this body: halve and resend, so every datum still goes once.
            log.warning("request_too_large", datums=len(batch))
            half = len(batch) // 2
            return (self.send(batch[:half], on_undeliverable=give_up, retry_deadline=deadline)
                    + self.send(batch[half:], on_undeliverable=give_up, retry_deadline=deadline))
        if code in REJECTED_CODES or http_status(error) == 413:
            offending = self._offending(batch, str(error))
            log.error("publish_rejected", error=code, detail=str(error), datums=len(batch), offending=offending)
            self._stats.add_dropped("rejected", sum(datum.datapoints for datum in batch))
            return 0
        log.warning("publish_failed", error=code, detail=str(error), datums=len(batch))
        self.reachable = False
        give_up(batch, code)
        return 0

    @staticmethod
    def _offending(batch: list[Datum], message: str) -> dict[str, Any]:
        match = _MEMBER_INDEX.search(message)
        index = int(match.group(1)) - 1 if match else 0  # members count from 1
        datum = batch[index] if 0 <= index < len(batch) else batch[0]
        return {"index": index, "metric": datum.name, "dimensions": dict(datum.dimensions),
                "values": list(datum.values[:5])}
