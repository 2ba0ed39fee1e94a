"""systemd's exposure score of our unit next to the Amazon CloudWatch agent's, scored the same way.

    .venv/bin/python bench/systemd_security.py

The CloudWatch agent's unit is bench/reference/amazon-cloudwatch-agent.service, a verbatim copy of
packaging/dependencies/amazon-cloudwatch-agent.service in aws/amazon-cloudwatch-agent (commit
a8c030fe10a20b8abbdd442975f598e9be5eb3b9). Lower is better: 0 is fully locked down, 10 is unprotected.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNITS = [
    ("infrawatch-agent (systemd/infrawatch-agent.service)", ROOT / "systemd" / "infrawatch-agent.service"),
    ("Amazon CloudWatch agent (its packaged unit)", ROOT / "bench" / "reference" / "amazon-cloudwatch-agent.service"),
]


def exposure(analyze: str, unit: Path) -> tuple[float, str, int]:
    """(overall exposure, systemd's verdict, settings flagged ✗) from `systemd-analyze security --offline`."""
    result = subprocess.run([analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True,
                            check=True)
    overall = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", result.stdout)
    if overall is None:
        raise RuntimeError(result.stdout + result.stderr)
    flagged = sum(1 for line in result.stdout.splitlines() if line.startswith("✗"))
    return float(overall.group(1)), overall.group(2), flagged


def main() -> int:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print("systemd-analyze is not installed here: no score", file=sys.stderr)
        return 1
    version = subprocess.run([analyze, "--version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    print(f"## systemd security exposure ({version})\n")
    print("| Unit | Exposure | Verdict | Settings flagged |")
    print("|---|---|---|---|")
    for name, unit in UNITS:
        score, verdict, flagged = exposure(analyze, unit)
        print(f"| {name} | {score} | {verdict} | {flagged} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
