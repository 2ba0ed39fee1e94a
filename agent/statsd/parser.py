"""StatsD and DogStatsD lines, parsed into typed values; pure, and total over arbitrary bytes.

One line is `<name>:<value>[:<value>...]|<type>[|@<sample rate>][|#<tag>,<tag>...]` with type `c`
(counter), `g` (gauge; a leading `+` or `-` makes the value a change, not a new value), `ms` (timer), `h`
(histogram), `d` (distribution) or `s` (set: the value is a member, any text). Several values before the
type (DogStatsD protocol v1.1) are several lines that share the rest. Tags are `key:value`, `key=value`
or a bare `key`. Other DogStatsD fields (`|c:<container id>`, `|T<timestamp>`, ...) are skipped. A packet
holds any number of lines separated by `\\n` or `\\r\\n`.

What the agent publishes is checked against what CloudWatch accepts, so a line that parses can be
published: names of safe ASCII characters, finite values within ±1.17e+108. Tags are only split here: the
agent ignores most of them, so they are checked where one becomes a dimension (`agent.cloudwatch_rules`),
as Etsy StatsD, Telegraf and the Datadog agent keep a line whatever its tags hold. DogStatsD events
(`_e{`) and service checks (`_sc|`) are rejected as unsupported.
"""

from __future__ import annotations

import functools
import re
from typing import Literal, NamedTuple

from agent.cloudwatch_rules import MAX_ABS_VALUE, MAX_DIMENSION_VALUE_LENGTH

Kind = Literal["c", "g", "ms", "h", "d", "s"]
KINDS: dict[str, Kind] = {"c": "c", "g": "g", "ms": "ms", "h": "h", "d": "d", "s": "s"}

MAX_NAME_LENGTH = 246  # 255, CloudWatch's limit, less the "PerSecond" a counter's rate series adds
# Parsed fields and tag sets are remembered (here and in the collector) only for keys up to this many
# characters: a client's tags can fill a 64 KiB datagram. Longer ones are parsed every time.
MEMO_KEY_CHARS = 256
MAX_TAG_VALUE_LENGTH = MAX_DIMENSION_VALUE_LENGTH

NAME = re.compile(r"[A-Za-z0-9_.\-/]{1,%d}" % MAX_NAME_LENGTH)  # noqa: UP031 - a regex, not a message
TAG_KEY = re.compile(r"[A-Za-z0-9_.\-/]{1,255}")
# The characters and length a tag value may have: printable ASCII (space included, no control characters)
# but the `,` that separates tags, at most 1024; a dimension value must also pass CloudWatch's rules.
TAG_VALUE = re.compile(r"[ -+\--~]{0,%d}" % MAX_TAG_VALUE_LENGTH)  # noqa: UP031 - a regex, not a message
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)

Tags = tuple[tuple[str, str], ...]


class Line(NamedTuple):
    """One parsed value. A bare tag has the value ""; tags keep the order they were sent in."""

    name: str
    kind: Kind
    value: float  # 0 for a set
    sample_rate: float = 1.0
    tags: Tags = ()
    delta: bool = False  # gauges only: `value` changes the current value instead of replacing it
    member: str = ""  # sets only: the member, as sent


class Rejected(NamedTuple):
    """A line that did not parse, and why."""

    text: str
    reason: str


class LineError(ValueError):
    pass


def parse_packet(packet: bytes) -> tuple[list[Line], list[Rejected]]:
    """Every line of one datagram, in order; empty lines are skipped. Never raises.

    Bytes that are not UTF-8 become U+FFFD: such a line is refused if they are in its name or value,
    and a tag holding them never becomes a dimension (CloudWatch takes only ASCII).
    """
    try:
        text = packet.decode("ascii")
    except UnicodeDecodeError:
        text = packet.decode("utf-8", "replace")
    lines: list[Line] = []
    rejected: list[Rejected] = []
    for line in split_lines(text):
        if line:
            try:
                lines += parse_line(line)
            except LineError as error:
                rejected.append(Rejected(line, str(error)))
    return lines, rejected


def split_lines(text: str) -> list[str]:
    """The lines of a datagram: `\\n`-separated, a `\\r` before the `\\n` dropped (Telegraf, Etsy StatsD and
    the Datadog agent all take CRLF line endings)."""
    texts = text.split("\n")
    if "\r" in text:
        texts = [line[:-1] if line.endswith("\r") else line for line in texts]
    return texts


def parse_line(text: str) -> list[Line]:
    """One non-empty line; raises LineError saying why it is refused. Several values give several Lines."""
    name, colon, rest = text.partition(":")
    if not colon:
        raise LineError(
            "DogStatsD service checks are not supported" if text.startswith("_sc|") else 'no ":" between name and value'
        )
    value_text, _, suffix = rest.partition("|")
    short = len(suffix) <= MEMO_KEY_CHARS  # 4,096 remembered 64 KiB tag fields would be 500 MB
    kind, sample_rate, tags = _remembered_shape(name, suffix) if short else _shape(name, suffix)
    if kind == "s":  # any text is a member; DogStatsD does not split a set's value on ":" either
        return [Line(name, kind, 0.0, sample_rate, tags, member=value_text)]
    if ":" in value_text:
        return [_line(name, kind, part, sample_rate, tags) for part in value_text.split(":")]
    return [_line(name, kind, value_text, sample_rate, tags)]


def _line(name: str, kind: Kind, value_text: str, sample_rate: float, tags: Tags) -> Line:
    # Most values are plain integers; those skip the regex that guards float() against "nan".
    value = float(value_text) if value_text.isascii() and value_text.isdigit() else _number(value_text, "value")
    # Too small a magnitude parses: the aggregator drops it, counted as out_of_range.
    if not abs(value) <= MAX_ABS_VALUE:
        raise LineError(f"value must be finite and within ±{MAX_ABS_VALUE:g}")
    return Line(name, kind, value, sample_rate, tags, kind == "g" and value_text[0] in "+-")


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
        raise LineError(f"type must be one of c, g, ms, h, d, s, got {kind_text[:20]!r}")
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


_remembered_shape = functools.lru_cache(maxsize=4096)(_shape)


def _number(text: str, what: str) -> float:
    if not _NUMBER.fullmatch(text):
        raise LineError(f"{what} must be a decimal number, got {text[:40]!r}")
    return float(text)


def _tags(text: str) -> Tags:
    """`key:value`, `key=value` (node-statsd, Graphite) or a bare `key`; empty tags (`#`, a trailing or
    doubled comma) are skipped."""
    tags = []
    for tag in text.split(","):
        if tag:
            key, colon, value = tag.partition(":")
            if not colon:
                key, _, value = tag.partition("=")
            tags.append((key, value))
    return tuple(tags)


def escaped(text: str) -> str:
    """Text a client sent, safe to log on a terminal: control characters (an escape sequence could move
    the cursor or rewrite the operator's screen), backslashes and non-ASCII characters written as escapes."""
    return text.encode("unicode_escape").decode("ascii")
