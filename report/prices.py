"""On-demand prices per instance type and region, from a CSV shipped with the package or given by --prices.

A row: region, instance_type, gpus, usd_per_hour, as_of (YYYY-MM-DD), source. A GPU-hour costs
usd_per_hour / gpus. A type with no row has no price: the report says so instead of guessing one.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from agent.schema import ConfigError

COLUMNS = ("region", "instance_type", "gpus", "usd_per_hour", "as_of", "source")


@dataclass(frozen=True)
class Price:
    region: str
    instance_type: str
    gpus: int
    usd_per_hour: float
    as_of: str
    source: str

    @property
    def per_gpu_hour(self) -> float:
        return self.usd_per_hour / self.gpus


Prices = dict[tuple[str, str], Price]


def shipped() -> str:
    return resources.files("report").joinpath("prices.csv").read_text()


def load(path: Path | None = None) -> Prices:
    if path is None:
        return parse(shipped(), "prices.csv")
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError([f"--prices: cannot read {path}: {error.strerror or error}"]) from error
    return parse(text, str(path))


def parse(text: str, name: str) -> Prices:
    """Every row checked; each bad value named as `file:line: column: what is allowed, got value`."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        got = ",".join(reader.fieldnames or [])
        raise ConfigError([f"{name}:1: the header must be {','.join(COLUMNS)}, got {got}"])
    prices: Prices = {}
    problems: list[str] = []
    for line, row in enumerate(reader, start=2):
        where = f"{name}:{line}"
        if None in row or any(row[column] is None for column in COLUMNS):
            problems.append(f"{where}: must have {len(COLUMNS)} columns")
            continue
        gpus, price = _int(row["gpus"]), _float(row["usd_per_hour"])
        if gpus is None or gpus < 1:
            problems.append(f'{where}: gpus: must be a whole number of at least 1, got "{row["gpus"]}"')
        if price is None or price <= 0:
            problems.append(f'{where}: usd_per_hour: must be a number above 0, got "{row["usd_per_hour"]}"')
        if not _date(row["as_of"]):
            problems.append(f'{where}: as_of: must be a date like 2024-06-01, got "{row["as_of"]}"')
        if not row["region"] or not row["instance_type"] or not row["source"]:
            problems.append(f"{where}: region, instance_type and source must not be empty")
        key = (row["region"], row["instance_type"])
        if key in prices:
            problems.append(f"{where}: repeats {row['instance_type']} in {row['region']}")
        if gpus and gpus >= 1 and price and price > 0:
            prices[key] = Price(row["region"], row["instance_type"], gpus, price, row["as_of"], row["source"])
    if problems:
        raise ConfigError(problems)
    return prices


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def _date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True
