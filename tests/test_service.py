"""The agent as systemd runs it, in a real process: READY, SIGHUP with an invalid then a valid file, SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from agent.config import AgentConfig
from agent.reload import ConfigReloader
from tests.conftest import free_port
from tests.fakes.systemd import NotifySocket

REPO = Path(__file__).parent.parent
def agent_toml(namespace: str) -> str:
    # No StatsD listener on the default 127.0.0.1:8125, which an agent in a test running beside this one
    # (make test runs two at a time) or the host's own may hold.
    return (f'namespace = "{namespace}"\n[collect]\ninterval = 1\n[publish]\ninterval = 300\n[ec2]\nidentity = false\n'
            '[statsd]\nenabled = false\n')


class AgentProcess:
    """`infrawatch-agent --dry-run` with a notify socket; stdout is read on a thread, line by line."""

    def __init__(self, config: Path, notify: NotifySocket, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(config), "--dry-run"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            env={**os.environ, "NOTIFY_SOCKET": notify.address, **env},
        )
        self.lines: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(json.loads(line) if line.startswith("{") else {"raw": line})

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def stop(self) -> list[dict[str, Any]]:
        """SIGTERM; every line up to agent_stopped, once the process has exited 0."""
        self.process.send_signal(signal.SIGTERM)
        seen = self.wait_for_event("agent_stopped")
        assert self.process.wait(timeout=15) == 0
        return seen

    def requests(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if "MetricData" in line]

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
    # A refused SIGHUP changes nothing: the same agent carries on, without a flush. An accepted one ends the
    # loop with a last collection and flush, so what was aggregated under the old config goes out first.
    assert [request["Namespace"] for request in requests] == ["Before", "After"]
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


def statsd_toml(namespace: str, port: int) -> str:
    # collect.interval at its maximum: the first collection is the only one before the signal.
    return (f'namespace = "{namespace}"\n[collect]\ninterval = 300\n[publish]\ninterval = 300\n'
            f'[ec2]\nidentity = false\n[statsd]\naddress = "127.0.0.1:{port}"\n')


def send_statsd(port: int, *lines: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for line in lines:
            sender.sendto(line.encode(), ("127.0.0.1", port))


def statsd_values(request: dict[str, Any]) -> dict[str, list[float]]:
    return {datum["MetricName"]: datum["Values"] for datum in request["MetricData"]
            if datum["MetricName"] in ("JobsDone", "StepTime")}


def test_sigterm_publishes_the_statsd_lines_received_since_the_last_collection(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(statsd_toml("InfraWatch", port))
    systemd = NotifySocket(tmp_path / "notify")
    with AgentProcess(config, systemd) as agent:
        systemd.wait_for("READY=1")  # sent after the first collection
        send_statsd(port, "JobsDone:2|c", "JobsDone:3|c", "StepTime:12.5|ms")
        agent.stop()
    assert [statsd_values(request) for request in agent.requests()] == [{"JobsDone": [5.0], "StepTime": [12.5]}]


def test_an_accepted_sighup_publishes_the_statsd_lines_under_the_old_config_first(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(statsd_toml("Before", port))
    systemd = NotifySocket(tmp_path / "notify")
    with AgentProcess(config, systemd) as agent:
        systemd.wait_for("READY=1")
        send_statsd(port, "JobsDone:7|c")
        config.write_text(statsd_toml("After", port))
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_for_event("config_applied")
        agent.stop()
    assert [(request["Namespace"], statsd_values(request)) for request in agent.requests()] == [
        ("Before", {"JobsDone": [7.0]}), ("After", {}),  # the new listener starts with no series
    ]


def test_a_sighup_with_a_file_that_is_not_utf8_is_refused_and_the_agent_carries_on(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml("Before"))
    systemd = NotifySocket(tmp_path / "notify")
    with AgentProcess(config, systemd) as agent:
        systemd.wait_for("READY=1")
        config.write_bytes(b'namespace = "After"\n# \xe9quipe (Latin-1)\n')
        agent.process.send_signal(signal.SIGHUP)
        rejected = agent.wait_for_event("config_unchanged")
        agent.stop()
    assert [line["problem"] for line in rejected if line.get("event") == "config_reload_rejected"] == [
        f"{config}: not UTF-8 text (TOML files are UTF-8): byte 0xE9 at line 2, column 3",
    ]
    assert [request["Namespace"] for request in agent.requests()] == ["Before"]


def test_a_sigterm_during_startup_ends_the_agent_with_exit_0(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[ec2]\nidentity = true\nidentity_wait = 1\nimds_timeout = 5\n')
    # An instance metadata service that accepts the connection and never answers: startup waits on it.
    with socket.socket() as imds:
        imds.bind(("127.0.0.1", 0))
        imds.listen()
        imds.settimeout(20)
        endpoint = f"http://127.0.0.1:{imds.getsockname()[1]}"
        with AgentProcess(config, NotifySocket(tmp_path / "notify"), AWS_EC2_METADATA_DISABLED="false",
                          AWS_EC2_METADATA_SERVICE_ENDPOINT=endpoint) as agent:
            connection, _ = imds.accept()  # the agent is in its startup, asking who it is
            stopped = agent.stop()
            connection.close()
    events = [line["event"] for line in stopped if "event" in line]
    assert events[-2:] == ["stop_requested", "agent_stopped"]
    assert "not_on_ec2" in events
    assert next(line for line in stopped if line.get("event") == "stop_requested")["signal"] == "SIGTERM"


def test_a_reload_that_fails_in_an_unforeseen_way_changes_nothing(tmp_path: Path) -> None:
    def broken(config: AgentConfig) -> list[str]:
        raise OSError(24, "Too many open files")

    path = tmp_path / "agent.toml"
    path.write_text(agent_toml("After"))
    with capture_logs() as logged:
        assert ConfigReloader(path).reload(broken) is None
    assert [(line["event"], line.get("error")) for line in logged] == [
        ("config_reload_failed", "OSError(24, 'Too many open files')"), ("config_unchanged", None),
    ]
