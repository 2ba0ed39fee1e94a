"""Agent overhead at collect.interval = 1 s: CPU time as % of one core and peak RSS.

Runs the real `infrawatch-agent` in a subprocess with the dry-run sink (requests are printed to
/dev/null instead of sent) on this machine's real host metrics, and reads its CPU time and peak RSS
(VmHWM) from /proc. Start-up (imports) is excluded from the CPU figure: CPU is measured between
`--warmup` seconds and the end.

    .venv/bin/python bench/agent_overhead.py --seconds 150
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def measure(seconds: float, warmup: float, config_text: str, extra_args: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "agent.toml"
        config.write_text(config_text)
        process = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(config), "--dry-run", *extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )
        proc = psutil.Process(process.pid)
        time.sleep(warmup)
        start_cpu = sum(proc.cpu_times()[:2])
        start = time.monotonic()
        time.sleep(seconds)
        cpu = sum(proc.cpu_times()[:2]) - start_cpu
        wall = time.monotonic() - start
        rss = peak_rss_mb(process.pid)
        process.terminate()
        process.wait(timeout=30)
    return {"cpu_percent": cpu / wall * 100, "cpu_seconds": cpu, "wall_seconds": wall, "peak_rss_mb": rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args()
    config = "[collect]\ninterval = 1\n[publish]\ninterval = 60\n"
    result = measure(args.seconds, args.warmup, config, [])
    wall, cores = result["wall_seconds"], os.cpu_count()
    print(f"## Agent overhead (collect.interval = 1 s, {wall:.0f} s measured, {cores} cores)")
    print()
    print("| Measure | infrawatch | target | CloudWatch agent (AWS stress bound) |")
    print("|---|---|---|---|")
    print(f"| CPU, % of one core | {result['cpu_percent']:.3f} % ({result['cpu_seconds']:.2f} CPU s) "
          f"| ≤ 0.5 % | 16–35 % |")
    print(f"| Peak RSS | {result['peak_rss_mb']:.1f} MB | ≤ 60 MB | ~110 MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
