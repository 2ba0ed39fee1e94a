"""Recording and failing stand-ins for the CloudWatch client's put_metric_data, as strict as CloudWatch.

`refusal` is the test suite's own reading of the PutMetricData contract, written from the documentation and
deliberately independent of `agent.cloudwatch_rules` (a test cross-checks the two on edge values), so that a
wrong rule in the agent shows up as a refused request instead of being agreed with. Like CloudWatch, one bad
datum refuses the whole request, with HTTP 400 `InvalidParameterValue` naming `MetricData.member.N`.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from botocore.model import ServiceModel
from moto.core import cbor

# PutMetricData API reference: "Values must be in the range of -2^360 to 2^360. In addition, special values
# (for example, NaN, +Infinity, -Infinity) are not supported"; too small is refused as well (telegraf#2523,
# the base-10 bounds 8.515920e-109 .. 1.174271e+108 in the SDK documentation).
SMALLEST = 8.515920e-109
LARGEST = 1.174271e108
# "Each request is also limited to no more than 1000 different metrics"; "publish up to 150 values per metric
# with one PutMetricData request"; MetricDatum: "Dimensions ... Maximum number of 30 items".
MOST_DATUMS = 1000
MOST_BYTES = 1_000_000  # "Each PutMetricData request is limited to 1 MB in size for HTTP POST requests"
MOST_VALUES_PER_METRIC = 150
MOST_DIMENSIONS = 30
# MetricDatum Timestamp: up to two weeks in the past, up to two hours in the future.
OLDEST = 14 * 86_400
NEWEST = 2 * 3_600
# StandardUnit, as listed in the API reference's MetricDatum.Unit "Valid Values".
UNITS = frozenset({
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second",
    "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
})


def _bad_text(text: Any, longest: int, *, blank_ok: bool = True) -> bool:
    """Dimension reference: "must contain only ASCII characters", "at least one non-whitespace character",
    "ASCII control characters are not supported"; Namespace and MetricName: ASCII, lengths 1..255."""
    if not isinstance(text, str) or not 1 <= len(text) <= longest:
        return True
    if any(ord(char) > 126 or ord(char) < 32 for char in text):
        return True
    return not blank_ok and not text.strip(" ")


def _value_refused(value: Any) -> bool:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return True
    magnitude = abs(float(value))
    return magnitude != 0 and not SMALLEST <= magnitude <= LARGEST


def _epoch(timestamp: Any) -> float:
    return timestamp.timestamp() if isinstance(timestamp, dt.datetime) else float(timestamp)


def _datum_refusal(datum: Mapping[str, Any], now: float | None) -> str | None:
    """The parameter of one datum CloudWatch would name, relative to `MetricData.member.N`, or None."""
    if _bad_text(datum.get("MetricName"), 255):
        return "MetricName"
    dimensions = datum.get("Dimensions", [])
    if len(dimensions) > MOST_DIMENSIONS:
        return "Dimensions"
    names = [dimension.get("Name") for dimension in dimensions]
    for position, dimension in enumerate(dimensions, 1):
        name = dimension.get("Name")
        # Dimension.Name "cannot start with a colon (:)".
        if _bad_text(name, 255, blank_ok=False) or name.startswith(":") or names.count(name) > 1:
            return f"Dimensions.member.{position}.Name"
        if _bad_text(dimension.get("Value"), 1024, blank_ok=False):
            return f"Dimensions.member.{position}.Value"
    values = list(datum.get("Values", []))
    if "Value" in datum:
        values.append(datum["Value"])
    for position, value in enumerate(values, 1):
        if _value_refused(value):
            return f"Values.member.{position}" if "Values" in datum else "Value"
    counts = datum.get("Counts")
    if counts is not None and len(counts) != len(datum.get("Values", [])):
        return "Counts"
    if "Unit" in datum and datum["Unit"] not in UNITS:
        return "Unit"
    if now is not None and "Timestamp" in datum and not now - OLDEST <= _epoch(datum["Timestamp"]) <= now + NEWEST:
        return "Timestamp"
    return None


def refusal(request: Mapping[str, Any], now: float | None = None) -> str | None:
    """CloudWatch's message refusing this PutMetricData request, or None when it would accept it.

    `now` (epoch seconds) checks the timestamp window; None leaves it out, for tests on simulated clocks."""
    namespace = request.get("Namespace")
    # PutMetricData Namespace: ASCII, no control characters, pattern [^:].*, and not AWS/ (reserved).
    if _bad_text(namespace, 255) or namespace.startswith((":", "AWS/")):
        return f"The value {namespace!r} for parameter Namespace is invalid."
    data = request.get("MetricData", [])
    if not 1 <= len(data) <= MOST_DATUMS:
        return f"The collection MetricData must have 1 to {MOST_DATUMS} members, got {len(data)}."
    per_metric: Counter[tuple[str, frozenset[tuple[str, str]]]] = Counter()
    for member, datum in enumerate(data, 1):
        parameter = _datum_refusal(datum, now)
        if parameter is not None:
            return f"The value for parameter MetricData.member.{member}.{parameter} is invalid."
        metric = (datum["MetricName"], frozenset((d["Name"], d["Value"]) for d in datum.get("Dimensions", [])))
        per_metric[metric] += len(datum.get("Values", [])) or 1
        if per_metric[metric] > MOST_VALUES_PER_METRIC:
            return (f"The parameter MetricData.member.{member}.Values holds more than {MOST_VALUES_PER_METRIC} "
                    "values of one metric in one request.")
    return None


def client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message or code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutMetricData",
    )


def invalid(message: str) -> ClientError:
    return client_error("InvalidParameterValue", 400, message)


class RecordingClient:
    """Keeps every request CloudWatch would accept; refuses the others as CloudWatch does (`refusal`).

    `fail` may raise for a request, by call number and request, before it is checked (throttling, network).
    `clock` (epoch seconds) also checks timestamps against CloudWatch's window."""

    def __init__(
        self,
        fail: Callable[[int, dict[str, Any]], BaseException | None] = lambda n, r: None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.calls: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self._fail = fail
        self._clock = clock

    def put_metric_data(self, **request: Any) -> dict[str, Any]:
        self.calls.append(request)
        error = self._fail(len(self.calls), request)
        if error is not None:
            raise error
        message = refusal(request, self._clock() if self._clock else None)
        if message is not None:
            self.refused.append(message)
            raise invalid(message)
        self.accepted.append(request)
        return {}

    @property
    def accepted_datums(self) -> list[dict[str, Any]]:
        return [datum for request in self.accepted for datum in request["MetricData"]]


def fail_first(count: int, error: BaseException) -> Callable[[int, dict[str, Any]], BaseException | None]:
    return lambda n, request: error if n <= count else None


def decode(body: bytes, content_type: str) -> Any:
    """A PutMetricData body as the API's parameters, in either protocol botocore may speak."""
    return cbor.loads(body) if "cbor" in content_type else json.loads(body)


class _NoBody:
    def stream(self, **_: Any) -> Any:
        yield b""


def refuse_before_sending(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
    """A `before-call.cloudwatch.PutMetricData` hook: answers for CloudWatch (under `mock_aws`, in process)
    when it would refuse the request, so moto, which accepts anything, never sees it. Requests to an endpoint
    on loopback go on: the fault proxy in front of the moto server checks them on the wire."""
    body = params["body"]
    if urlsplit(params.get("url", "")).hostname in ("127.0.0.1", "localhost") or not isinstance(body, bytes):
        return None  # the query protocol's parameter dict: not a protocol this botocore speaks to CloudWatch
    headers = params.get("headers", {})
    if len(body) > MOST_BYTES:
        status, code, message = 413, "RequestEntityTooLarge", f"Request size {len(body)} exceeded {MOST_BYTES}"
    else:
        refused = refusal(decode(body, str(headers.get("Content-Type", ""))))
        if refused is None:
            return None
        status, code, message = 400, "InvalidParameterValue", refused
    parsed = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return AWSResponse(params.get("url", ""), status, {}, _NoBody()), parsed


def speaking(protocol: str) -> ServiceModel:
    """botocore's own CloudWatch model, as if it spoke only `protocol`: the installed botocore's shapes, with the
    metadata its JSON serializer reads (values of CloudWatch's model in botocore 1.35+, where it speaks json) when
    an older model lacks them. For RequestSizer: its bodies are what botocore writes in that protocol."""
    loader = botocore.session.get_session().get_component("data_loader")
    model = copy.deepcopy(loader.load_service_model("cloudwatch", "service-2"))
    model["metadata"].update(protocol=protocol, protocols=[protocol])
    model["metadata"].setdefault("targetPrefix", "GraniteServiceVersion20100801")
    model["metadata"].setdefault("jsonVersion", "1.0")
    return ServiceModel(model, "cloudwatch")
