"""StatsD/DogStatsD line parsing: every type, sample rates, tags, and every reason a line is refused."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.cloudwatch_rules import MAX_ABS_VALUE as MAX_VALUE
from agent.cloudwatch_rules import dimension_value_problem
from agent.statsd.parser import NAME, Line, Rejected, escaped, parse_packet


def one(text: str) -> Line:
    lines, rejected = parse_packet(text.encode())
    assert rejected == []
    assert len(lines) == 1
    return lines[0]


def reason(text: bytes) -> str:
    lines, rejected = parse_packet(text)
    assert lines == []
    assert len(rejected) == 1
    return rejected[0].reason


def test_counter() -> None:
    assert one("SamplesProcessed:32|c") == Line("SamplesProcessed", "c", 32.0)


def test_negative_counter_is_a_decrement_not_a_delta() -> None:
    assert one("Inflight:-3|c") == Line("Inflight", "c", -3.0)


def test_counter_with_sample_rate() -> None:
    assert one("Rows:1|c|@0.1") == Line("Rows", "c", 1.0, sample_rate=0.1)


def test_an_explicit_sample_rate_of_1_is_accepted() -> None:
    assert one("Rows:1|c|@1") == Line("Rows", "c", 1.0, sample_rate=1.0)
    assert one("Lat:2|ms|@1.0") == Line("Lat", "ms", 2.0, sample_rate=1.0)


def test_gauge_set_and_deltas() -> None:
    assert one("QueueDepth:17|g") == Line("QueueDepth", "g", 17.0)
    assert one("QueueDepth:+4|g") == Line("QueueDepth", "g", 4.0, delta=True)
    assert one("QueueDepth:-2.5|g") == Line("QueueDepth", "g", -2.5, delta=True)


@pytest.mark.parametrize("kind", ["ms", "h", "d"])
def test_timer_histogram_distribution(kind: str) -> None:
    assert one(f"StepTime:12.25|{kind}|@0.5") == Line("StepTime", kind, 12.25, 0.5)  # type: ignore[arg-type]


def test_dogstatsd_tags_keep_their_order_and_bare_tags_have_no_value() -> None:
    line = one("Tokens:128|c|#model:llama-8b,canary,rank:0,url:http://x")
    assert line.tags == (("model", "llama-8b"), ("canary", ""), ("rank", "0"), ("url", "http://x"))


def test_rate_and_tags_in_either_order_and_other_dogstatsd_fields_skipped() -> None:
    expected = Line("Rows", "c", 2.0, 0.25, (("env", "prod"),))
    assert one("Rows:2|c|#env:prod|@0.25") == expected
    assert one("Rows:2|c|@0.25|c:container-id|T1700000000|#env:prod") == expected


@pytest.mark.parametrize("value", ["1", "1.5", ".5", "1.", "1e3", "1E-3", "+1", "-0", "007"])
def test_number_forms(value: str) -> None:
    assert one(f"X:{value}|ms").value == float(value)


def test_multi_line_packet_skips_empty_lines_and_keeps_good_lines_around_bad_ones() -> None:
    lines, rejected = parse_packet(b"A:1|c\n\nB:2|g\nnonsense\nC:3|ms\n")
    assert lines == [Line("A", "c", 1.0), Line("B", "g", 2.0), Line("C", "ms", 3.0)]
    assert rejected == [Rejected("nonsense", 'no ":" between name and value')]


def test_a_non_ascii_name_or_value_rejects_its_line_alone() -> None:
    lines, rejected = parse_packet("A:1|c\nZüge:2|c\nB:3|c\nC:١٢|c\nD:²|c".encode())
    assert [line.name for line in lines] == ["A", "B"]
    assert rejected == [
        Rejected("Züge:2|c", "name must be 1..246 of A-Z a-z 0-9 _ . - /"),
        Rejected("C:١٢|c", "value must be a decimal number, got '١٢'"),  # float() would read it as 12
        Rejected("D:²|c", "value must be a decimal number, got '²'"),  # str.isdigit() says it is a digit
    ]


def test_bytes_that_are_not_utf8_reject_only_the_line_whose_name_holds_them() -> None:
    lines, rejected = parse_packet(b"A\xff:1|c\nB:2|c|#env:\xfe")
    assert lines == [Line("B", "c", 2.0, tags=(("env", "\ufffd"),))]
    assert rejected == [Rejected("A\ufffd:1|c", "name must be 1..246 of A-Z a-z 0-9 _ . - /")]


def test_crlf_line_endings_are_accepted() -> None:
    lines, rejected = parse_packet(b"A:1|c\r\nB:2|g|#env:prod\r\n\r\n")
    assert lines == [Line("A", "c", 1.0), Line("B", "g", 2.0, tags=(("env", "prod"),))]
    assert rejected == []


def test_a_carriage_return_inside_a_line_still_rejects_it() -> None:
    assert reason(b"A:1|c\rB:2|c") == "type must be one of c, g, ms, h, d, s, got 'c\\rB:2'"


def test_sets_take_any_text_as_a_member() -> None:
    assert one("Users:42|s") == Line("Users", "s", 0.0, member="42")
    assert one("Users:alice|s|#env:prod") == Line("Users", "s", 0.0, tags=(("env", "prod"),), member="alice")
    assert one("Users:|s") == Line("Users", "s", 0.0, member="")
    assert one("Users:a:b|s") == Line("Users", "s", 0.0, member="a:b")  # a set's value is never split


def test_several_values_in_one_line_are_several_lines_sharing_type_rate_and_tags() -> None:
    lines, rejected = parse_packet(b"Lat:1:2.5:3|ms|@0.5|#env:prod\nDepth:5:+2:-1|g")
    env = (("env", "prod"),)
    assert lines == [
        Line("Lat", "ms", 1.0, 0.5, env), Line("Lat", "ms", 2.5, 0.5, env), Line("Lat", "ms", 3.0, 0.5, env),
        Line("Depth", "g", 5.0), Line("Depth", "g", 2.0, delta=True), Line("Depth", "g", -1.0, delta=True),
    ]
    assert rejected == []


def test_one_bad_value_among_several_rejects_the_line() -> None:
    assert reason(b"Lat:1::3|ms") == "value must be a decimal number, got ''"
    assert reason(b"Lat:1:nan|ms") == "value must be a decimal number, got 'nan'"


@pytest.mark.parametrize(
    ("tags", "parsed"),
    [
        ("#", ()),  # Telegraf's tests count `cpu:42|c|#` as 42
        ("#env:prod,", (("env", "prod"),)),
        ("#env:prod,,rank:1", (("env", "prod"), ("rank", "1"))),
        ("#error:connection refused", (("error", "connection refused"),)),  # hot-shots
        ("#env=prod,canary", (("env", "prod"), ("canary", ""))),  # Graphite style, as node-statsd users send it
        ("#city:zürich", (("city", "zürich"),)),  # DogStatsD's Python client sends UTF-8
        ("#url:http://x/?a=b", (("url", "http://x/?a=b"),)),  # the first ":" separates key and value
        ("#:v,k:\x01," + "k" * 256 + ":v", (("", "v"), ("k", "\x01"), ("k" * 256, "v"))),
    ],
)
def test_tags_never_reject_a_line(tags: str, parsed: tuple[tuple[str, str], ...]) -> None:
    assert one(f"A:1|c|{tags}") == Line("A", "c", 1.0, tags=parsed)


def test_a_tag_key_of_255_characters_parses() -> None:
    assert one("A:1|c|#" + "k" * 255 + ":v").tags == (("k" * 255, "v"),)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("prod", None),
        ("connection refused", None),
        ("v" * 1024, None),
        ("", "must be 1..1024 characters"),
        ("   ", "must have a non-whitespace character"),
        ("v" * 1025, "must be 1..1024 characters"),
        ("zürich", "must be ASCII only"),
        ("a\x1bb", "must not contain control characters (tab, newline, ...)"),
        ("a\tb", "must not contain control characters (tab, newline, ...)"),
    ],
)
def test_what_a_dimension_value_may_hold(value: str, problem: str | None) -> None:
    assert dimension_value_problem(value) == problem


def test_escaped_text_cannot_drive_a_terminal() -> None:
    assert escaped("\x1b]0;owned\x07\x1b[2JA:1|c\rü\\") == "\\x1b]0;owned\\x07\\x1b[2JA:1|c\\r\\xfc\\\\"
    assert escaped("Rows:1|c|#env:prod") == "Rows:1|c|#env:prod"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"A|c", 'no ":" between name and value'),
        (b"A:1", "type must be one of c, g, ms, h, d, s, got ''"),
        (b"A:1|S", "type must be one of c, g, ms, h, d, s, got 'S'"),
        (b"A:1|C", "type must be one of c, g, ms, h, d, s, got 'C'"),
        (b":1|c", "name must be 1..246 of A-Z a-z 0-9 _ . - /"),
        (b"my metric:1|c", "name must be 1..246 of A-Z a-z 0-9 _ . - /"),
        (b"A" * 247 + b":1|c", "name must be 1..246 of A-Z a-z 0-9 _ . - /"),
        (b"A:nan|c", "value must be a decimal number, got 'nan'"),
        (b"A:inf|g", "value must be a decimal number, got 'inf'"),
        (b"A:1_000|c", "value must be a decimal number, got '1_000'"),
        (b"A: 1|c", "value must be a decimal number, got ' 1'"),
        (b"A:|c", "value must be a decimal number, got ''"),
        (b"A:1:x|ms", "value must be a decimal number, got 'x'"),
        (b"A:0x10|c", "value must be a decimal number, got '0x10'"),
        (b"A:1e400|c", "value must be finite and within ±1.17427e+108"),
        (b"A:3e108|g", "value must be finite and within ±1.17427e+108"),
        (b"A:1|c|@0", "sample rate must be greater than 0 and at most 1"),
        (b"A:1|c|@1.5", "sample rate must be greater than 0 and at most 1"),
        (b"A:1|c|@", "sample rate must be a decimal number, got ''"),
        (b"A:1|c|@0.5|@0.5", "more than one sample rate"),
        (b"A:1|c|#a:b|#c:d", "more than one tag field"),
        (b"A:1|c||@0.5", "empty field"),
        (b"A:1|c\r\r", "type must be one of c, g, ms, h, d, s, got 'c\\r'"),
        (b"_e{5,4}:title|text", "DogStatsD events are not supported"),
        (b"_sc|db.ok|0", "DogStatsD service checks are not supported"),
    ],
)
def test_rejections_say_why(text: bytes, why: str) -> None:
    assert reason(text) == why


def test_largest_value_cloudwatch_takes() -> None:
    assert one(f"A:{MAX_VALUE!r}|g").value == MAX_VALUE


# --- properties ----------------------------------------------------------------------------------

@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise_and_every_line_is_publishable(packet: bytes) -> None:
    lines, rejected = parse_packet(packet)
    assert len(rejected) <= packet.count(b"\n") + 1
    for line in lines:
        assert NAME.fullmatch(line.name)
        assert math.isfinite(line.value) and abs(line.value) <= MAX_VALUE
        assert 0 < line.sample_rate <= 1
        assert all(key or value for key, value in line.tags)


@given(st.lists(st.text(alphabet=st.characters(codec="ascii"), max_size=80), max_size=20))
def test_arbitrary_ascii_lines_never_raise(texts: list[str]) -> None:
    lines, rejected = parse_packet("\n".join(texts).encode())
    texts = [text.removesuffix("\r") for text in "\n".join(texts).split("\n")]
    non_empty = sum(1 for text in texts if text)
    assert len(rejected) <= non_empty <= len(lines) + len(rejected)  # several values give several lines


NAME_CHARS = st.sampled_from("ABCXYZabcxyz0189_.-/")
TAG_VALUE_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=",|")
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-MAX_VALUE, max_value=MAX_VALUE)
rates = st.floats(min_value=1e-6, max_value=1.0, exclude_min=False)


@st.composite
def lines_and_texts(draw: st.DrawFn) -> tuple[Line, str]:
    name = draw(st.text(NAME_CHARS, min_size=1, max_size=246))
    kind = draw(st.sampled_from(["c", "g", "ms", "h", "d"]))
    value = draw(finite)
    delta = kind == "g" and draw(st.booleans())
    if kind == "g" and not delta:
        value = abs(value)  # a signed gauge value is a delta, so a gauge can only be set to >= 0
    value_text = repr(value)
    if delta and not value_text.startswith("-"):
        value_text = "+" + value_text
    fields = [f"{name}:{value_text}", kind]
    rate = draw(st.one_of(st.just(1.0), rates))
    if rate != 1.0:
        fields.append(f"@{rate!r}")
    tags = tuple(draw(st.lists(
        st.tuples(st.text(NAME_CHARS, min_size=1, max_size=20), st.text(TAG_VALUE_CHARS, max_size=30)),
        max_size=5,
    )))
    if tags:
        fields.append("#" + ",".join(f"{key}:{val}" if val else key for key, val in tags))
    return Line(name, kind, value, rate, tags, delta), "|".join(fields)  # type: ignore[arg-type]


@given(st.lists(lines_and_texts(), min_size=1, max_size=20))
def test_generated_lines_parse_to_exactly_what_was_generated(generated: list[tuple[Line, str]]) -> None:
    packet = "\n".join(text for _, text in generated).encode()
    assert parse_packet(packet) == ([line for line, _ in generated], [])
