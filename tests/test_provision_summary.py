"""What the plan tells a person: each alarm's definition (--detail), the apply time and the monthly cost;
a large plan is not applied on --yes alone; an unreachable endpoint or a topic in another region is named."""

from __future__ import annotations

import io
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from agent.host import region_source
from provisioning.aws import Clients
from provisioning.cli import main
from tests.fakes.aws import CallRecorder, Provisioner
from tests.fakes.host import FakeClock

HOST_ID = "i-0000000000000000a"
HOST = f'stack = "ml"\n[[hosts]]\ninstance_ids = ["{HOST_ID}"]\n'


@pytest.fixture
def provisioner(tmp_path: Path) -> Iterator[Provisioner]:
    with mock_aws():
        yield Provisioner(tmp_path)


def test_detail_shows_what_each_alarm_watches_and_the_plan_ends_with_time_and_cost(provisioner: Provisioner) -> None:
    run = provisioner.run(HOST, "--dry-run", "--detail")
    assert (run.code, run.errors) == (0, [])
    assert run.lines == [
        "+ create topic ml-critical",
        "+ create topic ml-warning",
        f"+ create alarm ml/host/{HOST_ID}/cpu_high",
        f"    InfraWatch CPUUtilization {{InstanceId={HOST_ID}}} Average > 90 for 3 of 5 × 60 s (missing: missing)",
        f"+ create alarm ml/host/{HOST_ID}/memory_high",
        f"    InfraWatch MemoryUtilization {{InstanceId={HOST_ID}}} Average > 90 for 3 of 5 × 60 s (missing: missing)",
        f"+ create alarm ml/host/{HOST_ID}/storage_high@/",
        f"    InfraWatch StorageUtilization {{InstanceId={HOST_ID}, MountPath=/}} Maximum > 85 for 1 of 1 × 300 s "
        "(missing: missing)",
        f"+ create alarm ml/host/{HOST_ID}/heartbeat_missing",
        f"    InfraWatch Heartbeat {{Component=agent, InstanceId={HOST_ID}}} Sum < 1 for 3 of 3 × 60 s "
        "(missing: breaching)",
        "+ create dashboard ml-us-east-1-fleet",
        "+ create rule ml-alarm-state",
        "Plan: 8 to create, 0 to update, 0 to delete, 0 unchanged.",
        # 4 PutMetricAlarm 1/3 s apart; the other 7 writes are not paced
        "Apply: 11 writes, about 1 s at 3 alarm writes per second.",
        "Cost of the stack: 4 alarms over 4 metrics and 1 dashboard, about $3.40/month (us-east-1 list prices, "
        "2026-12; an account's first 3 dashboards and 10 alarm metrics are free).",
    ]
    assert provisioner.recorder.writes == Counter()


def test_without_detail_the_plan_has_one_line_per_resource(provisioner: Provisioner) -> None:
    run = provisioner.run(HOST, "--dry-run", "--alarm-writes-per-second", "0.5")
    assert len(run.lines) == 8 + 3
    assert run.lines[-2] == "Apply: 11 writes, about 6 s at 0.5 alarm writes per second."


def test_a_metric_math_alarm_counts_each_metric_it_reads(provisioner: Provisioner) -> None:
    endpoint = 'stack = "ml"\n[[endpoints]]\nname = "scorer"\n'
    sagemaker = provisioner.client("sagemaker")
    sagemaker.create_model(ModelName="m", ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
                           PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/m:1"})
    sagemaker.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1, "InstanceType": "ml.g4dn.xlarge"}])
    sagemaker.create_endpoint(EndpointName="scorer", EndpointConfigName="c")
    run = provisioner.run(endpoint, "--dry-run", "--detail")
    assert run.code == 0, run.err
    error_rate = run.lines.index("+ create alarm ml/sagemaker/scorer/AllTraffic/endpoint_error_rate")
    assert run.lines[error_rate + 1].startswith("    expression ")
    assert run.lines[error_rate + 1].endswith(" for 3 of 5 × 60 s (missing: notBreaching)")


def large_spec(hosts: int) -> str:
    ids = ", ".join(f'"i-{index:017x}"' for index in range(hosts))
    return f'stack = "ml"\n[[hosts]]\ninstance_ids = [{ids}]\ngpus = 8\n'


def test_a_plan_over_a_thousand_writes_asks_even_with_yes(provisioner: Provisioner) -> None:
    spec = large_spec(25)  # 1,125 alarms (25 hosts × (5 + 5 per GPU × 8)), topics, a dashboard, a rule
    questions: list[str] = []
    run = provisioner.run(spec, "--yes", confirm=lambda question: questions.append(question) or False)
    assert (run.code, run.lines[-1]) == (0, "Nothing applied.")
    assert questions == ["Apply 1132 writes?"]
    assert provisioner.recorder.writes == Counter()


def test_a_large_plan_without_a_terminal_needs_large_plan_ok(provisioner: Provisioner,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", open("/dev/null"))  # noqa: SIM115 — not a terminal, as in CI or cron
    run = provisioner.run(large_spec(25), "--yes")
    assert (run.code, run.errors) == (2, ["stdin is not a terminal: the plan has 1,132 writes, more than 1,000: "
                                          "pass --large-plan-ok with --yes to apply it"])
    assert provisioner.recorder.writes == Counter()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed when the block ends: connections are refused


def test_an_unreachable_endpoint_is_named_with_the_region_and_given_up_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    session = boto3.Session()
    recorder = CallRecorder(session)
    clock = FakeClock()
    spec = tmp_path / "alarms.toml"
    spec.write_text(HOST)
    out, err = io.StringIO(), io.StringIO()
    code = main(["--config", str(spec), "--dry-run"], clients=Clients(session), clock=clock, sleep=clock.sleep,
                out=out, err=err)
    message = err.getvalue().splitlines()[-1]  # after the one aws_call_retried warning
    assert code == 1
    assert message.startswith(f'could not reach {url}/ (region us-east-1, from AWS_DEFAULT_REGION): '
                              f'Could not connect to the endpoint URL: "{url}/". Set AWS_ENDPOINT_URL')
    assert message.endswith("AWS_REGION for another region.")
    assert recorder.calls == ["DescribeAlarms"] * 5  # the first call a run makes
    assert sum(clock.sleeps) <= 7.5  # backoff waits: at most 0.5 + 1 + 2 + 4 s


def test_a_topic_in_another_region_is_reported_as_such(provisioner: Provisioner) -> None:
    pager = "arn:aws:sns:eu-west-1:123456789012:pager"
    run = provisioner.run(HOST + f'[notifications.critical]\ntopic_arn = "{pager}"\n', "--dry-run")
    assert (run.code, run.err.splitlines()) == (2, [
        "notifications.critical.topic_arn: the topic is in eu-west-1, but this stack is provisioned in us-east-1 "
        f'and an alarm can notify only a topic of its own region, got "{pager}"'
    ])


def test_region_source_names_the_setting_a_person_would_change(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    assert region_source() == "AWS_DEFAULT_REGION"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert region_source() == "AWS_REGION"
    monkeypatch.delenv("AWS_REGION")
    assert region_source() == "nowhere: set AWS_REGION"
    config = tmp_path / "config"
    config.write_text("[profile ml]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "ml")
    assert region_source() == "profile 'ml' in the AWS config file"
