"""The request bound against botocore's own serializers: never below the exact body, in every protocol there is."""

from __future__ import annotations

import itertools
import json

import botocore.serialize
import botocore.session
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.aggregate import Datum
from agent.cloudwatch_rules import (
    MAX_ABS_VALUE,
    MAX_DATUMS_PER_REQUEST,
    MAX_DIMENSION_NAME_LENGTH,
    MAX_DIMENSION_VALUE_LENGTH,
    MAX_DIMENSIONS,
    MAX_NAME_LENGTH,
    MAX_VALUES_PER_METRIC,
    MIN_ABS_VALUE,
    series_problem,
    standard_units,
)
from agent.publisher import REQUEST_BYTES_BUDGET, RequestSizer
from agent.request_bound import (
    DATUM,
    DIMENSION,
    FLOAT_REPR,
    METRIC_DATA,
    NAMESPACE,
    RESOLUTION,
    RequestBound,
    bound_for,
)
from tests.fakes.cloudwatch import speaking

# The protocols CloudWatch's model is spoken in (query before botocore 1.35, json, smithy-rpc-v2-cbor), those
# the installed botocore can serialize: at the declared minimum (make test-min), query and json.
PROTOCOLS = [protocol for protocol in ("query", "json", "smithy-rpc-v2-cbor")
             if protocol in botocore.serialize.SERIALIZERS]
SIZERS = {protocol: RequestSizer(speaking(protocol)) for protocol in PROTOCOLS}
T0 = 1_790_000_040.0
LONGEST = -1.2345678901234567e100  # a repr of 24 characters, the most a double takes; "+" in it percent-encodes
ESCAPED = '"\\'  # JSON writes each as 2 characters, a form body as 3 (%22, %5C): the most a character takes


def exact(protocol: str, namespace: str, datums: list[Datum]) -> int:
    return SIZERS[protocol].body_bytes(namespace, [datum.to_api() for datum in datums])


def bound(protocol: str, namespace: str, datums: list[Datum]) -> int:
    derived = bound_for(protocol)
    assert derived is not None
    return derived.request(namespace, datums)


def test_there_is_a_bound_for_every_protocol_cloudwatchs_model_lists_and_none_for_another() -> None:
    model = botocore.session.get_session().get_service_model("cloudwatch")
    assert all(isinstance(bound_for(protocol), RequestBound)
               for protocol in model.metadata.get("protocols", [model.protocol]))
    assert "query" in PROTOCOLS and "json" in PROTOCOLS
    assert bound_for("ec2") is None


def test_every_standard_unit_is_under_24_characters_one_cbor_head_byte() -> None:
    assert max(len(unit) for unit in standard_units()) == len("Terabytes/Second") < 24


# Datums as CloudWatch's rules admit them (cloudwatch_rules.series_problem is asked of each): printable ASCII,
# names up to 255 and values up to 1,024 characters, up to 30 dimensions, 1..150 values and counts.
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
NUMBERS = st.one_of(
    st.just(0.0), st.just(LONGEST), st.just(-LONGEST), st.just(1.0),
    st.floats(min_value=MIN_ABS_VALUE, max_value=MAX_ABS_VALUE),
    st.floats(min_value=-MAX_ABS_VALUE, max_value=-MIN_ABS_VALUE),
)


@st.composite
def datums(draw: st.DrawFn) -> Datum:
    name = draw(st.text(PRINTABLE, min_size=1, max_size=MAX_NAME_LENGTH))
    names = draw(st.lists(st.text(PRINTABLE, min_size=1, max_size=MAX_DIMENSION_NAME_LENGTH).filter(
        lambda text: not text.isspace() and not text.startswith(":")), max_size=MAX_DIMENSIONS, unique=True))
    values = [draw(st.one_of(
        st.text(PRINTABLE, min_size=1, max_size=MAX_DIMENSION_VALUE_LENGTH).filter(lambda text: not text.isspace()),
        st.just(ESCAPED * (MAX_DIMENSION_VALUE_LENGTH // 2)))) for _ in names]
    count = draw(st.integers(1, MAX_VALUES_PER_METRIC))
    datum = Datum(
        name, tuple(sorted(zip(names, values, strict=True))),
        draw(st.one_of(st.just(T0), st.floats(T0 - 14 * 86_400, T0 + 7_200))),
        draw(st.sampled_from(sorted(standard_units()))),
        tuple(draw(st.lists(NUMBERS, min_size=count, max_size=count))),
        tuple(draw(st.lists(st.one_of(st.just(1.0), st.just(LONGEST), NUMBERS), min_size=count, max_size=count))),
        draw(st.sampled_from([1, 60])),
    )
    assert series_problem(datum.name, datum.unit, datum.dimensions) is None
    return datum


# Every part at its longest: every character one that is escaped or percent-encoded, 30 dimensions of the longest
# names and values (names made unique from the two escaped characters), 150 values and counts of the longest
# repr, a timestamp with microseconds, StorageResolution 1.
UNIQUE = ["".join(pattern) for pattern in itertools.product(ESCAPED, repeat=5)]
WORST = Datum(
    ESCAPED * 127 + '"',
    tuple(sorted((UNIQUE[i] + '"' * (MAX_DIMENSION_NAME_LENGTH - 5), ESCAPED * 512) for i in range(MAX_DIMENSIONS))),
    T0 + 0.123456, "Count", (LONGEST,) * MAX_VALUES_PER_METRIC, (LONGEST,) * MAX_VALUES_PER_METRIC, 1,
)
LONGEST_NAMESPACE = ESCAPED * 127 + '"'

FILLER = Datum("F", (), T0, "None", (0.0,), (1.0,))  # puts the datums drawn at indices up to 1,000


@pytest.mark.parametrize("protocol", PROTOCOLS)
@settings(max_examples=60, deadline=None)
@given(drawn=st.lists(datums(), min_size=1, max_size=3),
       before=st.sampled_from([0, 8, 97, MAX_DATUMS_PER_REQUEST - 3]),
       namespace=st.text(PRINTABLE, min_size=1, max_size=MAX_NAME_LENGTH))
@example(drawn=[FILLER], before=MAX_DATUMS_PER_REQUEST - 1, namespace="InfraWatch")
@example(drawn=[WORST], before=MAX_DATUMS_PER_REQUEST - 1, namespace=LONGEST_NAMESPACE)  # every part at its longest
def test_the_bound_is_never_below_the_body_botocore_writes(
    protocol: str, drawn: list[Datum], before: int, namespace: str,
) -> None:
    request = [FILLER] * min(before, MAX_DATUMS_PER_REQUEST - len(drawn)) + drawn
    assert bound(protocol, namespace, request) >= exact(protocol, namespace, request)


def test_the_bound_counts_every_member_a_request_and_a_datum_have_by_the_name_botocore_writes() -> None:
    model = botocore.session.get_session().get_service_model("cloudwatch")
    api = WORST.to_api()
    assert (tuple(api), tuple(api["Dimensions"][0])) == ((*DATUM, RESOLUTION), DIMENSION)
    assert {NAMESPACE, METRIC_DATA} <= set(model.operation_model("PutMetricData").input_shape.members)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_datum_adds_its_own_bound_storage_resolution_included(protocol: str) -> None:
    one = bound(protocol, "N", [WORST]) - bound(protocol, "N", [])
    assert bound(protocol, "N", [WORST, WORST, WORST]) - bound(protocol, "N", []) == 3 * one > 0


# What the bound counts beyond the exact body of one WORST datum, part by part, and why it must.
SLACK = {
    # "Count" is 5 characters of 3 bytes at most; StorageResolution "1" of 26 (a float's str with "%2B");
    # every key at datum index 1 is 3 digits shorter than at 1,000 (364 keys: name, 60 of dimensions,
    # timestamp, 150 values, 150 counts, unit, resolution); dimension 1..9 one digit shorter than 30 (18 keys),
    # value and count 1..9 two digits and 10..99 one digit shorter than 150 (2 × 108); and the
    # "&MetricData.member.1000.Dimensions=" an empty list would need (35).
    "query": 5 * 2 + 25 + 364 * 3 + 18 + 2 * 108 + 35,
    # "Count" (5 characters, none escaped); "1" and the timestamp (below) of the 24 a number may take; the ", "
    # not written after the last member of each object (the request, the datum, 30 dimensions) nor after the
    # last item of each list (datums, dimensions, values, counts).
    "json": 5 + 23 + 2 * (2 + MAX_DIMENSIONS) + 2 * 4,
    # StorageResolution 1 is 1 byte of the 9 an integer may take; the list of 1 datum has a 1-byte head, not 3.
    "smithy-rpc-v2-cbor": 8 + 2,
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_bound_of_the_longest_datum_is_its_exact_size_but_for_what_cannot_all_be_longest(protocol: str) -> None:
    slack = SLACK[protocol]
    if protocol == "json":  # botocore 1.34 writes whole seconds (1790000040), later ones 1790000040.123456
        written = json.loads(SIZERS[protocol].body(LONGEST_NAMESPACE, [WORST.to_api()]))["MetricData"][0]["Timestamp"]
        slack += FLOAT_REPR - len(repr(written))
    assert bound(protocol, LONGEST_NAMESPACE, [WORST]) - exact(protocol, LONGEST_NAMESPACE, [WORST]) == slack


def typical(count: int = MAX_DATUMS_PER_REQUEST) -> list[Datum]:
    """StatsD series as jobs send them: a 40-character name, 2 to 4 dimensions, 1 to 10 values of 18 characters."""
    dimensions = (("AutoScalingGroupName", "training-p5-48xlarge"), ("InstanceId", "i-0123456789abcdef0"),
                  ("Job", "llama-70b-sft-run-0042"), ("Model", "llama-3.1-70b"))
    return [Datum(f"trainer.step.data_loader_wait_seconds_{i:03d}", dimensions[: 2 + i % 3], T0, "Milliseconds",
                  tuple(0.1234567890123456 + value for value in range(1 + i % 10)), (1.0,) * (1 + i % 10))
            for i in range(count)]


# What the bound and the exact body come to for 1,000 typical datums in each protocol: CBOR (current botocore)
# and json fit the budget by their bound; the query form body (botocore < 1.35) does not even exactly, so it
# is measured and split as ever.
TYPICAL = {"query": (1_648_911, 1_095_092), "json": (781_316, 458_060), "smithy-rpc-v2-cbor": (365_664, 349_666)}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_1000_typical_datums_fit_the_budget_by_their_bound_in_json_and_cbor(protocol: str) -> None:
    bounded, size = bound(protocol, "InfraWatch", typical()), exact(protocol, "InfraWatch", typical())
    assert (bounded, size) == TYPICAL[protocol]
    assert (bounded <= REQUEST_BYTES_BUDGET) == (protocol != "query")
