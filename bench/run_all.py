"""`make bench` (for maintainers): runs every bench script, writes bench/RESULTS.md and the generated
block of docs/performance.md, and says so.

Each script prints its own markdown section; this runner only collects them, with the command that
made each one, so every number in docs/performance.md can be reproduced.

    .venv/bin/python bench/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PERFORMANCE = ROOT / "docs" / "performance.md"
BLOCK = re.compile(r"(<!-- BEGIN generated: performance -->\n)(.*?)(<!-- END generated: performance -->)", re.DOTALL)

# (script, full-run arguments, --quick arguments)
SCRIPTS: list[tuple[str, list[str], list[str]]] = [
    ("agent_overhead.py", ["--seconds", "150"], ["--seconds", "30"]),
    ("publish_efficiency.py", [], []),
    ("pack_cpu.py", [], ["--runs", "5"]),
    ("gpu_sweep.py", [], []),
    ("gpu_vs_nvidia_smi.py", [], []),
    ("storage_mounts.py", [], ["--cycles", "50"]),
    ("provision_500.py", ["--repeat", "3"], ["--repeat", "1"]),
    ("fleet_scale.py", [], ["--hosts", "10", "100"]),
    ("cost_estimate.py", [], []),
    ("outage.py", ["--runs", "3"], ["--runs", "1"]),
    ("spool_overhead.py", ["--seconds", "300", "--repeats", "7"], ["--seconds", "100", "--repeats", "3"]),
    ("systemd_security.py", [], []),
    ("statsd_ingest.py", [], ["--repeats", "1"]),
    ("statsd_memory.py", [], ["--seconds", "20"]),
    ("meter_add.py", [], ["--runs", "3"]),
    ("prometheus_scrape.py", ["--seconds", "60", "--runs", "3"], ["--seconds", "60"]),
    ("prometheus_scrape.py", ["--seconds", "60", "--runs", "3", "--scrape-every", "15", "--component-seconds", "0"],
     ["--seconds", "60", "--scrape-every", "15", "--component-seconds", "0"]),
    ("prometheus_scrape.py", ["--seconds", "60", "--runs", "3", "--series", "0", "--component-seconds", "0"],
     ["--seconds", "60", "--series", "0", "--component-seconds", "0"]),
    ("report_scale.py", ["--hosts", "10,100,1000"], ["--hosts", "10"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a smoke test of the benches")
    args = parser.parse_args()
    sections = [f"Measured {dt.date.today().isoformat()} on {os.cpu_count()} cores "
                f"({'quick run' if args.quick else 'full run'}); medians where a bench repeats.\n"]
    failed = []
    for script, full, quick in SCRIPTS:
        arguments = quick if args.quick else full
        command = " ".join(["bench/" + script, *arguments])
        print(f"running {command}", file=sys.stderr, flush=True)
        result = subprocess.run([sys.executable, str(BENCH / script), *arguments], cwd=ROOT,
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            failed.append(script)
            sections.append(f"## {script}: failed (exit {result.returncode})\n\n```\n{result.stderr[-2000:]}\n```\n")
            continue
        body = result.stdout.strip()
        sections.append(f"{body}\n\n_Command: `.venv/bin/python {command}`_\n")
    results = "\n".join(sections)
    (BENCH / "RESULTS.md").write_text("# Benchmark results\n\n" + results)
    text = PERFORMANCE.read_text()
    PERFORMANCE.write_text(BLOCK.sub(lambda m: m.group(1) + results + m.group(3), text))
    print("wrote bench/RESULTS.md and the generated block of docs/performance.md: review them with "
          "`git diff`, commit them if the numbers are the ones to publish", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
