"""Configuration: every default, and bad files rejected with one exact line per problem and exit code 2."""

from __future__ import annotations

import codecs
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import AgentConfig, load
from agent.schema import MAX_FILE_BYTES
from provisioning.cli import main as provision_main

BAD_FILES = [
    ("[collect]\ninterval = 0\n", ["collect.interval: must be 1..300 seconds, got 0"]),
    ("[collect]\ninterval = 2.5\n", ["collect.interval: must be an integer, got 2.5"]),
    ("[publish]\ninterval = 301\n", ["publish.interval: must be 10..300 seconds, got 301"]),
    ("[publish]\nhigh_resolution = \"yes\"\n", ['publish.high_resolution: must be true or false, got "yes"']),
    ("[colect]\ninterval = 5\n", ['colect: unknown key, did you mean "collect"?']),
    ("[storage]\nexlude_mounts = [\"/data\"]\n",
     ['storage.exlude_mounts: unknown key, did you mean "exclude_mounts"?']),
    ('namespace = "AWS/EC2"\n', ['namespace: must not start with "AWS/" (reserved for AWS services), got "AWS/EC2"']),
    ("namespace = \"\"\n", ['namespace: must be 1..255 characters, got ""']),
    ("[dimensions]\nInstanceId = \"x\"\n",
     ['dimensions: dimension "InstanceId" is set by the agent and cannot be overridden, got {InstanceId = "x"}']),
    ("[dimensions]\nTeam = 7\n", ["dimensions: must be a table of string values, got {Team = 7}"]),
    # What CloudWatch refuses (API reference: PutMetricData Namespace, Dimension) is refused at load time.
    ('namespace = ":colon"\n', ['namespace: must not start with ":", got ":colon"']),
    ('namespace = "Infraé"\n', ['namespace: must be ASCII only, got "Infraé"']),
    ('namespace = "Infra\\nWatch"\n',
     ['namespace: must not contain control characters (tab, newline, ...), got "Infra\\nWatch"']),
    ('[dimensions]\nTeam = "   "\n', ["dimensions: dimension Team value '   ' must have a non-whitespace character, "
                                      'got {Team = "   "}']),
    ('[dimensions]\nTeam = "équipe"\n',
     ["dimensions: dimension Team value 'équipe' must be ASCII only, got {Team = \"équipe\"}"]),
    ('[dimensions]\n":Team" = "ml"\n',
     ["dimensions: dimension name ':Team' must not start with \":\", got {\":Team\" = \"ml\"}"]),
    ('[statsd]\ndimension_keys = ["AutoScalingGroupName"]\n',
     ['statsd.dimension_keys: "AutoScalingGroupName" is set by the agent, got ["AutoScalingGroupName"]']),
    ('[statsd]\ndimension_keys = ["Component"]\n',
     ['statsd.dimension_keys: "Component" is set by the agent, got ["Component"]']),
    ("[network]\nexclude_interfaces = \"lo\"\n", ['network.exclude_interfaces: must be a list of strings, got "lo"']),
    ('log_level = "verbose"\n',
     ['log_level: must be "debug" or "info" or "warning" or "error", got "verbose"']),
    ("cpu = true\n", ["cpu: must be a table, got true"]),
    ("[collect]\ninterval = 60\n[publish]\ninterval = 30\n",
     ["publish.interval: must be at least collect.interval (60), got 30"]),
    ("[storage]\ntimeout = 0\n", ["storage.timeout: must be 0.05..30 seconds, got 0"]),
    ('exclude_metrics = ["GPUPCIe*", "Heart*"]\n',
     ['exclude_metrics: must not exclude Heartbeat: the heartbeat alarm and availability are computed from it, '
      'got ["GPUPCIe*", "Heart*"]']),
    # A 45 s StatsD window would straddle a minute's turn every other time.
    ("[statsd]\nflush_interval = 45\n",
     ["statsd.flush_interval: must divide a minute (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60) so that no flush "
      "window straddles two minutes, got 45"]),
    # Several problems in one file: every one is reported, in file order.
    ("[collect]\ninterval = -1\n[cpu]\nper_core = 1\nenabled = \"no\"\n",
     ["collect.interval: must be 1..300 seconds, got -1", "cpu.enabled: must be true or false, got \"no\"",
      "cpu.per_core: must be true or false, got 1"]),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_bad_file_exits_2_with_exact_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           text: str, expected: list[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == expected
    assert captured.out == ""


def test_invalid_toml_names_the_file_and_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[collect\ninterval = 5\n")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"{path}: invalid TOML: ")


def test_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert capsys.readouterr().err == f"{tmp_path / 'nope.toml'}: cannot read: No such file or directory\n"


def test_the_agent_runs_with_no_file_at_all() -> None:
    config = load(None)
    assert config == AgentConfig()
    assert (config.namespace, config.collect.interval, config.publish.interval) == ("InfraWatch", 10, 60)
    assert config.publish.high_resolution is False


def test_a_valid_file_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('namespace = "ML/Training"\n[collect]\ninterval = 1\n[dimensions]\nTeam = "vision"\n')
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: valid\n"
    config = load(path)
    assert (config.namespace, config.collect.interval, config.dimensions) == ("ML/Training", 1, (("Team", "vision"),))


def check(path: Path) -> subprocess.CompletedProcess[str]:
    """check-config in a process of its own, so a reader that blocks fails the test instead of hanging it."""
    return subprocess.run([sys.executable, "-m", "agent", "check-config", str(path)], capture_output=True,
                          text=True, timeout=20, check=False, cwd=Path(__file__).parent.parent)


def test_a_fifo_is_refused_at_once_instead_of_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "agent.toml"
    os.mkfifo(fifo)
    result = check(fifo)
    assert (result.returncode, result.stderr) == (2, f"{fifo}: cannot read: a FIFO, not a regular file\n")


def test_a_device_is_refused_without_reading_it() -> None:
    result = check(Path("/dev/zero"))
    assert (result.returncode, result.stderr) == (2, "/dev/zero: cannot read: a device or socket, not a regular file\n")


def test_a_file_past_the_size_bound_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == f"{path}: cannot read: larger than {MAX_FILE_BYTES} bytes\n"


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(codecs.BOM_UTF8 + b'namespace = "ML/Training"\n')
    assert load(path).namespace == "ML/Training"


@pytest.mark.parametrize("command", ["agent", "spec"])
def test_a_file_that_is_not_utf8_is_one_config_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          command: str) -> None:
    path = tmp_path / "file.toml"
    path.write_bytes(b'# \xe9quipe\n')  # Latin-1
    err = io.StringIO()  # the provisioner logs to the stream it is given: not to capsys's, closed after the test
    # provision-alarms configures logging at its own level: conftest's default_logging puts it back.
    code = main(["check-config", str(path)]) if command == "agent" else provision_main(["--config", str(path)],
                                                                                       err=err)
    assert code == 2
    assert capsys.readouterr().err + err.getvalue() == (
        f"{path}: not UTF-8 text (TOML files are UTF-8): byte 0xE9 at line 1, column 3\n")
