"""Recording and failing stand-ins for the CloudWatch client's put_metric_data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError


def client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message or code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutMetricData",
    )


class RecordingClient:
    """Accepts every request and keeps it. `fail` may raise for a request, by call number and request."""

    def __init__(self, fail: Callable[[int, dict[str, Any]], BaseException | None] = lambda n, r: None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self._fail = fail

    def put_metric_data(self, **request: Any) -> dict[str, Any]:
        self.calls.append(request)
        error = self._fail(len(self.calls), request)
        if error is not None:
            raise error
        self.accepted.append(request)
        return {}

    @property
    def accepted_datums(self) -> list[dict[str, Any]]:
        return [datum for request in self.accepted for datum in request["MetricData"]]


def fail_first(count: int, error: BaseException) -> Callable[[int, dict[str, Any]], BaseException | None]:
    return lambda n, request: error if n <= count else None
