"""The command line: dry-run output, the cost line, exit codes, --version, --help, check-config forms and warnings."""

from __future__ import annotations

import gc
import io
import json
import os
import re
import signal
import subprocess
import sys
import weakref
from importlib import metadata
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError

from agent.cli import Signals, build_agent, build_collectors, freeze_heap, main, retry_deadline, run_once
from agent.cloudwatch_rules import standard_units
from agent.config import load, parse
from agent.dryrun import PrintingClient
from agent.fleet import DimensionPlan
from agent.host import HostContext
from agent.samples import Sample
from agent.selfstats import AgentStats
from provisioning.cli import main as provision_main
from tests.fakes.systemd import NotifySocket


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
    systemd = NotifySocket(tmp_path / "notify")
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(config), "--dry-run"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent,
        env={**os.environ, "NOTIFY_SOCKET": systemd.address},
    )
    try:
        systemd.wait_for("READY=1")  # after the first collection
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    # --dry-run's stdout is its requests only: the logs went to stderr.
    requests = [json.loads(line) for line in out.splitlines()]
    # publish.interval is 300 s, so the only request is the last flush made on the way out.
    assert [set(request) for request in requests] == [{"Namespace", "MetricData"}]
    assert "MemoryUtilization" in {d["MetricName"] for d in requests[0]["MetricData"]}
    events = [json.loads(line)["event"] for line in err.splitlines()]
    assert events[-2:] == ["stop_requested", "agent_stopped"]


REPO = Path(__file__).parent.parent
ONCE_CONFIG = "[ec2]\nidentity = false\n[storage]\nenabled = false\n[diskio]\nenabled = false\n" \
    "[network]\nenabled = false\n[statsd]\nenabled = false\n"


def agent_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60,
                          check=False, cwd=REPO, env=env)


def test_once_exits_0_when_cloudwatch_accepted_everything(tmp_path: Path, moto_server: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(ONCE_CONFIG)
    result = agent_command("--once", "--config", str(config),
                           env={**os.environ, "AWS_ENDPOINT_URL_CLOUDWATCH": moto_server})
    assert (result.returncode, result.stderr) == (0, "")
    assert "publish_failed" not in result.stdout


def test_once_without_credentials_exits_1_with_one_line_saying_why(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(ONCE_CONFIG)
    env = {name: value for name, value in os.environ.items()
           if name not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    result = agent_command("--once", "--config", str(config), env={**env, "AWS_CONFIG_FILE": "/dev/null"})
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    match = re.fullmatch(r"infrawatch-agent: not delivered: (\d+) of (\d+) datapoints \((.*)\)", line)
    assert match is not None and match[1] == match[2] and int(match[1]) > 0
    assert match[3] == ("NoCredentialsError: no AWS credentials: use a profile (AWS_PROFILE), AWS_ACCESS_KEY_ID "
                        "and AWS_SECRET_ACCESS_KEY, or an instance role")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Unreachable:
    """boto3's client with nothing listening at its endpoint: every call fails to connect."""

    class meta:
        endpoint_url = "http://127.0.0.1:9"

    def __init__(self) -> None:
        self.calls = 0

    def put_metric_data(self, **request: object) -> None:
        self.calls += 1
        raise EndpointConnectionError(endpoint_url=self.meta.endpoint_url)


class OneReading:
    name = "memory"

    def collect(self) -> list[Sample]:
        return [Sample("MemoryUtilization", 50.0, "Percent")]


def test_once_with_the_endpoint_down_retries_until_its_deadline_then_exits_1(tmp_path: Path) -> None:
    config = parse({"ec2": {"identity": False}, "statsd": {"enabled": False}})
    clock, client, err = FakeClock(), Unreachable(), io.StringIO()
    host = HostContext(config.ec2, hostname="laptop")
    code = run_once(config, client, [OneReading()], sleep=lambda seconds: None, host=host,
                    retry_sleep=clock.sleep, monotonic=clock.monotonic, err=err)
    assert code == 1
    assert client.calls > 1 and clock.now - 1000.0 < retry_deadline(config.publish.interval)
    match = re.fullmatch(r"infrawatch-agent: not delivered: (\d+) of (\d+) datapoints \((.*)\)\n", err.getvalue())
    assert match is not None and match[1] == match[2]
    assert match[3] == "EndpointConnectionError: could not reach http://127.0.0.1:9"


def test_dry_run_json_stdout_is_only_requests_so_it_pipes_into_jq(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(ONCE_CONFIG)
    result = agent_command("--once", "--dry-run", "--format", "json", "--config", str(config))
    assert result.returncode == 0
    requests = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(requests) == 1 and set(requests[0]) == {"Namespace", "MetricData"}
    lines = result.stderr.splitlines()
    assert "not_on_ec2" in {json.loads(line)["event"] for line in lines[:-1]}
    assert re.fullmatch(r"\d+ series, 60 requests/hour, about \$[\d.]+/month at list prices", lines[-1])


def test_version_is_the_package_version_for_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    expected = metadata.version("infrawatch")
    assert agent_command("--version").stdout == f"infrawatch-agent {expected}\n"
    with pytest.raises(SystemExit) as exit_info:
        provision_main(["--version"])
    assert (exit_info.value.code, capsys.readouterr().out) == (0, f"provision-alarms {expected}\n")


def test_help_is_written_for_users_not_about_the_code() -> None:
    result = agent_command("--help")
    assert result.returncode == 0
    assert "publishes them to Amazon CloudWatch (and, when enabled, on a Prometheus /metrics" in result.stdout
    assert "wiring" not in result.stdout
    assert "exit codes:\n  0  done (with --once: everything collected was delivered)" in result.stdout


@pytest.mark.parametrize("form", [
    ["check-config", "{path}"], ["check-config", "--config", "{path}"], ["--config", "{path}", "check-config"],
])
def test_check_config_takes_the_file_in_every_form(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   form: list[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[collect]\ninterval = 5\n")
    assert main([arg.format(path=path) for arg in form]) == 0
    assert capsys.readouterr() == (f"{path}: valid\n", "")


def test_check_config_without_a_file_checks_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"]) == 0
    assert capsys.readouterr() == ("no --config, every key at its default: valid\n", "")


@pytest.mark.parametrize(("argv", "error"), [
    (["check-config", "a.toml", "--config", "b.toml"],
     "infrawatch-agent check-config: error: got two files, a.toml and --config b.toml: give one"),
    (["--onse"], "infrawatch-agent: error: unrecognized arguments: --onse"),
])
def test_usage_errors_exit_2_and_say_what_to_do(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                error: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    prog = error.split(": error:")[0]
    assert lines[-3] == error
    assert lines[-2].startswith(f"For example: {prog} ")
    assert lines[-1] == f"See every option: {prog} --help"


@pytest.mark.parametrize(("text", "warnings"), [
    ("[collect]\ninterval = 59\n", []),
    ("[collect]\ninterval = 60\n", [
        "collect.interval: 60 s is at or above half the unit's WatchdogSec (120 s), so systemd may kill the agent "
        "between two collections; keep it below 60 s or raise WatchdogSec in a drop-in"]),
    ('[statsd]\naddress = "[::1]:8125"\n', []),
    ('[statsd]\naddress = "localhost:8125"\n', []),
    ('[statsd]\naddress = "0.0.0.0:8125"\n', [
        'statsd.address: "0.0.0.0:8125" listens beyond loopback, so other hosts can write metrics (each series '
        'billed) into this host\'s namespace; use "127.0.0.1:8125" unless they must']),
    ('[statsd]\nenabled = false\naddress = "0.0.0.0:8125"\n', []),
])
def test_check_config_warns_about_risky_valid_settings_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, warnings: list[str]
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{path}: valid\n"
    assert captured.err.splitlines() == [f"{path}: warning: {warning}" for warning in warnings]


def test_a_signal_before_the_agent_is_built_is_kept_and_the_handlers_are_given_back() -> None:
    before = signal.getsignal(signal.SIGHUP)
    signals = Signals().install()
    try:
        os.kill(os.getpid(), signal.SIGHUP)  # no plan yet, as during startup: nothing to release, no error
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.flag.wait(5)
        assert signals.take() == [signal.SIGHUP, signal.SIGTERM]
        assert (signals.flag.is_set(), signals.take()) == (False, [])
    finally:
        signals.close()
    assert signal.getsignal(signal.SIGHUP) is before


class _Node:
    """An object in a reference cycle: only the cyclic garbage collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_start_up_is_frozen_out_of_full_collections_and_a_reload_frees_what_the_old_build_left() -> None:
    node = _Node()
    gone = weakref.ref(node)
    try:
        frozen = freeze_heap()
        # What another thread frees (a server a fixture left running) leaves the frozen generation: never grows.
        assert 0 < gc.get_freeze_count() <= frozen
        del node
        gc.collect()
        assert gone() is not None  # frozen: full collections no longer walk it (nor free it)
        freeze_heap()  # the next reload: unfrozen and collected before freezing again
        assert gone() is None
    finally:
        gc.unfreeze()


def test_building_the_agent_reads_cloudwatchs_units_so_the_first_flush_does_not() -> None:
    """Loading botocore's CloudWatch model takes about 100 ms of CPU; the first flush checked every series'
    unit against it, so that flush paid it inside the agent's measured steady state."""
    standard_units.cache_clear()
    build_agent(parse({}), PrintingClient(io.StringIO()), AgentStats(), [], DimensionPlan(identity=None, hostname="h"))
    assert standard_units.cache_info().currsize == 1
