"""The provision-alarms tables of docs/provisioning.md, generated from the spec, the alarm catalogue and
the example.

`python -m provisioning.docs` rewrites these generated blocks in place, wherever they stand in README.md or
docs/ (the agent's blocks are `agent.docs`'s); a test fails when a document differs from what this module
renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent import docs as agent_docs
from agent.schema import render
from provisioning.alarm_catalogue import (
    ABOVE,
    GPU,
    HOST,
    KINDS,
    MOUNT,
    THROUGHPUT_KEY,
    VARIANT,
    AlarmKind,
)
from provisioning.spec import ThroughputFloor, reference

EXAMPLE = Path(__file__).resolve().parent / "examples" / "alarms.toml"
TARGETS = {HOST: "host", GPU: "GPU", MOUNT: "mount", VARIANT: "endpoint variant"}


def _default(value: Any) -> str:
    if value == ():
        return "(none)"
    return "`" + render(value).replace("|", "\\|") + "`"


def spec_table() -> str:
    rows = ["| Key | Default | Meaning |", "|---|---|---|"]
    for path, default, doc in reference():
        per_alarm = path.startswith("alarms.<key>.")
        default_text = "per alarm: see the alarm catalogue" if per_alarm else _default(default)
        rows.append(f"| `{path}` | {default_text} | {doc} |")
    return "\n".join(rows)


def _metric(kind: AlarmKind) -> str:
    if not kind.metric:
        return "(5XX + model errors) / Invocations"
    namespace = kind.namespace or "agent namespace"
    per_core = f" ÷ {kind.per_core}" if kind.per_core else ""
    return f"`{kind.metric}`{per_core} ({namespace})"


def _row(key: str, kind: AlarmKind) -> str:
    sign = ">" if kind.comparison == ABOVE else "<"
    unit = f" {kind.unit}" if kind.unit else ""
    threshold = f"{sign} {kind.threshold:g}{unit}"
    m_of_n = f"{kind.datapoints} of {kind.evaluation_periods} × {kind.period} s"
    enabled = "yes" if kind.enabled else "opt-in"
    return (
        f"| `{key}` | {TARGETS[kind.target]} | {_metric(kind)} | {kind.statistic} | {threshold} | {m_of_n} | "
        f"{kind.severity} | {kind.missing_data} | {enabled} | {kind.note} |"
    )


def alarms_table() -> str:
    rows = [
        "| Alarm (`[alarms.<key>]`) | Per | Metric | Statistic | Threshold (default) | M of N × period | Severity "
        "| Missing data | On by default | Note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows += [_row(key, kind) for key, kind in KINDS.items()]
    floor = ThroughputFloor()
    rows.append(
        f"| `{THROUGHPUT_KEY}` | host | `hosts[].throughput_floors[].metric` (agent namespace) | {floor.statistic} "
        f"| < `minimum` | {floor.datapoints} of {floor.evaluation_periods} × {floor.period} s | {floor.severity} "
        "| breaching | per floor | set in each `[[hosts.throughput_floors]]`; no throughput means no datapoints |"
    )
    return "\n".join(rows)


def example_block() -> str:
    return "```toml\n" + EXAMPLE.read_text().rstrip("\n") + "\n```"


BLOCKS = {"provisioning-spec": spec_table, "provisioning-alarms": alarms_table, "provisioning-example": example_block}


def regenerate(text: str) -> str:
    return agent_docs.regenerate(text, BLOCKS)


def main() -> int:
    return agent_docs.rewrite_documents(BLOCKS)


if __name__ == "__main__":
    raise SystemExit(main())
