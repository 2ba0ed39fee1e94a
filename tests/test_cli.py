"""The command line: dry-run output, the cost line, and a clean stop on SIGTERM in a real process."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from agent.cli import build_collectors, run_once
from agent.config import load
from agent.dryrun import PrintingClient


def test_dry_run_json_prints_exact_request_parameters_and_the_cost_line(capsys) -> None:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    client = PrintingClient(out, "json")
    slept: list[float] = []
    config = load(None)
    assert run_once(config, client, build_collectors(config), sleep=slept.append) == 0
    assert slept == [1.0]
    requests = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(requests) == 1
    assert set(requests[0]) == {"Namespace", "MetricData"}
    assert requests[0]["Namespace"] == "InfraWatch"
    names = {d["MetricName"] for d in requests[0]["MetricData"]}
    assert {"MemoryUtilization", "MemoryAvailable", "Heartbeat"} <= names  # rates need real elapsed time
    for datum in requests[0]["MetricData"]:
        assert datum["Timestamp"].endswith(":00Z")  # ISO 8601, start of the minute, UTC
        assert len(datum["Values"]) == len(datum["Counts"])
        assert {"Name": "Host", "Value": os.uname().nodename} in datum["Dimensions"]  # not on EC2
    series = len(requests[0]["MetricData"])
    monthly = series * 0.30 + 60 * 730 * 0.01 / 1000
    last_line = capsys.readouterr().err.splitlines()[-1]  # beside the JSON lines, not among them
    assert last_line == f"{series} series, 60 requests/hour, about ${monthly:.2f}/month at list prices"


def test_dry_run_table_lists_each_series() -> None:
    out = io.StringIO()
    client = PrintingClient(out, "table")
    client.put_metric_data(Namespace="InfraWatch", MetricData=[{
        "MetricName": "GPUUtilization", "Unit": "Percent", "Values": [10.0, 30.0], "Counts": [1.0, 3.0],
        "Dimensions": [{"Name": "GPU", "Value": "0"}, {"Name": "InstanceId", "Value": "i-1"}],
    }])
    assert out.getvalue().splitlines() == [
        "# PutMetricData request 1: namespace InfraWatch, 1 datums",
        "METRIC          DIMENSIONS  UNIT     N  MIN  MEAN  MAX",
        "GPUUtilization  GPU=0       Percent  4  10   25    30",
    ]


def test_sigterm_ends_the_loop_after_a_last_flush_with_exit_0(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[collect]\ninterval = 1\n[publish]\ninterval = 300\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(config), "--dry-run"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent,
    )
    assert process.stdout is not None and process.stderr is not None
    for line in process.stderr:
        if '"agent_started"' in line:
            break
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0
    # --dry-run's stdout is its requests only: the logs went to stderr.
    requests = [json.loads(line) for line in out.splitlines()]
    # publish.interval is 300 s, so the only request is the last flush made on the way out.
    assert len(requests) == 1
    assert "MemoryUtilization" in {d["MetricName"] for d in requests[0]["MetricData"]}
    events = [json.loads(line)["event"] for line in err.splitlines()]
    assert events[-2:] == ["stop_requested", "agent_stopped"]
