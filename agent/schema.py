"""Frozen-dataclass configuration read from TOML, validated once, with errors that name the key path.

A section is a frozen dataclass whose fields are declared with `setting(...)`; `build` walks the TOML
table against it and collects every problem (wrong type, out of range, unknown key with a "did you
mean") before anything runs. Both the agent's config and the provisioner's spec are built this way.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import json
import math
import os
import re
import stat
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Ubuntu 22.04's Python 3.10
    import tomli as tomllib

T = TypeVar("T")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # TOML keys written without quotes
Check = Callable[[Any], "str | None"]


class ConfigError(Exception):
    """Every problem found in one file, one line each: `key.path: what is allowed, got value`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def setting(
    default: Any,
    doc: str,
    *,
    range: tuple[float, float] | None = None,
    unit: str = "",
    choices: tuple[Any, ...] | None = None,
    check: Check | None = None,
) -> Any:
    """Declare a config key: its default, what it means, and what values it allows."""
    meta = {"doc": doc, "range": range, "unit": unit, "choices": choices, "check": check}
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults so the config stays frozen")
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type[T], doc: str) -> Any:
    """Declare a nested table whose keys are the fields of the frozen dataclass `cls`."""
    return dataclasses.field(default_factory=cls, metadata={"doc": doc, "section": True})


MAX_FILE_BYTES = 1024 * 1024  # a config or spec is written by hand: far below this, and bounded so a
# mistaken path (a log, /dev/zero) cannot exhaust memory


def load_toml(path: Path, limit: int = MAX_FILE_BYTES) -> dict[str, Any]:
    """The TOML document in the regular file `path`, read up to `limit` bytes; raises ConfigError with one
    line naming the file and what is wrong with it. A UTF-8 byte order mark is accepted (Windows editors
    write one)."""
    data = _read_bounded(path, limit)
    try:
        text = data.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ConfigError([f"{path}: not UTF-8 text (TOML files are UTF-8): byte 0x{data[error.start]:02X} at "
                           f"line {line}, column {column}"]) from error
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: invalid TOML: {error}"]) from error


def _read_bounded(path: Path, limit: int) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer, forever.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from error
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
            raise ConfigError([f"{path}: cannot read: {kind}, not a regular file"])
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from error
    if len(data) > limit:
        raise ConfigError([f"{path}: cannot read: larger than {limit} bytes"])
    return data


def render(value: Any) -> str:
    """A value as it would be written in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # TOML's escapes: a newline in a value never splits the line
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(render(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(key)} = {render(item)}" for key, item in value.items()) + "}"
    return repr(value)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else render(key)


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def unknown_key(path: str, key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f', did you mean "{close[0]}"?' if close else f"; known keys: {', '.join(sorted(known))}"
    return f"{path}: unknown key{hint}"


def build(cls: type[T], data: Mapping[str, Any], problems: list[str], prefix: str = "") -> T:
    """Build `cls` from a TOML table, appending one line per problem; bad keys keep their default."""
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            problems.append(unknown_key(join(prefix, key), key, list(fields)))
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in data:
            continue
        path = join(prefix, name)
        raw = data[name]
        if field.metadata.get("section"):
            if not isinstance(raw, dict):
                problems.append(f"{path}: must be a table, got {render(raw)}")
                continue
            values[name] = build(hints[name], raw, problems, path)
            continue
        converted, problem = convert(path, raw, hints[name], field.metadata)
        if problem:
            problems.append(problem)
        else:
            values[name] = converted
    return cls(**values)


def convert(path: str, raw: Any, hint: Any, meta: Mapping[str, Any]) -> tuple[Any, str | None]:
    choices = meta.get("choices")
    if choices is not None:
        # `True in (1,)` is true in Python; compare types too so `1` is not taken for `true`.
        if not any(type(raw) is type(choice) and raw == choice for choice in choices):
            allowed = " or ".join(render(choice) for choice in choices)
            return None, f"{path}: must be {allowed}, got {render(raw)}"
        return raw, None
    value, problem = convert_type(path, raw, hint)
    if problem:
        return None, problem
    bounds = meta.get("range")
    if bounds is not None and not (bounds[0] <= value <= bounds[1]):
        unit = f" {meta['unit']}" if meta.get("unit") else ""
        low, high = (int(b) if float(b).is_integer() else b for b in bounds)
        return None, f"{path}: must be {low}..{high}{unit}, got {render(raw)}"
    check = meta.get("check")
    if check is not None:
        message = check(value)
        if message:
            return None, f"{path}: {message}, got {render(raw)}"
    return value, None


def convert_type(path: str, raw: Any, hint: Any) -> tuple[Any, str | None]:
    if hint is bool:
        return (raw, None) if isinstance(raw, bool) else (None, f"{path}: must be true or false, got {render(raw)}")
    if hint is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw, None
        return None, f"{path}: must be an integer, got {render(raw)}"
    if hint is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw):
            return float(raw), None
        return None, f"{path}: must be a number, got {render(raw)}"
    if hint is str:
        return (raw, None) if isinstance(raw, str) else (None, f"{path}: must be a string, got {render(raw)}")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is tuple and args == (str, Ellipsis):
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            return tuple(raw), None
        return None, f"{path}: must be a list of strings, got {render(raw)}"
    if origin is tuple and args == (tuple[str, str], Ellipsis):
        if isinstance(raw, dict) and all(isinstance(item, str) for item in raw.values()):
            return tuple(sorted(raw.items())), None
        return None, f"{path}: must be a table of string values, got {render(raw)}"
    if origin is tuple and args == (tuple[str, ...], Ellipsis):
        if isinstance(raw, list) and all(
            isinstance(group, list) and all(isinstance(item, str) for item in group) for group in raw
        ):
            return tuple(tuple(group) for group in raw), None
        return None, f"{path}: must be a list of lists of strings, got {render(raw)}"
    if isinstance(hint, types.UnionType) or origin is typing.Union:
        raise TypeError(f"{path}: declare union-typed settings with choices=")
    raise TypeError(f"{path}: unsupported setting type {hint!r}")


def describe(cls: type, prefix: str = "") -> list[tuple[str, Any, str, str]]:
    """(key path, default, unit, doc) for every setting, for the README's configuration reference."""
    rows: list[tuple[str, Any, str, str]] = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        path = join(prefix, field.name)
        if field.metadata.get("section"):
            rows.extend(describe(hints[field.name], path))
        else:
            rows.append((path, field.default, field.metadata.get("unit", ""), field.metadata.get("doc", "")))
    return rows
