"""The README's reference tables, generated from the code so they cannot drift.

`python -m agent.docs` rewrites the generated blocks of README.md in place; a test fails when the
README differs from what this module renders.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from agent.catalogue import CATALOGUE
from agent.config import AgentConfig
from agent.schema import describe, render

README = Path(__file__).resolve().parent.parent / "README.md"


def metrics_table() -> str:
    rows = ["| Metric | Unit | Dimensions | Formula | Source |", "|---|---|---|---|---|"]
    for metric in CATALOGUE:
        dims = ", ".join(["InstanceId", *metric.dimensions] + [f"{d} (optional)" for d in metric.optional_dimensions])
        rows.append(f"| `{metric.name}` | {metric.unit} | {dims} | {metric.formula} | {metric.source} |")
    return "\n".join(rows)


def _default(value: Any) -> str:
    return "`" + render(value).replace("|", "\\|") + "`" if value != () else "(none)"


def config_table() -> str:
    rows = ["| Key | Default | Meaning |", "|---|---|---|"]
    for path, default, unit, doc in describe(AgentConfig):
        unit_text = f" ({unit})" if unit else ""
        rows.append(f"| `{path}` | {_default(default)}{unit_text} | {doc} |")
    return "\n".join(rows)


BLOCKS = {"metrics": metrics_table, "config": config_table}


def block_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- BEGIN generated: {name} -->\n)(.*?)(<!-- END generated: {name} -->)", re.DOTALL)


def regenerate(text: str) -> str:
    for name, render_block in BLOCKS.items():
        match = block_pattern(name).search(text)
        if match:
            text = text[: match.start(2)] + render_block() + "\n" + text[match.end(2) :]
    return text


def main() -> int:
    text = README.read_text()
    updated = regenerate(text)
    if updated != text:
        README.write_text(updated)
        print(f"updated {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
