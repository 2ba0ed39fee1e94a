"""The spec: defaults, the example, and invalid specs rejected with every problem named, exit 2, nothing created."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from agent.naming import PROFILES
from provisioning.spec import load, parse
from tests.conftest import FAKE_AWS_ENV
from tests.fakes.aws import Provisioner

EXAMPLE = Path(__file__).resolve().parent.parent / "provisioning" / "examples" / "alarms.toml"
HOST = 'instance_ids = ["i-0000000000000000a"]'
ENDPOINT = 'name = "ranker"\nvariants = ["AllTraffic"]\ninstance_type = "ml.g5.2xlarge"'
AUTOMATION = "arn:aws:ssm:us-east-1:123456789012:automation-definition/RestartAgent:$DEFAULT"


@pytest.fixture
def provisioner(tmp_path: Path) -> Iterator[Provisioner]:
    with mock_aws():
        yield Provisioner(tmp_path)


@pytest.fixture(scope="module")
def untouched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provisioner]:
    """One moto account for the specs rejected before any AWS call: they must leave it untouched."""
    with pytest.MonkeyPatch.context() as env, mock_aws():
        for name, value in FAKE_AWS_ENV.items():
            env.setenv(name, value)
        yield Provisioner(tmp_path_factory.mktemp("invalid"))


def test_an_empty_spec_is_every_default() -> None:
    spec = parse({})
    assert (spec.stack, spec.naming, spec.metric_namespace, spec.hosts, spec.endpoints) == (
        "infrawatch", "native", "InfraWatch", (), ())
    assert spec.alarms["cpu_high"].threshold == 90.0
    assert spec.alarms["gpu_idle"].enabled is False
    assert spec.apply.alarm_writes_per_second == 3.0


def test_the_example_spec_is_valid() -> None:
    spec = load(EXAMPLE)
    assert spec.stack == "ml-platform"
    assert [group.instance_ids for group in spec.hosts] == [("i-0a1b2c3d4e5f60001", "i-0a1b2c3d4e5f60002")]
    assert [(item.protocol, item.endpoint) for item in spec.notifications.critical.subscriptions] == [
        ("email", "oncall@example.com"), ("sqs", "arn:aws:sqs:us-east-1:123456789012:infrawatch-demo-alerts"),
    ]
    assert spec.alarms["endpoint_latency_p99"].threshold == 250.0
    assert [(fleet.name, fleet.scope, fleet.filter, fleet.paging.enabled) for fleet in spec.fleets] == [
        ("training", "fleet", (("AutoScalingGroupName", "training"),), True)
    ]


INVALID_SPECS = [
    ('stack = "ml platform"',
     ['stack: must be 1..32 letters, digits, - or _, starting with a letter or digit, got "ml platform"']),
    ('stak = "ml"', ['stak: unknown key, did you mean "stack"?']),
    ('naming = "telegraf"',
     ["naming: must be " + " or ".join(f'"{profile}"' for profile in PROFILES) + ', got "telegraf"']),
    ('[[notifications.critical.subscriptions]]\nprotocol = "sms"\nendpoint = "+15550100"',
     ['notifications.critical.subscriptions[0].protocol: must be "email" or "https" or "sqs" or "lambda", '
      'got "sms"']),
    ('[[notifications.warning.subscriptions]]\nendpoint = "oncall"',
     ['notifications.warning.subscriptions[0].endpoint: must be an email address, got "oncall"']),
    ('[notifications.critical]\nkms_key_id = "alias/aws/sns"',
     ["notifications.critical.kms_key_id: must be a customer-managed key: a topic encrypted with the AWS-managed "
      "key alias/aws/sns silently drops alarm notifications, because CloudWatch may not use that key, "
      'got "alias/aws/sns"']),
    ('[notifications.warning]\ntopic_arn = "arn:aws:sns:us-east-1:123456789012:pager"\n'
     '[[notifications.warning.subscriptions]]\nendpoint = "a@example.com"',
     ["notifications.warning.subscriptions: only for a topic this stack creates (topic_arn is set)"]),
    ("[alarms.cpu_hihg]\nthreshold = 80", ['alarms.cpu_hihg: unknown key, did you mean "cpu_high"?']),
    ("[alarms.cpu_high]\ndatapoints = 6",
     ["alarms.cpu_high.datapoints: must be at most evaluation_periods (5), got 6"]),
    ("[alarms.endpoint_5xx_rate]\nthreshold = 5.0",
     ["alarms.endpoint_5xx_rate.threshold: must be 0..1 fraction, got 5.0"]),
    ("[alarms.gpu_temperature_high]\nperiod = 45",
     ["alarms.gpu_temperature_high.period: must be 10, 30 or a multiple of 60 seconds, got 45"]),
    ("[alarms.endpoint_latency_p99]\nperiod = 30",
     ["alarms.endpoint_latency_p99.period: must be at least 60 seconds for SageMaker metrics, got 30"]),
    ("[alarms.heartbeat_missing]\nperiod = 3600\nevaluation_periods = 25\ndatapoints = 25",
     ["alarms.heartbeat_missing.evaluation_periods: period * evaluation_periods must be at most 86400 seconds, "
      "got 3600 * 25"]),
    ('[alarms.memory_high]\nseverity = "page"',
     ['alarms.memory_high.severity: must be "critical" or "warning", got "page"']),
    ("hosts = {}", ["hosts: must be a list of tables, got {}"]),
    ("[[hosts]]\ngpus = 8",
     ["hosts[0]: must set exactly one of instance_ids, auto_scaling_group, discover = true, got 0"]),
    (f"[[hosts]]\n{HOST}\ndiscover = true",
     ["hosts[0]: must set exactly one of instance_ids, auto_scaling_group, discover = true, got 2"]),
    ('[[hosts]]\ninstance_ids = ["web-1"]',
     ['hosts[0].instance_ids: every item must be an EC2 instance id like "i-0123456789abcdef0", got ["web-1"]']),
    (f'[[hosts]]\n{HOST}\ndimensions = {{ InstanceId = "x" }}',
     ['hosts[0].dimensions: dimension "InstanceId" is set by the agent and cannot be overridden, '
      'got {InstanceId = "x"}']),
    (f"[[hosts]]\n{HOST}\n[[hosts.throughput_floors]]\nminimum = 10.0",
     ['hosts[0].throughput_floors[0].metric: must name the application metric, got ""']),
    ('[[endpoints]]\nname = "ranker"\ninstance_type = "g5.2xlarge"',
     ['endpoints[0].instance_type: must be a SageMaker instance type like "ml.g5.2xlarge", got "g5.2xlarge"']),
    ('[[endpoints]]\nname = "ranker"\ndiscover = true',
     ["endpoints[0]: must set exactly one of name, discover = true"]),
    (f'[events]\ntarget_arn = "{AUTOMATION}"', ['events.role_arn: must be set for an SSM Automation target, got ""']),
    ('[events]\ntarget_arn = "arn:aws:sqs:us-east-1:123456789012:q"',
     ["events.target_arn: must be a Lambda function ARN or an SSM Automation document ARN (automation-definition/...), "
      'got "arn:aws:sqs:us-east-1:123456789012:q"']),
    (f'[[hosts]]\n{HOST}\n[[hosts]]\ninstance_ids = ["i-0000000000000000b", "i-0000000000000000a"]',
     ['hosts[1].instance_ids[1]: "i-0000000000000000a" is also in hosts[0].instance_ids[0]']),
    (f'[[hosts]]\n{HOST}\nmounts = ["/", "/data", "/data"]',
     ['hosts[0].mounts: mounts[2] repeats mounts[1] ("/data"), got ["/", "/data", "/data"]']),
    ("[apply]\nalarm_writes_per_second = 0", ["apply.alarm_writes_per_second: must be 0.1..1000 per second, got 0"]),
    ('stack = "-ml"\n[alarms.cpu_high]\nthreshold = 120.0\n'
     '[[hosts]]\ngpus = -1\ninstance_ids = ["i-0000000000000000a"]',
     ['stack: must be 1..32 letters, digits, - or _, starting with a letter or digit, got "-ml"',
      "hosts[0].gpus: must be 0..64, got -1",
      "alarms.cpu_high.threshold: must be 0..100 %, got 120.0"]),
]


# Values every PutMetricAlarm (or the agents' PutMetricData) would be refused for: caught before any call,
# in --dry-run too (API reference: MetricDatum MetricName 1..255, Dimension names and values ASCII, no control
# characters, at least one non-whitespace character).
CLOUDWATCH_REFUSES = [
    (f'[[hosts]]\n{HOST}\n[[hosts.throughput_floors]]\nmetric = "{"r" * 300}"',
     [f'hosts[0].throughput_floors[0].metric: must be 1..255 characters, got "{"r" * 300}"']),
    (f'[[hosts]]\n{HOST}\n[[hosts.throughput_floors]]\nmetric = "débit"',
     ['hosts[0].throughput_floors[0].metric: must be ASCII only, got "débit"']),
    (f'[[hosts]]\n{HOST}\nmounts = ["/data\\tset"]',
     ["hosts[0].mounts: mount path '/data\\tset' must not contain control characters (tab, newline, ...), "
      'got ["/data\\tset"]']),
    (f'[[hosts]]\n{HOST}\ndimensions = {{ Team = "données" }}',
     ["hosts[0].dimensions: dimension Team value 'données' must be ASCII only, got {Team = \"données\"}"]),
    (f'[[hosts]]\n{HOST}\n[[hosts.throughput_floors]]\nmetric = "Rate"\ndimensions = {{ "Équipe" = "ml" }}',
     ["hosts[0].throughput_floors[0].dimensions: dimension name 'Équipe' must be ASCII only, "
      'got {"Équipe" = "ml"}']),
    ('namespace = ":Infra"', ['namespace: must not start with ":", got ":Infra"']),
]


def ids(cases: list[tuple[str, list[str]]]) -> list[str]:
    return [problems[0].split(":")[0] for _, problems in cases]


@pytest.mark.parametrize("mode", ["--yes", "--dry-run"])
@pytest.mark.parametrize(("spec", "problems"), INVALID_SPECS + CLOUDWATCH_REFUSES,
                         ids=ids(INVALID_SPECS + CLOUDWATCH_REFUSES))
def test_an_invalid_spec_lists_every_problem_exits_2_and_calls_nothing(
    untouched: Provisioner, spec: str, problems: list[str], mode: str
) -> None:
    run = untouched.run(spec, mode)
    assert (run.code, run.err.splitlines(), run.out) == (2, problems, "")
    assert untouched.recorder.calls == []


AWS_PROBLEMS = [
    ('[[endpoints]]\nname = "missing"',
     ['endpoints[0].name: no such SageMaker endpoint (DescribeEndpoint), got "missing"']),
    ('[[endpoints]]\nname = "ranker"\nvariants = ["AllTraffic"]\ninstance_type = "ml.x9.huge"',
     ['endpoints[0].instance_type: EC2 knows no instance type "x9.huge" (DescribeInstanceTypes), got "ml.x9.huge"']),
    ('[[hosts]]\nauto_scaling_group = "gone"',
     ['hosts[0].auto_scaling_group: no such Auto Scaling group (DescribeAutoScalingGroups), got "gone"']),
    ('[notifications.critical]\ntopic_arn = "arn:aws:sns:us-east-1:123456789012:pager"',
     ['notifications.critical.topic_arn: no such topic (GetTopicAttributes), '
      'got "arn:aws:sns:us-east-1:123456789012:pager"']),
    (f'runbook_url = "https://wiki.example.com/{"r" * 1000}"\n[[endpoints]]\n{ENDPOINT}\n'
     '[alarms]\n' + "\n".join(f"endpoint_{key} = {{ enabled = false }}" for key in (
         "5xx_rate", "4xx_rate", "model_error_rate", "error_rate", "latency_p90", "overhead_latency", "cpu_high",
         "memory_high", "gpu_high", "gpu_memory_high", "disk_high")),
     ['alarm "infrawatch/sagemaker/ranker/AllTraffic/endpoint_latency_p99": AlarmDescription must be at most 1024 '
      "characters, got 1175"]),
]


@pytest.mark.parametrize(("spec", "problems"), AWS_PROBLEMS, ids=ids(AWS_PROBLEMS))
def test_what_the_spec_names_must_exist_and_fit_cloudwatch_before_anything_is_written(
    provisioner: Provisioner, spec: str, problems: list[str]
) -> None:
    run = provisioner.run(spec, "--yes")
    assert (run.code, run.err.splitlines(), run.out) == (2, problems, "")
    assert provisioner.recorder.writes == Counter()


@pytest.mark.parametrize(("rate", "problem"), [
    ("0", "must be 0.1..1000 per second, got 0.0"),
    ("1e-9", "must be 0.1..1000 per second, got 1e-09"),
    ("1001", "must be 0.1..1000 per second, got 1001.0"),
    ("nan", "must be a number, got nan"),
    ("inf", "must be a number, got inf"),
])
def test_the_alarm_writes_flag_has_the_spec_keys_range_and_error(untouched: Provisioner, rate: str,
                                                                 problem: str) -> None:
    run = untouched.run(f"[[hosts]]\n{HOST}", "--yes", "--alarm-writes-per-second", rate)
    assert (run.code, run.err, run.out) == (2, f"--alarm-writes-per-second: {problem}\n", "")
    assert untouched.recorder.calls == []


def test_a_host_in_two_groups_found_in_aws_names_both_groups(provisioner: Provisioner) -> None:
    publish = provisioner.client("cloudwatch").put_metric_data
    publish(Namespace="InfraWatch", MetricData=[{"MetricName": "Heartbeat", "Value": 1.0, "Dimensions": [
        {"Name": "Component", "Value": "agent"}, {"Name": "InstanceId", "Value": "i-0000000000000000a"}]}])
    run = provisioner.run(f"[[hosts]]\n{HOST}\n[[hosts]]\ndiscover = true", "--yes")
    assert (run.code, run.err.splitlines(), run.out) == (2, [
        'hosts[1]: host "i-0000000000000000a" (discover = true) is also in hosts[0] (instance_ids)',
    ], "")
    assert provisioner.recorder.writes == Counter()
