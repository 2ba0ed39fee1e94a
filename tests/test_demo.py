"""`make demo` end to end, shortened: real processes, a moto server, and nothing left running after it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def start_demo(seconds: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "demo.run", "--seconds", str(seconds)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_demo_publishes_provisions_and_receives_the_test_notification() -> None:
    demo = start_demo(12)
    output, _ = demo.communicate(timeout=180)
    assert demo.returncode == 0, output[-3000:]
    lines = output.splitlines()
    series = {line.split()[0] for line in lines if line[:1].isupper() and "  " in line}
    assert {"CPUUtilization", "GPUUtilization", "HostGPUUtilization", "SamplesProcessed",
            "SamplesProcessedPerSecond", "StepTime", "Heartbeat"} <= series
    assert any(line.startswith("demo/host/") and "GPUHealthy Minimum LessThanThreshold 1.0" in line for line in lines)
    assert any(line.startswith("demo/sagemaker/demo-endpoint/AllTraffic/endpoint_latency_p99") for line in lines)
    assert ('demo/gpus/gpu_temperature_high: SELECT MAX(GPUTemperature) FROM SCHEMA("InfraWatch", GPU, Host) '
            "GROUP BY Host, GPU ORDER BY MAX() DESC GreaterThanThreshold 85.0 for 3 of 5 × 60 s") in lines
    assert "demo-us-east-1-fleet" in output
    assert "infrawatch test notification (demo, critical)" in output
    # The report over what the demo published: its tables, then the page's path.
    report = output.split("=== infrawatch-report")[1].splitlines()
    assert "Availability ((1 − downtime / total) × 100)" in report
    assert any(line.startswith("demo/host/") and "/heartbeat_missing " in line for line in report)  # backtested
    page = lines[-1].removeprefix("the report's charts: ")
    assert page == str(ROOT / "demo-report.html") and "<svg" in Path(page).read_text()
    endpoint = next(index for index, line in enumerate(lines) if "the agent's Prometheus endpoint" in line)
    shown = lines[endpoint + 1:endpoint + 4]
    assert [line.split("{")[0].split()[0] for line in shown] == [
        "infrawatch_cpu_utilization_percent", "infrawatch_gpu_utilization_percent",
        "infrawatch_job_samples_processed_total"]


def test_ctrl_c_stops_every_process_the_demo_started() -> None:
    demo = start_demo(120)
    assert demo.stdout is not None
    for line in demo.stdout:
        if "a training job reports" in line:
            break
    deadline = time.monotonic() + 30
    children: list[psutil.Process] = []
    while len(children) < 2 and time.monotonic() < deadline:  # the agent and the job
        children = psutil.Process(demo.pid).children(recursive=True)
        time.sleep(0.1)
    assert len(children) >= 2
    demo.send_signal(signal.SIGINT)
    demo.communicate(timeout=60)
    assert demo.returncode == 130
    assert [child.pid for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE] == []
