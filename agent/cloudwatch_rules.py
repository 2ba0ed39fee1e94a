"""CloudWatch's PutMetricData contract: what the service accepts, and which of its errors are worth retrying.

The one place these rules live; the aggregator, the StatsD parser and collector, the agent's config, the
provisioner's spec and the publisher all ask this module. Sources, quoted where a rule is checked:
- PutMetricData API reference ("up to 150 values per metric with one PutMetricData request", "limited to
  1 MB", "no more than 1000 different metrics", "Values must be in the range of -2^360 to 2^360 ... NaN,
  +Infinity, -Infinity are not supported"; the SDK references add the base-10 range 8.515920e-109 to
  1.174271e+108);
- the Dimension reference (names and values "must contain only ASCII characters, must include at least one
  non-whitespace character", names "cannot start with a colon", "ASCII control characters are not
  supported"; name 1..255, value 1..1024; "You can assign up to 30 dimensions to a metric");
- PutMetricData's Namespace ("ASCII characters ... except for control characters", pattern `[^:].*`,
  "should not specify a namespace that begins with AWS/") and MetricDatum's MetricName (1..255);
- the MetricDatum reference: timestamps up to two weeks in the past and two hours in the future;
- StandardUnit: read from botocore's service model, so the list is the one the SDK validates against.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import botocore.exceptions
import botocore.session

# "Values must be in the range of -2^360 to 2^360", and too small a magnitude is refused too (telegraf#2523).
# The base-10 bounds the same documentation gives, which micrometer and data-prepper clamp to, are a factor 2
# inside 2^±360 (8.515920e-109 is 2^-359, 1.174271e+108 is 2^359): the narrower pair holds under either reading.
MIN_ABS_VALUE = 8.515920e-109
MAX_ABS_VALUE = 1.174271e108
MAX_NAME_LENGTH = 255  # namespace and metric name
MAX_DIMENSION_NAME_LENGTH = 255
MAX_DIMENSION_VALUE_LENGTH = 1024
MAX_DIMENSIONS = 30  # per datum
MAX_VALUES_PER_METRIC = 150  # distinct values of one metric (name + dimensions) in one request
MAX_DATUMS_PER_REQUEST = 1000
MAX_REQUEST_BYTES = 1_000_000  # 1 MB of HTTP body, in decimal bytes to be safe
MAX_AGE_SECONDS = 14 * 24 * 3600  # oldest timestamp accepted
MAX_AHEAD_SECONDS = 2 * 3600  # furthest future timestamp accepted
RESERVED_NAMESPACE_PREFIX = "AWS/"

# Error codes, as botocore reports them (query-compatible codes for CloudWatch, plain ones for SNS and
# EventBridge, which the provisioner calls through the same policy). Any 5xx is retryable whatever its code:
# a load balancer or proxy in front of the endpoint answers 502/503/504 with codes of its own.
RETRYABLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled", "TooManyRequestsException",
    "RequestLimitExceeded", "InternalFailure", "InternalServiceError", "InternalError", "ServiceUnavailable",
    "RequestTimeout", "RequestTimeoutException",
})  # not LimitExceeded: CloudWatch's answer when an account quota (alarms) is full, which no retry clears
# Bad data: the same request can never succeed, so it is neither retried nor kept for later.
REJECTED_CODES = frozenset({
    "InvalidParameterValue", "InvalidParameterCombination", "MissingParameter", "InvalidParameterValueException",
    "InvalidParameterCombinationException", "MissingRequiredParameterException",
})
REQUEST_TOO_LARGE = 413
# Connection refused, reset or timed out, TLS and proxy failures: the request may be retried. The concrete
# classes are named (their names are the error codes counted in PublishErrors); the two bases catch the rest.
NETWORK_ERRORS = (
    botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ConnectionClosedError, botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ProxyConnectionError, botocore.exceptions.SSLError,
    botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError,
)
# The request went out and no answer came back: CloudWatch may have stored it.
MAYBE_DELIVERED = (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError)
# botocore refused to build the request from these parameters: resending it cannot help.
REQUEST_ERRORS = (botocore.exceptions.ParamValidationError, botocore.exceptions.ValidationError)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # ASCII control characters
_PRINTABLE = re.compile(r"[ -~]+")  # one or more ASCII characters, none of them a control character


@lru_cache(maxsize=1)
def standard_units() -> frozenset[str]:
    """CloudWatch's StandardUnit names, from botocore's own service model (loaded once, on first use)."""
    model = botocore.session.get_session().get_service_model("cloudwatch")
    return frozenset(model.shape_for("StandardUnit").enum)


def publishable(value: float) -> bool:
    """Exactly 0, or a finite magnitude within MIN_ABS_VALUE..MAX_ABS_VALUE (NaN and ±Inf fail both)."""
    return value == 0 or MIN_ABS_VALUE <= abs(value) <= MAX_ABS_VALUE


def _text_problem(value: str, low: int, high: int) -> str | None:
    if not low <= len(value) <= high:
        return f"must be {low}..{high} characters"
    if not value.isascii():
        return "must be ASCII only"
    if _CONTROL.search(value):
        return "must not contain control characters (tab, newline, ...)"
    return None


def _blank(value: str) -> str | None:
    return "must have a non-whitespace character" if value.isspace() else None


def _colon(value: str) -> str | None:
    return 'must not start with ":"' if value.startswith(":") else None


def namespace_problem(value: str) -> str | None:
    reserved = value.startswith(RESERVED_NAMESPACE_PREFIX)
    return _text_problem(value, 1, MAX_NAME_LENGTH) or _colon(value) or (
        f'must not start with "{RESERVED_NAMESPACE_PREFIX}" (reserved for AWS services)' if reserved else None
    )


def metric_name_problem(value: str) -> str | None:
    return _text_problem(value, 1, MAX_NAME_LENGTH)


def dimension_name_problem(value: str) -> str | None:
    return _text_problem(value, 1, MAX_DIMENSION_NAME_LENGTH) or _blank(value) or _colon(value)


def dimension_value_problem(value: str) -> str | None:
    return _text_problem(value, 1, MAX_DIMENSION_VALUE_LENGTH) or _blank(value)


def dimensions_problem(dimensions: Iterable[tuple[str, str]]) -> str | None:
    """One datum's dimensions: each name and value valid, at most 30, no name twice."""
    names: set[str] = set()
    for name, value in dimensions:
        problem = _about(f"dimension name {name!r}", dimension_name_problem(name)) or _about(
            f"dimension {name} value {value!r}", dimension_value_problem(value)
        )
        if problem:
            return problem
        if name in names:
            return f"dimension {name} appears twice"
        names.add(name)
    if len(names) > MAX_DIMENSIONS:
        return f"at most {MAX_DIMENSIONS} dimensions, got {len(names)}"
    return None


def unit_problem(unit: str) -> str | None:
    return None if unit in standard_units() else "is not a CloudWatch StandardUnit"


def timestamp_problem(timestamp: float, now: float) -> str | None:
    if timestamp < now - MAX_AGE_SECONDS:
        return "is more than 14 days old"
    if timestamp > now + MAX_AHEAD_SECONDS:
        return "is more than 2 hours ahead"
    return None


def _acceptable(name: str, value: str) -> bool:
    return bool(len(name) <= MAX_DIMENSION_NAME_LENGTH and len(value) <= MAX_DIMENSION_VALUE_LENGTH
                and _PRINTABLE.fullmatch(name) and _PRINTABLE.fullmatch(value) and name[0] != ":"
                and not name.isspace() and not value.isspace())


def series_problem(name: str, unit: str, dimensions: tuple[tuple[str, str], ...]) -> str | None:
    """What CloudWatch would refuse in a series' identity (its values are checked one by one).

    Asked for every series at every flush, so a valid identity is recognised first, without messages."""
    if (len(name) <= MAX_NAME_LENGTH and _PRINTABLE.fullmatch(name) and unit in standard_units()
            and len(dimensions) <= MAX_DIMENSIONS and all(_acceptable(*pair) for pair in dimensions)
            and len({pair[0] for pair in dimensions}) == len(dimensions)):
        return None
    return (_about(f"metric name {name!r}", metric_name_problem(name)) or _about(f"unit {unit!r}", unit_problem(unit))
            or dimensions_problem(dimensions))


def _about(subject: str, problem: str | None) -> str | None:
    return f"{subject} {problem}" if problem else None


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
    """A network failure, a throttle or a transient service error: the same request may succeed later."""
    if isinstance(error, NETWORK_ERRORS):
        return True
    if isinstance(error, botocore.exceptions.ClientError):
        return error_code(error) in RETRYABLE_CODES or (http_status(error) or 0) >= 500
    return False


def is_rejection(error: BaseException) -> bool:
    """The request itself is wrong: CloudWatch refused its data, or botocore (or serializing it) refused to
    build it. Never retried, never kept for later. Other errors (no credentials, access denied) may clear."""
    if isinstance(error, botocore.exceptions.ClientError):
        return error_code(error) in REJECTED_CODES or http_status(error) == REQUEST_TOO_LARGE
    return isinstance(error, REQUEST_ERRORS) or not isinstance(error, botocore.exceptions.BotoCoreError)

