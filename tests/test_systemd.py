"""The systemd unit (verify, security exposure, every directive the service relies on) and install.sh
into a temporary root: twice (idempotent), then --uninstall."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig, parse
from agent.schema import load_toml
from agent.sdnotify import UNIT_WATCHDOG_SEC

REPO = Path(__file__).parent.parent
UNIT = REPO / "systemd" / "infrawatch-agent.service"
INSTALL = REPO / "systemd" / "install.sh"
ANALYZE = shutil.which("systemd-analyze")
# In CI a missing tool fails the test instead of skipping it (`make test` installs it: .ci/os-tools).
needs_systemd_analyze = pytest.mark.skipif(ANALYZE is None and not os.environ.get("CI"),
                                           reason="systemd-analyze is not installed")


def directives(unit: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("=", 1)) for line in unit.read_text().splitlines()  # type: ignore[misc]
            if "=" in line and not line.startswith("#")]


def test_the_unit_has_everything_the_service_relies_on() -> None:
    found = directives(UNIT)
    settings = dict(found)
    assert {
        key: settings[key] for key in (
            "Type", "NotifyAccess", "Restart", "After", "Wants", "TimeoutStopSec", "WatchdogSec", "StateDirectory",
            "ConfigurationDirectory", "DynamicUser", "User", "DevicePolicy", "DeviceAllow", "ProtectSystem",
            "ProtectHome", "PrivateTmp", "NoNewPrivileges", "CapabilityBoundingSet", "RestrictAddressFamilies",
            "MemoryMax", "CPUQuota", "ExecStart", "ExecReload", "WantedBy",
        )
    } == {
        "Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "After": "network-online.target",
        "Wants": "network-online.target", "TimeoutStopSec": "30s", "WatchdogSec": "120s",
        "StateDirectory": "infrawatch", "ConfigurationDirectory": "infrawatch", "DynamicUser": "yes",
        "User": "infrawatch", "DevicePolicy": "closed", "DeviceAllow": "char-nvidia* rw", "ProtectSystem": "strict",
        "ProtectHome": "read-only", "PrivateTmp": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "MemoryMax": "256M", "CPUQuota": "25%",
        "ExecStart": "/opt/infrawatch/venv/bin/infrawatch-agent --config /etc/infrawatch/agent.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID", "WantedBy": "multi-user.target",
    }
    assert [value for key, value in found if key == "SystemCallFilter"] == [
        "@system-service", "~@privileged @resources"]


def test_the_unit_timeouts_leave_the_agent_room() -> None:
    settings = dict(directives(UNIT))
    largest_shutdown_timeout = AgentConfig.__dataclass_fields__["shutdown_timeout"].metadata["range"][1]
    assert int(settings["TimeoutStopSec"].removesuffix("s")) > largest_shutdown_timeout
    # Pings come from the collect cycle at half the period: the default interval fits many times over.
    assert int(settings["WatchdogSec"].removesuffix("s")) / 2 > 4 * AgentConfig().collect.interval
    # check-config warns against the unit it ships with.
    assert settings["WatchdogSec"] == f"{UNIT_WATCHDOG_SEC}s"


def run_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_systemd_analyze
def test_systemd_analyze_verify_is_clean(installed: Path, tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at the copy install.sh laid out under the root.
    unit = tmp_path / "infrawatch-agent.service"
    agent = installed / "opt/infrawatch/venv/bin/infrawatch-agent"
    unit.write_text(UNIT.read_text().replace("/opt/infrawatch/venv/bin/infrawatch-agent", str(agent)))
    result = run_analyze("verify", str(unit))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@needs_systemd_analyze
def test_security_exposure_is_at_most_2() -> None:
    result = run_analyze("security", "--offline=true", str(UNIT))
    if "--offline" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    score = re.search(r"Overall exposure level for infrawatch-agent\.service: (\d+\.\d)", result.stdout)
    assert score is not None, result.stdout + result.stderr
    assert float(score.group(1)) <= 2.0


def install(root: Path, wheel: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), "--python", sys.executable, "--source", str(wheel),
         "--pip-arg", "--no-deps", "--pip-arg", "--no-index", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


VERSION = load_toml(REPO / "pyproject.toml")["project"]["version"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, built_wheel: Path) -> Iterator[Path]:
    """install.sh run twice into one root with the release wheel; yields the root."""
    root = tmp_path_factory.mktemp("root")
    first = install(root, built_wheel)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"installed infrawatch {VERSION} into {root}/opt/infrawatch/venv",
        f"wrote {root}/etc/infrawatch/agent.toml",
        f"installed and enabled {root}/etc/systemd/system/infrawatch-agent.service",
        "restarted infrawatch-agent.service",
    ]
    (root / "etc/infrawatch/agent.toml").write_text('naming = "cwagent"\n')  # the operator's own config
    second = install(root, built_wheel)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [  # the same version again: nothing changes, nothing restarts
        f"infrawatch {VERSION} already installed in {root}/opt/infrawatch/venv",
        f"kept {root}/etc/infrawatch/agent.toml",
        "infrawatch-agent.service unchanged; not restarted",
    ]
    yield root


def installed_files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")
            if not str(path.relative_to(root)).startswith("opt/infrawatch/venv/")}


def test_install_twice_lays_out_venv_config_and_enabled_unit(installed: Path) -> None:
    assert installed_files(installed) == {
        "etc", "etc/infrawatch", "etc/infrawatch/agent.toml", "etc/systemd", "etc/systemd/system",
        "etc/systemd/system/infrawatch-agent.service", "etc/systemd/system/multi-user.target.wants",
        "etc/systemd/system/multi-user.target.wants/infrawatch-agent.service", "opt", "opt/infrawatch",
        "opt/infrawatch/venv",
    }
    assert (installed / "etc/systemd/system/infrawatch-agent.service").read_bytes() == UNIT.read_bytes()
    assert os.readlink(installed / "etc/systemd/system/multi-user.target.wants/infrawatch-agent.service") == (
        "../infrawatch-agent.service")
    assert (installed / "etc/infrawatch/agent.toml").read_text() == 'naming = "cwagent"\n'  # kept on reinstall


def test_the_installed_agent_runs_from_its_own_venv(installed: Path) -> None:
    venv = installed / "opt/infrawatch/venv"
    # Dependencies were left out (--no-deps, offline); the test environment's site-packages lends them.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    where = subprocess.run([venv / "bin/python", "-c", "import agent; print(agent.__file__)"],
                           capture_output=True, text=True, env=env, cwd=installed, check=True)
    assert where.stdout.startswith(str(venv))
    checked = subprocess.run([venv / "bin/infrawatch-agent", "check-config", installed / "etc/infrawatch/agent.toml"],
                             capture_output=True, text=True, env=env, cwd=installed, check=False)
    assert (checked.returncode, checked.stdout) == (0, f"{installed}/etc/infrawatch/agent.toml: valid\n")


def test_the_example_config_is_valid_and_all_defaults() -> None:
    assert parse(load_toml(REPO / "systemd" / "agent.toml.example")) == AgentConfig()


def test_uninstall_removes_the_service_and_keeps_config(installed: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(installed, root, symlinks=True)
    removed = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--uninstall"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert (removed.returncode, removed.stdout) == (0, (
        f"removed infrawatch-agent.service and {root}/opt/infrawatch; "
        f"kept {root}/etc/infrawatch/agent.toml and the spool in /var/lib/infrawatch\n"))
    assert installed_files(root) == {"etc", "etc/infrawatch", "etc/infrawatch/agent.toml", "etc/systemd",
                                     "etc/systemd/system", "etc/systemd/system/multi-user.target.wants", "opt"}


def test_unknown_arguments_are_refused() -> None:
    result = subprocess.run(["bash", str(INSTALL), "--rooot", "/tmp/x"], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr.splitlines()[0]) == (2, "install.sh: unknown argument: --rooot")
