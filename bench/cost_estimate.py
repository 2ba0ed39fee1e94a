"""Estimated monthly CloudWatch cost of one 8-GPU host: infrawatch's default config next to the
CloudWatch agent's default GPU config.

infrawatch's figures come from the real command, `infrawatch-agent --dry-run --once --fake-gpus 8`
(this machine's disks and interfaces, eight simulated H100s), whose last line counts the series
and requests. The CloudWatch agent's are counted from its documented defaults (assumptions listed
in the output). Prices: $0.30 per metric-month, $0.01 per 1,000 PutMetricData requests.

    .venv/bin/python bench/cost_estimate.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from agent.dryrun import HOURS_PER_MONTH, PRICE_PER_1000_REQUESTS, PRICE_PER_METRIC_MONTH

ROOT = Path(__file__).resolve().parent.parent
GPUS = 8
# The CloudWatch agent's nvidia_gpu plugin with no `measurement` list publishes every field it knows.
CWAGENT_GPU_FIELDS = 18
# Its wizard's "standard" host set: cpu usage_idle/iowait/user/system (cpu-total), disk used_percent and
# inodes_free per mount, diskio io_time per device, mem used_percent, swap used_percent.
CWAGENT_HOST_PER_HOST, CWAGENT_PER_MOUNT, CWAGENT_PER_DEVICE = 6, 2, 1
CWAGENT_REQUESTS_PER_HOUR = 60  # one flush a minute, every datum of it in one request


def monthly(series: int, requests_per_hour: float) -> float:
    return series * PRICE_PER_METRIC_MONTH + requests_per_hour * HOURS_PER_MONTH * PRICE_PER_1000_REQUESTS / 1000


# A leaner GPU set: what the provisioner alarms on, plus power and thermal throttling; the rest excluded.
LEAN_EXCLUDE = (
    "GPUPCIe*", "GPUNVLinkErrors", "GPUSMClock", "GPUPowerLimit", "GPUPowerUtilization", "GPUEnergyConsumed",
    "GPUMemoryControllerUtilization", "GPUMemoryUsed", "GPUMemoryTotal", "GPUMemoryTemperature",
    "GPUThrottlePowerCap", "GPUThrottleHardwareSlowdown", "GPURemappedRowsPending", "GPULastXid",
)


def run_agent(config: Path | None) -> tuple[list[str], int, int, float]:
    """The agent's dry-run requests, and the series, requests/hour and $/month of its cost line (the last
    line on stderr: stdout holds only the JSON requests)."""
    command = [sys.executable, "-m", "agent", "--dry-run", "--once", "--fake-gpus", str(GPUS)]
    result = subprocess.run([*command, *(["--config", str(config)] if config else [])],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    cost = result.stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"(\d+) series, (\d+) requests/hour, about \$([\d.]+)/month at list prices", cost)
    if match is None:
        raise SystemExit(f"unexpected cost line: {cost!r}")
    return result.stdout.strip().splitlines(), int(match[1]), int(match[2]), float(match[3])


def main() -> int:
    output, series, requests, dollars = run_agent(None)
    with tempfile.TemporaryDirectory() as tmp:
        lean = Path(tmp) / "lean.toml"
        lean.write_text("exclude_metrics = [" + ", ".join(f'"{name}"' for name in LEAN_EXCLUDE) + "]\n")
        _, lean_series, lean_requests, lean_dollars = run_agent(lean)
    requests_made = [json.loads(line) for line in output]
    dimension_values = [(d["Name"], d["Value"]) for request in requests_made for datum in request["MetricData"]
                        for d in datum["Dimensions"]]
    mounts = len({value for name, value in dimension_values if name == "MountPath"})
    devices = len({value for name, value in dimension_values if name == "Device"})
    cw_series = (GPUS * CWAGENT_GPU_FIELDS + CWAGENT_HOST_PER_HOST + mounts * CWAGENT_PER_MOUNT
                 + devices * CWAGENT_PER_DEVICE)
    cw_dollars = monthly(cw_series, CWAGENT_REQUESTS_PER_HOUR)
    print(f"## Estimated monthly CloudWatch cost, one {GPUS}-GPU host")
    print()
    print("| Agent | Series (custom metrics) | Requests/hour | $/month at list prices |")
    print("|---|---|---|---|")
    print(f"| infrawatch, default config | {series} | {requests} | ${dollars:.2f} |")
    print(f"| infrawatch, `exclude_metrics` lean GPU set (below) | {lean_series} | {lean_requests} | "
          f"${lean_dollars:.2f} |")
    print(f"| CloudWatch agent, default GPU config | {cw_series} | {CWAGENT_REQUESTS_PER_HOUR} | ${cw_dollars:.2f} |")
    print()
    print(f"This machine: {mounts} mount(s) and {devices} block device(s) after the default ignore lists. "
          f"The CloudWatch agent column assumes its {CWAGENT_GPU_FIELDS} nvidia_gpu fields per GPU and its "
          "wizard's standard host set; it publishes no GPU health (Xid, ECC, remapped rows, throttling) "
          "and no host-level GPU roll-up, which are most of infrawatch's extra series. The lean row excludes "
          f"{', '.join(LEAN_EXCLUDE)}: it keeps utilization, memory, temperature, power draw, thermal "
          "throttling, health, Xid, ECC and failed row remaps per GPU.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
