"""The agent's GPU readings next to nvidia-smi's, taken at the same moment, with their differences.

    .venv/bin/python bench/gpu_vs_nvidia_smi.py

On a host without nvidia-smi or without a usable NVML it prints "no GPU" and exits 0. Utilization is
an average over NVML's sample period, so a few points of difference on a busy GPU are expected.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

from agent.collectors.gpu import GpuCollector
from agent.nvml import Nvml, NvmlError, NvmlUnavailable

QUERY = "index,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"
MIB = 2**20

# (label, the agent's metric or "memory total", nvidia-smi column, factor from the agent's unit to nvidia-smi's)
FIELDS = (
    ("utilization.gpu %", "GPUUtilization", 1, 1.0),
    ("memory.used MiB", "GPUMemoryUsed", 2, 1 / MIB),
    ("memory.total MiB", "memory total", 3, 1 / MIB),
    ("temperature.gpu °C", "GPUTemperature", 4, 1.0),
    ("power.draw W", "GPUPowerDraw", 5, 1.0),
)


def parse_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def main() -> int:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        print("no GPU: nvidia-smi is not installed")
        return 0
    nvml = Nvml()
    try:
        count = nvml.device_count()
    except (NvmlUnavailable, NvmlError) as error:
        print(f"no GPU: {error}")
        return 0
    if count == 0:
        print("no GPU: NVML sees no device")
        return 0
    collector = GpuCollector(nvml)
    try:
        # nvidia-smi runs while the agent sweeps, so both read the same moment.
        started = time.perf_counter()
        process = subprocess.Popen([smi, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                                   stdout=subprocess.PIPE, text=True)
        sweep_started = time.perf_counter()
        samples = collector.collect()
        sweep_s = time.perf_counter() - sweep_started
        totals = {gpu: memory.total for gpu in range(count) if (memory := nvml.memory(gpu)) is not None}
        output, _ = process.communicate(timeout=60)
        smi_s = time.perf_counter() - started
    finally:
        collector.close()
    agent = {(dict(s.dimensions)["GPU"], s.name): s.value for s in samples if s.dimensions}
    print(f"## The agent's GPU readings and nvidia-smi's, {count} GPUs\n")
    print(f"One agent sweep (first, with discovery): {sweep_s * 1000:.1f} ms; nvidia-smi: {smi_s * 1000:.0f} ms\n")
    print("| GPU | field | agent | nvidia-smi | difference |")
    print("|---|---|---|---|---|")
    for line in output.strip().splitlines():
        columns = [column.strip() for column in line.split(",")]
        gpu = columns[0]
        for label, metric, column, factor in FIELDS:
            ours = totals.get(int(gpu)) if metric == "memory total" else agent.get((gpu, metric))
            theirs = parse_number(columns[column])
            mine = None if ours is None else ours * factor
            difference = "" if mine is None or theirs is None else f"{mine - theirs:+.2f}"
            print(f"| {gpu} | {label} | {'absent' if mine is None else f'{mine:.2f}'} | "
                  f"{'absent' if theirs is None else f'{theirs:.2f}'} | {difference} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
