"""The agent as systemd runs it, in a real process: READY, SIGHUP with an invalid then a valid file, SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.fakes.systemd import NotifySocket

REPO = Path(__file__).parent.parent
def agent_toml(namespace: str) -> str:
    return f'namespace = "{namespace}"\n[collect]\ninterval = 1\n[publish]\ninterval = 300\n[ec2]\nidentity = false\n'


class AgentProcess:
    """`infrawatch-agent --dry-run` with a notify socket; stdout is read on a thread, line by line."""

    def __init__(self, config: Path, notify: NotifySocket, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(config), "--dry-run"],
            stdout=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "NOTIFY_SOCKET": notify.address, **env},
        )
        self.lines: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(json.loads(line) if line.startswith("{") else {"raw": line})

    def wait_for_event(self, event: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Every line up to and including the first log line with this event."""
        seen = []
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {event} within {timeout} s; exit code {self.process.poll()}; "
                                     f"last lines {self.lines[-5:]}") from None
            self.lines.append(line)
            seen.append(line)
            if line.get("event") == event:
                return seen


def test_sighup_rejects_an_invalid_file_line_by_line_then_applies_a_valid_one(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml("Before"))
    systemd = NotifySocket(tmp_path / "notify")
    agent = AgentProcess(config, systemd)
    try:
        systemd.wait_for("READY=1")

        config.write_text('[collect]\ninterval = 0\n[cpu]\nper_core = 1\n')
        agent.process.send_signal(signal.SIGHUP)
        rejected = agent.wait_for_event("config_unchanged")
        assert [line["problem"] for line in rejected if line.get("event") == "config_reload_rejected"] == [
            "collect.interval: must be 1..300 seconds, got 0", "cpu.per_core: must be true or false, got 1",
        ]
        agent.wait_for_event("agent_started")  # the same agent carries on

        config.write_text(agent_toml("After"))
        agent.process.send_signal(signal.SIGHUP)
        reload_messages = systemd.wait_for("READY=1")
        assert reload_messages[0].startswith("RELOADING=1\nMONOTONIC_USEC=")
        agent.wait_for_event("config_applied")

        agent.process.send_signal(signal.SIGTERM)
        agent.wait_for_event("agent_stopped")
        assert agent.process.wait(timeout=15) == 0
        assert systemd.wait_for("STOPPING=1", timeout=1)[-1] == "STOPPING=1\nSTATUS=publishing what is left"
    finally:
        if agent.process.poll() is None:
            agent.process.kill()
    requests = [line for line in agent.lines if "MetricData" in line]
    # Each SIGHUP ends the loop with a flush, so what was aggregated under the old config goes out first.
    assert [request["Namespace"] for request in requests] == ["Before", "Before", "After"]
    assert all("MemoryUtilization" in {d["MetricName"] for d in request["MetricData"]} for request in requests)
    stopped = agent.lines[-1]
    assert stopped["event"] == "agent_stopped"
    assert stopped["collected"] == stopped["published"] and stopped["dropped"] == {}


def test_the_watchdog_is_pinged_from_the_first_cycle_and_a_too_short_one_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml("InfraWatch"))
    systemd = NotifySocket(tmp_path / "notify")
    # WatchdogSec=2s: a ping each second at most, but collections come only every second.
    agent = AgentProcess(config, systemd, WATCHDOG_USEC="2000000")
    try:
        assert systemd.wait_for("WATCHDOG=1")[0] == "READY=1\nSTATUS=collecting and publishing"
        agent.process.send_signal(signal.SIGTERM)
        assert agent.process.wait(timeout=15) == 0
    finally:
        if agent.process.poll() is None:
            agent.process.kill()
    warning = agent.wait_for_event("watchdog_too_short")[-1]
    assert (warning["ping_every_s"], warning["collect_interval"]) == (1.0, 1)
