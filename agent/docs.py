"""The reference tables in README.md and docs/, generated from the code so they cannot drift.

`python -m agent.docs` rewrites the generated blocks of every document in place, wherever a block's
markers stand; a test fails when a document differs from what this module renders.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.catalogue import CATALOGUE, Metric
from agent.config import AgentConfig
from agent.cwagent import CWA_METRICS
from agent.naming import CWAGENT, NATIVE, profile
from agent.prometheus import exposition
from agent.schema import describe, render

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def documents() -> list[Path]:
    """README.md and every page under docs/: the files whose generated blocks are kept current."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def _prometheus_name(metric: Metric) -> str:
    exposed = exposition(metric.name, metric.unit)
    if exposed is None:
        return "— (`up`)"
    return ", ".join(f"`{name}`" for name in exposed.sample_names)


def metrics_table() -> str:
    rows = ["| Metric | Unit | Dimensions | Formula | Source | Prometheus |", "|---|---|---|---|---|---|"]
    for metric in CATALOGUE:
        dims = ", ".join(["InstanceId", *metric.dimensions] + [f"{d} (optional)" for d in metric.optional_dimensions])
        formula = metric.formula if NATIVE.publishes(metric.name) else f"{metric.formula} (cwagent only)"
        if CWAGENT.publishes(metric.name) and (cwagent_formula := CWAGENT.alias(metric.name).formula):
            formula = f"native: {formula}; cwagent: {cwagent_formula}"
        rows.append(f"| `{metric.name}` | {metric.unit} | {dims} | {formula} | {metric.source} | "
                    f"{_prometheus_name(metric)} |")
    return "\n".join(rows)


def _default(value: Any) -> str:
    return "`" + render(value).replace("|", "\\|") + "`" if value != () else "(none)"


def config_table() -> str:
    rows = ["| Key | Default | Meaning |", "|---|---|---|"]
    for path, default, unit, doc in describe(AgentConfig):
        unit_text = f" ({unit})" if unit else ""
        rows.append(f"| `{path}` | {_default(default)}{unit_text} | {doc} |")
    return "\n".join(rows)


def naming_table() -> str:
    """Each catalogue entry as the cwagent profile publishes it; `{Name}` stands for a native value."""
    cwagent = profile("cwagent")
    rows = ["| Catalogue metric | cwagent name | Unit | Dimensions | Value |", "|---|---|---|---|---|"]
    for metric in CATALOGUE:
        alias = cwagent.alias(metric.name)
        # Its optional dimensions are those the profile sets (GPUUUID is refused under cwagent).
        optional = tuple(name for name in metric.optional_dimensions if name in cwagent.device_dimensions)
        own = metric.dimensions + optional
        dims = cwagent.dimensions(metric.name, {name: "{" + name + "}" for name in own})
        shown = ", ".join(f"{name}={value}" for name, value in dims.items()) or "—"
        value = "× collect.interval (per-interval delta)" if alias.per_interval else (
            f"÷ {round(1 / alias.scale):,} (MiB)" if alias.scale != 1.0 else "as is")
        rows.append(f"| `{metric.name}` | `{alias.name or metric.name}` | {alias.unit or metric.unit} | "
                    f"{shown} | {value} |")
    return "\n".join(rows)


def cwagent_table() -> str:
    """Every CloudWatch agent metric of its presets and nvidia_gpu block, and what infrawatch publishes for it."""
    rows = ["| CloudWatch agent metric | Unit | Dimensions | Presets | infrawatch (cwagent) |", "|---|---|---|---|---|"]
    for metric in CWA_METRICS:
        published = ", ".join(f"`{name}`" for name in metric.published_by)
        ours = published or f"not published: {metric.omitted}"
        presets = ", ".join(metric.presets) or "(none; published on request)"
        rows.append(f"| `{metric.name}` | {metric.unit} | {', '.join(metric.dimensions) or '—'} | {presets} | "
                    f"{ours} |")
    return "\n".join(rows)


BLOCKS = {"metrics": metrics_table, "config": config_table, "naming": naming_table, "cwagent-metrics": cwagent_table}


def block_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- BEGIN generated: {name} -->\n)(.*?)(<!-- END generated: {name} -->)", re.DOTALL)


def regenerate(text: str, blocks: Mapping[str, Callable[[], str]] = BLOCKS) -> str:
    """`text` with each generated block replaced by what its renderer says now."""
    for name, render_block in blocks.items():
        match = block_pattern(name).search(text)
        if match:
            text = text[: match.start(2)] + render_block() + "\n" + text[match.end(2) :]
    return text


def rewrite_documents(blocks: Mapping[str, Callable[[], str]]) -> int:
    for document in documents():
        text = document.read_text()
        updated = regenerate(text, blocks)
        if updated != text:
            document.write_text(updated)
            print(f"updated {document.relative_to(ROOT)}", file=sys.stderr)
    return 0


def main() -> int:
    return rewrite_documents(BLOCKS)


if __name__ == "__main__":
    raise SystemExit(main())
