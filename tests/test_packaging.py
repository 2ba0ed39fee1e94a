"""Packaging and the Makefile: floors that `make test-min` pins, an SPDX license, and a quiet first install."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.schema import load_toml

REPO = Path(__file__).parent.parent
# A stand-in interpreter: `-m venv DIR` lays out DIR/bin/python (itself); `-m pip` talks like pip, and fails
# when FAKE_PIP_EXIT says so.
FAKE_PYTHON = """#!/bin/sh
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit 0; fi
if [ "$1 $2" = "-m pip" ]; then
    echo "Collecting boto3>=1.34"; echo "Successfully installed boto3-1.34.0"; exit "${FAKE_PIP_EXIT:-0}"
fi
exit 3
"""


def test_min_constraints_pin_every_runtime_dependency_at_its_floor() -> None:
    result = subprocess.run([sys.executable, str(REPO / ".ci" / "min_constraints.py")], capture_output=True,
                            text=True, check=True)
    assert result.stdout.splitlines() == [
        "boto3==1.34", "psutil==5.9", "nvidia-ml-py==12.560.30", "tenacity==8.3", "structlog==24.1",
        "prometheus_client==0.20", "tomli==2.0; python_version < '3.11'",
    ]


def test_the_license_is_an_spdx_expression() -> None:
    pyproject = load_toml(REPO / "pyproject.toml")
    assert pyproject["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in pyproject["build-system"]["requires"]  # the first to read it without a warning


def make_install(tmp_path: Path, pip_exit: int) -> subprocess.CompletedProcess[str]:
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return subprocess.run(["make", "--no-print-directory", f"PYTHON={python}", ".venv/.installed"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "FAKE_PIP_EXIT": str(pip_exit)})


def test_make_says_one_line_per_step_and_keeps_pip_quiet(tmp_path: Path) -> None:
    result = make_install(tmp_path, pip_exit=0)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"make: creating .venv with {tmp_path / 'python'}",
        "make: installing infrawatch and its dev tools into .venv (about a minute the first time)",
    ]


def test_make_shows_what_pip_said_when_the_install_fails(tmp_path: Path) -> None:
    result = make_install(tmp_path, pip_exit=1)
    assert result.returncode != 0
    assert result.stdout.splitlines()[2:] == [
        "Collecting boto3>=1.34", "Successfully installed boto3-1.34.0",
        "make: pip install failed in .venv (its output is above)",
    ]


def test_make_mutation_rewrites_its_report_and_keeps_the_suite_time_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mutation", REPO / ".ci" / "mutation.py")
    assert spec is not None and spec.loader is not None
    mutation = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "mutation", mutation)  # its dataclasses look their module up there
    spec.loader.exec_module(mutation)
    page = tmp_path / "quality.md"
    assert mutation.kept_sections(page) == ""  # no page yet
    page.write_text("# Mutation testing\n\n| old table |\n\n# Suite time\n\nmeasured by hand\n")
    assert mutation.kept_sections(page) == "\n# Suite time\n\nmeasured by hand\n"
    page.write_text("# Mutation testing\n")
    assert mutation.kept_sections(page) == ""
    # The page as committed has the section after the report.
    assert mutation.kept_sections(REPO / "docs" / "quality.md").startswith("\n# Suite time\n")
