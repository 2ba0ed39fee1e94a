"""StatsD and DogStatsD lines, parsed into typed values; pure, and total over arbitrary bytes.

One line is `<name>:<value>|<type>[|@<sample rate>][|#<tag>,<tag>...]` with type `c` (counter), `g`
(gauge; a leading `+` or `-` makes the value a change, not a new value), `ms` (timer), `h` (histogram) or
`d` (distribution). Tags are `key:value` or a bare `key`. Other DogStatsD fields (`|c:<container id>`,
`|T<timestamp>`, ...) are skipped. A packet holds any number of lines separated by `\\n`.

Everything is checked against what CloudWatch accepts, so a line that parses can be published: ASCII
only, names of safe characters, finite values within ±1.17e+108. Sets (`|s`), DogStatsD events (`_e{`) and
service checks (`_sc|`), and several values in one line (`name:1:2|ms`) are rejected as unsupported.
"""

from __future__ import annotations

import functools
import re
from typing import Literal, NamedTuple

from agent.cloudwatch_rules import MAX_ABS_VALUE, MAX_DIMENSION_VALUE_LENGTH

Kind = Literal["c", "g", "ms", "h", "d"]
KINDS: dict[str, Kind] = {"c": "c", "g": "g", "ms": "ms", "h": "h", "d": "d"}

MAX_NAME_LENGTH = 246  # 255, CloudWatch's limit, less the "PerSecond" a counter's rate series adds
MAX_TAG_VALUE_LENGTH = MAX_DIMENSION_VALUE_LENGTH

NAME = re.compile(r"[A-Za-z0-9_.\-/]{1,%d}" % MAX_NAME_LENGTH)  # noqa: UP031 - a regex, not a message
TAG_KEY = re.compile(r"[A-Za-z0-9_.\-/]{1,255}")
TAG_VALUE = re.compile(r"[!-+\--~]{0,%d}" % MAX_TAG_VALUE_LENGTH)  # noqa: UP031 - printable ASCII but `,`
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

Tags = tuple[tuple[str, str], ...]


class Line(NamedTuple):
    """One parsed line. A bare tag has the value ""; tags keep the order they were sent in."""

    name: str
    kind: Kind
    value: float
    sample_rate: float = 1.0
    tags: Tags = ()
    delta: bool = False  # gauges only: `value` changes the current value instead of replacing it


class Rejected(NamedTuple):
    """A line that did not parse, and why."""

    text: str
    reason: str


class LineError(ValueError):
    pass


def parse_packet(packet: bytes) -> tuple[list[Line], list[Rejected]]:
    """Every line of one datagram, in order; empty lines are skipped. Never raises."""
    try:
        texts = packet.decode("ascii").split("\n")
    except UnicodeDecodeError:
        lines: list[Line] = []
        rejected: list[Rejected] = []
        for raw in packet.split(b"\n"):
            if raw.isascii():
                parsed, refused = _parse_lines([raw.decode("ascii")])
                lines += parsed
                rejected += refused
            else:
                rejected.append(Rejected(raw.decode("ascii", "backslashreplace"), "not ASCII"))
        return lines, rejected
    return _parse_lines(texts)


def _parse_lines(texts: list[str]) -> tuple[list[Line], list[Rejected]]:
    lines: list[Line] = []
    rejected: list[Rejected] = []
    for text in texts:
        if text:
            try:
                lines.append(parse_line(text))
            except LineError as error:
                rejected.append(Rejected(text, str(error)))
    return lines, rejected


def parse_line(text: str) -> Line:
    """One non-empty line of ASCII text; raises LineError saying why it is refused."""
    name, colon, rest = text.partition(":")
    if not colon:
        raise LineError(
            "DogStatsD service checks are not supported" if text.startswith("_sc|") else 'no ":" between name and value'
        )
    value_text, _, suffix = rest.partition("|")
    kind, sample_rate, tags = _shape(name, suffix)
    # Most values are plain integers; those skip the regex that guards float() against "nan".
    value = float(value_text) if value_text.isdigit() else _number(value_text, "value")
    # Too small a magnitude parses: the aggregator drops it, counted as out_of_range.
    if not abs(value) <= MAX_ABS_VALUE:
        raise LineError(f"value must be finite and within ±{MAX_ABS_VALUE:g}")
    return Line(name, kind, value, sample_rate, tags, kind == "g" and value_text[0] in "+-")


@functools.lru_cache(maxsize=4096)
def _shape(name: str, suffix: str) -> tuple[Kind, float, Tags]:
    """(type, sample rate, tags) of a line, from its name and everything after the value.

    A job sends the same few names with the same tags over and over, with only the value changing;
    remembering their parse halves the cost of a line.
    """
    if not NAME.fullmatch(name):
        if name.startswith("_e{"):
            raise LineError("DogStatsD events are not supported")
        raise LineError(f"name must be 1..{MAX_NAME_LENGTH} of A-Z a-z 0-9 _ . - /")
    kind_text, _, fields = suffix.partition("|")
    kind = KINDS.get(kind_text)
    if kind is None:
        raise LineError(f"type must be one of c, g, ms, h, d, got {kind_text[:20]!r}")
    sample_rate = 1.0
    tags: Tags = ()
    seen_rate = seen_tags = False
    for field in fields.split("|") if fields else ():
        if field.startswith("@"):
            if seen_rate:
                raise LineError("more than one sample rate")
            seen_rate = True
            sample_rate = _number(field[1:], "sample rate")
            if not 0 < sample_rate <= 1:
                raise LineError("sample rate must be greater than 0 and at most 1")
        elif field.startswith("#"):
            if seen_tags:
                raise LineError("more than one tag field")
            seen_tags = True
            tags = _tags(field[1:])
        elif not field:
            raise LineError("empty field")
    return kind, sample_rate, tags


def _number(text: str, what: str) -> float:
    if not _NUMBER.fullmatch(text):
        raise LineError(f"{what} must be a decimal number, got {text[:40]!r}")
    return float(text)


def _tags(text: str) -> Tags:
    tags = []
    for tag in text.split(","):
        key, _, value = tag.partition(":")
        if not TAG_KEY.fullmatch(key) or not TAG_VALUE.fullmatch(value):
            raise LineError(
                f"tag must be key:value with a key of 1..255 of A-Z a-z 0-9 _ . - / "
                f"and a value of at most {MAX_TAG_VALUE_LENGTH} printable ASCII characters, got {tag[:60]!r}"
            )
        tags.append((key, value))
    return tuple(tags)
