"""A proven upper bound on a PutMetricData body's bytes, from a few lengths, for each protocol botocore speaks.

Measuring a request (`publisher.RequestSizer`) serializes it as botocore will, and the real send serializes it
again: a third of the send path. A bound is not an estimate (the CloudWatch agent estimated and got HTTP 413,
cloudwatch.md): every part of the body is counted at the most bytes botocore can write for it, so the bound is
never below the exact size, and `tests/test_request_bound.py` checks that against botocore's own serializers,
for every protocol the installed botocore has, on random datums up to every limit below. A batch whose bound
fits the budget fits; only one whose bound does not is measured.

It holds for a datum as it reaches the publisher; what guarantees each assumption:
- name, unit, dimension names and values are ASCII without control characters, names ≤ 255 and values
  ≤ 1,024 characters, ≤ 30 dimensions, a StandardUnit: `cloudwatch_rules.series_problem`, which the
  aggregator's drain asks of every datum (spooled datums were drained before they were kept);
  the namespace: `cloudwatch_rules.namespace_problem`, at config load;
- 1..150 values, as many counts: the aggregator's chunks (`spool.decode` refuses a row where they do not pair);
- values and counts are floats (`float()` where samples are made and spooled rows read), whose `repr` is at
  most 24 characters ("-1.2345678901234567e-100"; an int below 10^16 would be shorter still); the timestamp
  is a datetime, which botocore writes as ISO 8601 or epoch seconds;
- at most 1,000 datums a request (`publisher._spread`), so a datum's index has at most 4 digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from agent.aggregate import STANDARD_RESOLUTION, Datum

FLOAT_REPR = len("-1.2345678901234567e-100")  # the longest repr of a double: 17 significant digits, 3-digit exponent
# The members of a request, a datum (Datum.to_api, in its order; tests check they agree) and a dimension, by the
# names botocore writes: only their lengths count.
NAMESPACE, METRIC_DATA = "Namespace", "MetricData"
DATUM = ("MetricName", "Dimensions", "Timestamp", "Values", "Counts", "Unit")
NUMBERS = ("Values", "Counts")
RESOLUTION = "StorageResolution"  # written only when it is not 60
DIMENSION = ("Name", "Value")
# The query protocol: the parameters before the request's own, and the path of a list's item, "<list>.member.N"
# from 1, at the longest index of each list: 1,000 datums, 30 dimensions, 150 values (Counts: as long).
QUERY_ACTION = "Action=PutMetricData&Version=2010-08-01"
QUERY_DATUM = METRIC_DATA + ".member.1000."
QUERY_DIMENSION = QUERY_DATUM + "Dimensions.member.30."
QUERY_NUMBER = QUERY_DATUM + "Values.member.150"


class RequestBound(NamedTuple):
    """The body's bytes as a sum over what varies: a part that is the same for every request and every datum,
    and so many bytes a character of text, a dimension, a value or count, a StorageResolution."""

    per_request: int  # the envelope, the namespace's characters aside
    per_datum: int
    per_char: int  # of the namespace, a name, a unit, a dimension name or value
    per_dimension: int
    per_number: int  # one of Values or Counts
    per_resolution: int  # StorageResolution, written only when it is not 60

    def request(self, namespace: str, datums: Sequence[Datum]) -> int:
        """At least the body botocore writes for these datums in this namespace (one pass, a few len()s each)."""
        chars = len(namespace)
        dimensions = numbers = resolutions = 0
        for datum in datums:
            chars += len(datum.name) + len(datum.unit)
            for name, value in datum.dimensions:
                chars += len(name) + len(value)
            dimensions += len(datum.dimensions)
            numbers += len(datum.values) + len(datum.counts)
            resolutions += datum.storage_resolution != STANDARD_RESOLUTION
        return (self.per_request + self.per_datum * len(datums) + self.per_char * chars
                + self.per_dimension * dimensions + self.per_number * numbers + self.per_resolution * resolutions)


def _query() -> RequestBound:
    """botocore's QuerySerializer names each value by its path and AWSRequest form-encodes the pairs (urlencode
    with quote_plus): `&key=value`. Keys are letters, digits and dots, written as they are, at their longest
    index (datum 1,000, dimension 30, value 150); a printable ASCII character of text is at most 3 bytes (%XX),
    a float's str at most FLOAT_REPR + 2 (an exponent's "+" becomes %2B), a timestamp 31 (ISO 8601 with
    microseconds, "2026-12-07T00:25:32.123456Z", its two colons %3A)."""

    def pair(key: str) -> int:
        return len("&") + len(key) + len("=")

    number = FLOAT_REPR + 2
    return RequestBound(
        per_request=len(QUERY_ACTION) + pair(NAMESPACE),
        # An empty Dimensions list is still written, "Dimensions=": counted; Values and Counts are never empty.
        per_datum=sum(pair(QUERY_DATUM + member) for member in DATUM if member not in NUMBERS) + 31,
        per_char=3,
        per_dimension=sum(pair(QUERY_DIMENSION + member) for member in DIMENSION),
        per_number=pair(QUERY_NUMBER) + number,
        per_resolution=pair(QUERY_DATUM + RESOLUTION) + number,
    )


def _json() -> RequestBound:
    """botocore's JSONSerializer: json.dumps with its defaults, ", " between items, ": " after a key, ASCII
    only. A printable ASCII character is written as itself, but `"` and `\\` as 2; a number as repr (at most
    FLOAT_REPR; botocore writes ±Infinity as the strings "Infinity", "-Infinity", shorter); a timestamp as
    epoch seconds, an int or a float."""

    def member(name: str) -> int:  # "name": value, (the last member's ", " is counted too)
        return len(name) + len('"": , ')

    text = len('""')
    return RequestBound(
        per_request=len("{}") + member(NAMESPACE) + text + member(METRIC_DATA) + len("[]"),
        # Its braces and the ", " before the next datum; the name's quotes, the lists' brackets (dimensions,
        # values, counts), the timestamp, the unit's quotes.
        per_datum=(len("{}, ") + sum(member(name) for name in DATUM) + text + len("[]") + FLOAT_REPR
                   + 2 * len("[]") + text),
        per_char=2,
        per_dimension=len("{}, ") + sum(member(name) for name in DIMENSION) + 2 * text,
        per_number=FLOAT_REPR + len(", "),
        per_resolution=member(RESOLUTION) + FLOAT_REPR,
    )


def _cbor() -> RequestBound:
    """botocore's CBORSerializer (RFC 8949): an item's head is 1 byte for a length or integer under 24, 2 under
    256, 3 under 65,536, 9 at most; text is its head and its UTF-8 bytes (1 a character here); a double is
    9 bytes; a timestamp is tag 1 (1 byte) and an integer or a double. Member names are under 24 bytes. The
    heads below are for the longest each can be: a name (255) or a dimension name 2, a dimension value (1,024)
    3, a StandardUnit (under 24 characters) 1; 30 dimensions and 150 values 2; 1,000 datums 3; a datum's map
    (at most 7 members) 1."""

    def key(name: str) -> int:
        return 1 + len(name)

    double = 9
    return RequestBound(
        per_request=1 + key(NAMESPACE) + 2 + key(METRIC_DATA) + 3,
        # The map's head, then the heads of the name (2), the dimensions (2), the timestamp's tag and value
        # (1 + 9), the values and counts (2 + 2), the unit (1).
        per_datum=1 + sum(key(name) for name in DATUM) + 2 + 2 + 1 + double + 2 + 2 + 1,
        per_char=1,
        per_dimension=1 + sum(key(name) for name in DIMENSION) + 2 + 3,
        per_number=double,
        per_resolution=key(RESOLUTION) + 9,  # an integer: at most 9 bytes
    )


def bound_for(protocol: str) -> RequestBound | None:
    """The bound for botocore's protocol name (ServiceModel.resolved_protocol): one for each CloudWatch's model
    lists, None for another (its batches are measured)."""
    derive = {"query": _query, "json": _json, "smithy-rpc-v2-cbor": _cbor}.get(protocol)
    return derive() if derive else None
