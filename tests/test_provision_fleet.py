"""Fleet alarms: Metrics Insights queries from the agents' exact series, the documented quotas, composite paging
alarms (validated against botocore's service model: moto has no PutCompositeAlarm), a rerun that reads pages
only, and the CloudFormation export (cfn-lint clean, its resources the plan's one to one)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ParamValidationError
from botocore.stub import Stubber
from moto import mock_aws

from agent.schema import ConfigError, tomllib  # tomli on Python 3.10
from provisioning import composite, export, validate
from provisioning.apply import Applier
from provisioning.aws import DEFAULT_RATES, Account, Caller, RateLimiter
from provisioning.composite import CompositeDefinition
from provisioning.discovery import Inventory
from provisioning.plan import Planner
from provisioning.spec import parse
from provisioning.stack import desired_stack
from provisioning.state import ActualStack
from tests.fakes.aws import Provisioner, Run
from tests.fakes.host import FakeClock

ACCOUNT = Account("123456789012", "us-east-1", "aws")
CRITICAL = "arn:aws:sns:us-east-1:123456789012:ml-critical"
WARNING = "arn:aws:sns:us-east-1:123456789012:ml-warning"

HEADER = """
stack = "ml"
naming = "{naming}"
"""
FLEET = """
[[fleets]]
name = "training"
scope = "{scope}"
hosts = {hosts}
append_dimensions = ["InstanceId", "AutoScalingGroupName"]
dimensions = {{ Cluster = "a" }}
filter = {{ AutoScalingGroupName = "train" }}
"""
PAGED = """
[fleets.paging]
enabled = true
"""
REPORTING = """
[fleets.reporting]
enabled = true
min_hosts = {min_hosts}
"""


def fleet_spec(naming: str = "native", scope: str = "fleet", hosts: int = 100, extra: str = "") -> str:
    return HEADER.format(naming=naming) + FLEET.format(scope=scope, hosts=hosts) + extra


def desired(text: str) -> Any:
    return desired_stack(parse(tomllib.loads(text)), ACCOUNT, Inventory((), ()))


@pytest.fixture
def provisioner(tmp_path: Path) -> Iterator[Provisioner]:
    with mock_aws():
        yield Provisioner(tmp_path)


def heartbeats(provisioner: Provisioner, hosts: int, naming: str = "native") -> None:
    """Each host's agent publishing its Heartbeat with the fleet's dimensions, as the agent does."""
    namespace = "CWAgent" if naming == "cwagent" else "InfraWatch"
    provisioner.client("cloudwatch").put_metric_data(Namespace=namespace, MetricData=[
        {"MetricName": "Heartbeat", "Value": 1.0, "Timestamp": dt.datetime.now(dt.timezone.utc),
         "Dimensions": [{"Name": "InstanceId", "Value": f"i-{index:017x}"},
                        {"Name": "AutoScalingGroupName", "Value": "train"}, {"Name": "Cluster", "Value": "a"},
                        {"Name": "Component", "Value": "agent"}]}
        for index in range(hosts)
    ])
    provisioner.recorder.clear()


# --- the queries -----------------------------------------------------------------------------------------


def test_one_query_per_kind_selects_exactly_the_series_the_agents_publish_under_each_profile() -> None:
    native = {alarm.name: alarm for alarm in desired(fleet_spec()).alarms}
    assert native["ml/training/gpu_temperature_high"].queries[0].request() == {
        "Id": "fleet", "ReturnData": True, "Period": 60,
        "Expression": 'SELECT MAX(GPUTemperature) FROM SCHEMA("InfraWatch", AutoScalingGroupName, Cluster, GPU, '
                      "InstanceId) WHERE AutoScalingGroupName = 'train' AND Cluster = 'a' GROUP BY InstanceId, GPU "
                      "ORDER BY MAX() DESC LIMIT 500",
    }
    cwagent = {alarm.name: alarm for alarm in desired(fleet_spec("cwagent")).alarms}
    assert cwagent["ml/training/gpu_temperature_high"].queries[0].expression == (
        'SELECT MAX(nvidia_smi_temperature_gpu) FROM SCHEMA("CWAgent", AutoScalingGroupName, Cluster, InstanceId, '
        "arch, index, name) WHERE AutoScalingGroupName = 'train' AND Cluster = 'a' GROUP BY InstanceId, arch, "
        "index, name ORDER BY MAX() DESC LIMIT 500"
    )
    assert cwagent["ml/training/cpu_high"].queries[0].expression == (
        'SELECT AVG(cpu_usage_active) FROM SCHEMA("CWAgent", AutoScalingGroupName, Cluster, InstanceId, cpu) '
        "WHERE AutoScalingGroupName = 'train' AND Cluster = 'a' AND cpu = 'cpu-total' GROUP BY InstanceId "
        "ORDER BY AVG() DESC"
    )
    assert native["ml/training/storage_high"].queries[0].expression.endswith(
        "AND MountPath = '/' GROUP BY InstanceId ORDER BY MAX() DESC"
    )
    unhealthy = native["ml/training/gpu_unhealthy"]
    assert (unhealthy.comparison, unhealthy.threshold, unhealthy.datapoints_to_alarm, unhealthy.evaluation_periods,
            unhealthy.treat_missing_data) == ("LessThanThreshold", 1.0, 1, 1, "notBreaching")
    assert "ORDER BY MIN() ASC" in unhealthy.queries[0].expression  # the worst series of a "below" alarm first


def test_alarm_count_does_not_grow_with_the_fleet() -> None:
    counts = {hosts: len(desired(fleet_spec(hosts=hosts)).alarms) for hosts in (10, 100, 1000)}
    assert counts == {10: 9, 100: 9, 1000: 9}  # every host kind but the heartbeat, which is said why
    stack = desired(fleet_spec(hosts=1000))
    assert stack.series["ml/training/gpu_temperature_high"] == 8000
    assert any("no heartbeat_missing alarm" in note and "cannot see a dead host" in note for note in stack.notes)


def test_a_query_over_10000_metrics_is_split_per_gpu_and_refused_when_a_part_is_too_big(tmp_path: Path) -> None:
    split = {alarm.name: alarm for alarm in desired(fleet_spec(hosts=2000)).alarms}
    assert sorted(name for name in split if "gpu_temperature_high" in name) == [
        f"ml/training/gpu_temperature_high@gpu{index}" for index in range(8)
    ]
    assert "GPU = '3'" in split["ml/training/gpu_temperature_high@gpu3"].queries[0].expression
    with mock_aws():
        run = Provisioner(tmp_path).run(fleet_spec(hosts=20_000), "--dry-run")
    assert run.code == 2
    assert ("fleets[0].hosts: the cpu_high query would scan 20,000 metrics (hosts = 20000), more than the 10,000 "
            "a Metrics Insights query may; split the fleet with a filter") in run.err.splitlines()
    assert "Traceback" not in run.err


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "line"), [
    (fleet_spec().replace('filter = { AutoScalingGroupName = "train" }', 'filter = { InstanceType = "p5.48xlarge" }'),
     'fleets[0].filter.InstanceType: the agents publish no InstanceType (their append_dimensions are '
     '["InstanceId", "AutoScalingGroupName"]), got "p5.48xlarge"'),
    (fleet_spec() + "[alarms.cpu_high]\nperiod = 30\n",
     'alarms.cpu_high.period: must be at least 60 s for the Metrics Insights alarms of fleet "training" '
     "(no sub-minute data), got 30"),
    (fleet_spec() + "[alarms.cpu_high]\nperiod = 3600\nevaluation_periods = 4\ndatapoints = 1\n",
     "alarms.cpu_high.evaluation_periods: period * evaluation_periods must be at most 10800 s for fleet "
     '"training" (Metrics Insights alarms see 3 hours), got 3600 * 4'),
    (HEADER.format(naming="native") + "".join(
        FLEET.format(scope="fleet", hosts=10).replace('"training"', f'"f{index}"') for index in range(23)),
     "fleets: 207 Metrics Insights alarms, more than the 200 CloudWatch allows per account and Region; fewer "
     'fleets, fewer alarm kinds, or scope = "host"'),
    (fleet_spec(extra=PAGED + 'suppressor = "maintenance"\n'),
     'fleets[0].paging.suppressor: no such alarm in the spec or the account (DescribeAlarms), got "maintenance"'),
    (fleet_spec(scope="host").replace('filter = { AutoScalingGroupName = "train" }', ""),
     'fleets[0].filter: scope "host" names each host\'s series exactly, so every append_dimension but InstanceId '
     'needs a value here, missing ["AutoScalingGroupName"]'),
    (fleet_spec(scope="host", extra=PAGED),
     'fleets[0].paging.enabled: the alarms of a scope = "host" fleet are named like [[hosts]] alarms, which the '
     "EventBridge rule pages by name, so they would page beside the composites; use scope = \"fleet\", or "
     "events.notify_critical_topic = false"),
    (fleet_spec().replace('name = "training"', 'name = "host"'),
     'fleets[0].name: must not be host or sagemaker: alarm names use them for other targets, got "host"'),
    (fleet_spec(extra=REPORTING.format(min_hosts=0)),
     "fleets[0].reporting.min_hosts: must be 1..1000000, got 0"),
    (fleet_spec(hosts=100, extra=REPORTING.format(min_hosts=101)),
     "fleets[0].reporting.min_hosts: must be at most hosts (100), or the alarm is always in ALARM, got 101"),
    (fleet_spec(scope="host", extra=REPORTING.format(min_hosts=2)),
     'fleets[0].reporting.enabled: scope "host" has a heartbeat_missing alarm per host already; the '
     'hosts_reporting count is for scope "fleet", got true'),
])
def test_bad_fleet_input_exits_2_naming_the_key(provisioner: Provisioner, spec: str, line: str) -> None:
    run = provisioner.run(spec, "--dry-run")
    assert run.code == 2
    assert line in run.err.splitlines()
    assert "Traceback" not in run.err
    assert provisioner.recorder.writes == Counter()


def test_a_composite_over_more_than_100_alarms_exits_2(provisioner: Provisioner) -> None:
    heartbeats(provisioner, 5)  # 5 hosts × 25 critical alarms each (3 per GPU, the heartbeat)
    run = provisioner.run(fleet_spec(scope="host", extra=PAGED), "--dry-run")
    assert run.code == 2
    assert ('fleets[0].paging: the rule of ml/training/critical combines 125 alarms, more than the 100 a composite '
            'alarm may; split the fleet or use scope = "fleet"') in run.err.splitlines()


def test_composite_rules_are_checked_for_length_and_cycles() -> None:
    spec = parse({"stack": "ml"})
    long = CompositeDefinition("ml/x", "", composite.rule(f"ml/{'a' * 200}{index}" for index in range(50)))
    first = CompositeDefinition("ml/a", "", composite.rule(["ml/b"]))
    second = CompositeDefinition("ml/b", "", composite.rule(["ml/a"]))
    found = composite.problems(spec, [long, first, second], [])
    # 10 children of 213 characters (`ALARM("ml/` + 200 + one digit + `")`), 40 of 214, 49 " OR "
    assert 'composite "ml/x": the rule of ml/x is 10,886 characters, more than 10,240' in found
    assert 'composite "ml/a": its rule reaches itself through ml/a -> ml/b -> ml/a' in found
    assert 'composite "ml/b": its rule reaches itself through ml/b -> ml/a -> ml/b' in found
    fits = CompositeDefinition("ml/y", "", composite.rule(f"ml/{'a' * 200}{index}" for index in range(47)))
    assert len(fits.rule) == 10 * 213 + 37 * 214 + 46 * 4 == 10_232
    assert not [problem for problem in composite.problems(spec, [fits], []) if "characters" in problem]


# --- composites: botocore's service model, and moto's missing PutCompositeAlarm ---------------------------


def test_composite_writes_satisfy_the_real_putcompositealarm_model() -> None:
    stack = desired(fleet_spec(extra=PAGED + 'suppressor = "ml/training/cpu_high"\nsuppressor_wait = 300\n'))
    plan = Planner(stack, ActualStack({}, {}, {}, None), prune=False).plan()
    writes = [write for change in plan.changes for write in change.writes if write.operation == "PutCompositeAlarm"]
    assert [write.params["AlarmName"] for write in writes] == ["ml/training/critical", "ml/training/warning"]
    assert writes[0].params["AlarmRule"] == (
        'ALARM("ml/training/gpu_ecc_errors") OR ALARM("ml/training/gpu_unhealthy") OR '
        'ALARM("ml/training/gpu_xid_errors")'
    )
    # The EventBridge rule pages the critical composite by name, with a readable message; the warning one notifies
    # its topic itself.
    assert (writes[0].params["AlarmActions"], writes[0].params["ActionsSuppressor"],
            writes[0].params["ActionsSuppressorWaitPeriod"], writes[0].params["ActionsSuppressorExtensionPeriod"]) == (
        [], "ml/training/cpu_high", 300, 300)
    assert writes[1].params["AlarmActions"] == [WARNING]
    assert stack.rule is not None
    fleet_patterns = [item["wildcard"] for item in json.loads(stack.rule.pattern)["detail"]["alarmName"]
                      if item["wildcard"].startswith("ml/training/")]
    assert fleet_patterns == ["ml/training/critical"]  # never the children
    # The children notify nothing: only the composites page.
    assert {alarm.alarm_actions for alarm in stack.alarms} == {()}
    client = boto3.client("cloudwatch", region_name="us-east-1")
    stubber = Stubber(client)
    for write in writes:
        stubber.add_response("put_composite_alarm", {}, dict(write.params))
    with stubber:
        caller = Caller({"cloudwatch": client}, RateLimiter(DEFAULT_RATES, clock=FakeClock(), sleep=lambda _: None))
        composites = [change for change in plan.changes if change.kind == "composite"]
        outcome = Applier(caller, lambda _: None).apply(type(plan)(tuple(composites)))
    assert ([change.name for change in outcome.applied], outcome.failed) == (
        ["ml/training/critical", "ml/training/warning"], [])
    stubber.assert_no_pending_responses()
    with Stubber(client) as strict, pytest.raises(ParamValidationError):  # the model is what checks them
        strict.add_response("put_composite_alarm", {})
        client.put_composite_alarm(**{**writes[0].params, "ActionsSuppressorWaitPeriod": "300"})


def test_on_moto_the_composites_are_reported_as_not_implemented_and_everything_else_applies(
    provisioner: Provisioner,
) -> None:
    run = provisioner.run(fleet_spec(extra=PAGED), "--yes")
    assert run.code == 0, run.err
    assert ("skipped + create composite ml/training/critical: this endpoint does not implement PutCompositeAlarm "
            "(moto does not; CloudWatch does)") in run.lines
    assert ("2 composite alarms not created: the endpoint does not implement PutCompositeAlarm, so their fleets' "
            "alarms notify nothing here.") in run.lines
    described = provisioner.client("cloudwatch").describe_alarms(AlarmNames=["ml/training/gpu_temperature_high"])
    alarm = described["MetricAlarms"][0]
    assert alarm["Metrics"][0]["Expression"].startswith("SELECT MAX(GPUTemperature) FROM SCHEMA(")
    assert (alarm["Metrics"][0]["Period"], alarm["AlarmActions"]) == (60, [])


# --- the rerun -----------------------------------------------------------------------------------------


def test_a_rerun_reads_alarm_pages_only_and_writes_nothing(provisioner: Provisioner) -> None:
    spec = fleet_spec() + '[[hosts]]\ninstance_ids = ["i-0000000000000000a", "i-0000000000000000b", ' \
        '"i-0000000000000000c"]\ngpus = 8\n'
    assert provisioner.run(spec, "--yes").code == 0
    run = provisioner.run(spec, "--yes")
    assert run.code == 0
    calls = Counter(provisioner.recorder.calls)
    alarms = 3 * 45 + 9
    assert provisioner.recorder.writes == Counter()
    # DescribeAlarms paged as CloudWatch pages it (100 a page): ceil(144 / 100) = 2 calls; then one call per topic
    # (2), dashboard (1) and rule (1), and the rule's targets, which DescribeRule does not return. 086c3d7 also
    # read GetCallerIdentity, the topics' and the rule's tags, ListDashboards, GetMetricData and the responses the
    # spec does not have.
    assert calls == Counter({"DescribeAlarms": 2, "GetTopicAttributes": 2, "GetDashboard": 1, "DescribeRule": 1,
                             "ListTargetsByRule": 1}), calls
    assert f"Plan: 0 to create, 0 to update, 0 to delete, {alarms + 2 + 1 + 1} unchanged." in run.lines


# --- host scope ----------------------------------------------------------------------------------------


def test_host_scope_alarms_each_host_publishing_now_with_every_dimension_its_series_carry(
    provisioner: Provisioner,
) -> None:
    heartbeats(provisioner, 2)
    run = provisioner.run(fleet_spec(scope="host"), "--dry-run", "--detail")
    assert run.code == 0, run.err
    host = "i-00000000000000000"
    assert f"+ create alarm ml/host/{host}/cpu_high" in run.lines
    detail = run.lines[run.lines.index(f"+ create alarm ml/host/{host}/cpu_high") + 1]
    assert detail == (f"    InfraWatch CPUUtilization {{AutoScalingGroupName=train, Cluster=a, InstanceId={host}}} "
                      "Average > 90 for 3 of 5 × 60 s (missing: missing)")
    assert "note: fleet training: scope host, 2 hosts publishing now, 90 alarms; hosts launched later need a rerun" \
        in run.lines


def test_fleet_scope_without_a_host_count_counts_the_hosts_publishing_now(provisioner: Provisioner) -> None:
    heartbeats(provisioner, 3)
    run = provisioner.run(fleet_spec(hosts=0), "--dry-run")
    assert run.code == 0, run.err
    # 3 hosts: 3 series each for CPU, memory, storage (one mount) and host GPU utilization, 24 for each GPU kind
    # and the fleet dashboard, which graphs the fleet's queries (086c3d7: no dashboard for a fleet-scope group).
    assert ("Cost of the stack: 9 alarms (9 Metrics Insights alarms of them) over 132 metrics and 1 dashboard, "
            "about $16.20/month (us-east-1 list prices, 2026-12; an account's first 3 dashboards and 10 alarm metrics "
            "are free).") in run.lines


# --- the CloudFormation export -------------------------------------------------------------------------


SUBSCRIPTIONS = ('[[notifications.critical.subscriptions]]\nprotocol = "email"\nendpoint = "oncall@example.com"\n'
                 '[events]\ntarget_arn = "arn:aws:lambda:us-east-1:123456789012:function:respond"\n')
EXAMPLE = Path(__file__).resolve().parent.parent / "provisioning" / "examples" / "alarms.toml"
ROLLOUT = f'[rollout]\nenabled = true\nversion = "0.2.0"\ntag_value = "training"\nsha256 = "{"ab" * 32}"\n'


@dataclass(frozen=True)
class Export:
    run: Run  # provision-alarms --export cloudformation
    dry: Run | None  # provision-alarms --dry-run on the same spec and account, where a test compares the plan
    lint: list[str]  # what cfn-lint found in this template alone


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Export]:
    """Every template this module lints, exported once and checked by one cfn-lint process: its start-up
    (loading the resource schemas, about 2 s) is most of a lint, so one process per template cost that each
    time. Findings are told apart by the file cfn-lint names in each (`--format json`)."""
    directory = tmp_path_factory.mktemp("exports")
    runs: dict[str, tuple[Run, Run | None]] = {}
    for naming in ("native", "cwagent"):
        with mock_aws():
            provisioner = Provisioner(directory)
            heartbeats(provisioner, 2, naming)
            for scope in ("fleet", "host"):
                # A paged host-scope fleet needs the rule not to page by name (its children are named like [[hosts]]).
                routing = "notify_critical_topic = false\n" if scope == "host" else ""
                text = fleet_spec(naming, scope, extra=PAGED) + SUBSCRIPTIONS + routing
                runs[f"{naming}-{scope}"] = (provisioner.run(text, "--export", "cloudformation"),
                                             provisioner.run(text, "--dry-run"))
    with mock_aws():
        runs["example"] = (Provisioner(directory).run(EXAMPLE.read_text() + ROLLOUT, "--export", "cloudformation"),
                           None)
    names = {}
    for name, (run, _) in runs.items():
        path = directory / f"{name}.json"
        path.write_text(run.out)
        names[str(path)] = name
    cfn_lint = Path(sys.executable).with_name("cfn-lint")  # the dev extra installs it beside the interpreter
    lint = subprocess.run([str(cfn_lint), "--format", "json", *names], capture_output=True, text=True, check=False)
    found: dict[str, list[str]] = {name: [] for name in runs}
    for match in json.loads(lint.stdout):
        found[names[match["Filename"]]].append(
            f"{match['Rule']['Id']} line {match['Location']['Start']['LineNumber']}: {match['Message']}")
    # cfn-lint exits 0 exactly when it found nothing at any level; anything else with no finding is a crash.
    assert (lint.returncode == 0) == (not any(found.values())), lint.stderr
    return {name: Export(run, dry, found[name]) for name, (run, dry) in runs.items()}


@pytest.mark.parametrize("naming", ["native", "cwagent"])
def test_the_export_is_cfn_lint_clean_for_both_scopes_and_holds_the_plans_resources(
    exports: dict[str, Export], naming: str
) -> None:
    for scope in ("fleet", "host"):
        exported = exports[f"{naming}-{scope}"]
        assert exported.run.code == 0, exported.run.err
        template = json.loads(exported.run.out)
        assert exported.dry is not None
        planned = {tuple(line.split(" ", 3)[2:4]) for line in exported.dry.lines if line.startswith("+ create ")}
        assert export.resources(template, ACCOUNT) == planned
        assert template["Parameters"]["CriticalSubscription1"]["Default"] == "oncall@example.com"
        assert template["Parameters"]["AutomatedResponseArn"]["Default"].endswith(":function:respond")
        kinds = Counter(resource["Type"] for resource in template["Resources"].values())
        assert kinds["AWS::CloudWatch::CompositeAlarm"] == 2
        assert kinds["AWS::SNS::TopicPolicy"] == kinds["AWS::SNS::Topic"] == 2
        assert (scope, exported.lint) == (scope, [])


def test_the_export_names_the_account_and_region_only_through_cloudformation(provisioner: Provisioner) -> None:
    run = provisioner.run(fleet_spec(extra=PAGED), "--export", "cloudformation")
    template = json.loads(run.out)
    assert "123456789012" not in run.out and "us-east-1" not in run.out
    composite_alarm = next(resource for resource in template["Resources"].values()
                           if resource["Metadata"]["infrawatch"]["name"] == "ml/training/critical")
    warning = next(resource for resource in template["Resources"].values()
                   if resource["Metadata"]["infrawatch"]["name"] == "ml/training/warning")
    assert warning["Properties"]["AlarmActions"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:ml-warning"}
    ]
    children = {export.logical_id("Alarm", f"ml/training/{key}")
                for key in ("gpu_ecc_errors", "gpu_unhealthy", "gpu_xid_errors")}
    assert children <= set(composite_alarm["DependsOn"])
    assert provisioner.recorder.writes == Counter()


def test_the_example_exports_every_resource_kind(exports: dict[str, Export]) -> None:
    exported = exports["example"]
    assert exported.run.code == 0, exported.run.err
    kinds = Counter(resource["Type"] for resource in json.loads(exported.run.out)["Resources"].values())
    assert kinds == Counter({
        "AWS::CloudWatch::Alarm": 118 + 4, "AWS::CloudWatch::CompositeAlarm": 2, "AWS::CloudWatch::Dashboard": 2,
        "AWS::SNS::Topic": 2, "AWS::SNS::TopicPolicy": 2, "AWS::SNS::Subscription": 3, "AWS::Events::Rule": 2,
        "AWS::SSM::Document": 1 + 1, "AWS::SSM::Association": 1,  # rollout's document and the response's
        "AWS::IAM::Role": 2,  # the responses: 4 status check alarms, document, 2 roles, rule
    })
    assert exported.lint == []


# --- every quota at its limit and one past it ------------------------------------------------------------


def problems_of(text: str) -> list[str]:
    try:
        desired(text)
    except ConfigError as error:
        return error.problems
    return []


def test_a_query_of_exactly_10000_metrics_is_kept_and_one_more_is_refused() -> None:
    assert problems_of(fleet_spec(hosts=10_000)) == []  # GPU kinds split per GPU: 10,000 each
    assert problems_of(fleet_spec(hosts=10_001))[0].startswith(
        "fleets[0].hosts: the cpu_high query would scan 10,001 metrics (hosts = 10001), more than the 10,000")


def test_500_series_are_returned_as_they_are_and_501_keep_the_worst_500() -> None:
    at = {alarm.name: alarm.queries[0].expression for alarm in desired(fleet_spec(hosts=500)).alarms}
    past = {alarm.name: alarm.queries[0].expression for alarm in desired(fleet_spec(hosts=501)).alarms}
    assert at["ml/training/cpu_high"].endswith("ORDER BY AVG() DESC")
    assert past["ml/training/cpu_high"].endswith("ORDER BY AVG() DESC LIMIT 500")


def test_200_insights_alarms_are_allowed_and_201_are_not() -> None:
    # 10 kinds per fleet with gpu_idle enabled; a fleet without GPUs adds cpu, memory and storage only.
    fleets = "".join(FLEET.format(scope="fleet", hosts=10).replace('"training"', f'"f{index}"') for index in range(20))
    text = HEADER.format(naming="native") + fleets + "[alarms.gpu_idle]\nenabled = true\n"
    assert len(desired(text).series) == 200
    assert problems_of(text) == []
    extra = FLEET.format(scope="fleet", hosts=10).replace('"training"', '"cpu-only"') + "gpus = 0\n"
    assert problems_of(HEADER.format(naming="native") + fleets + extra + "[alarms.gpu_idle]\nenabled = true\n") == [
        "fleets: 203 Metrics Insights alarms, more than the 200 CloudWatch allows per account and Region; fewer "
        'fleets, fewer alarm kinds, or scope = "host"']


def test_three_hours_of_evaluation_are_allowed_and_a_minute_more_is_not() -> None:
    assert problems_of(fleet_spec() + "[alarms.cpu_high]\nperiod = 60\nevaluation_periods = 180\n") == []
    assert problems_of(fleet_spec() + "[alarms.cpu_high]\nperiod = 60\nevaluation_periods = 181\n") == [
        "alarms.cpu_high.evaluation_periods: period * evaluation_periods must be at most 10800 s for fleet "
        '"training" (Metrics Insights alarms see 3 hours), got 60 * 181']


def test_a_composite_of_100_alarms_is_allowed_and_101_are_not() -> None:
    spec = parse({"stack": "ml"})
    children = [f"ml/a{index}" for index in range(101)]
    alarms = [type("Named", (), {"name": name})() for name in children]
    at = CompositeDefinition("ml/x", "", composite.rule(children[:100]))
    past = CompositeDefinition("ml/x", "", composite.rule(children))
    assert composite.problems(spec, [at], alarms) == []
    assert composite.problems(spec, [past], alarms) == [
        'composite "ml/x": the rule of ml/x combines 101 alarms, more than the 100 a composite alarm may; split '
        'the fleet or use scope = "fleet"']


def test_a_dead_host_lowers_the_fleets_heartbeat_count_which_pages_through_the_critical_composite() -> None:
    # A host that stops publishing leaves every GROUP BY query's result (a contributor that is not returned cannot
    # breach); the count of heartbeats without GROUP BY is one series, which it lowers.
    stack = desired(fleet_spec(extra=PAGED + REPORTING.format(min_hosts=95) + "publish_interval = 30\n"))
    alarm = next(item for item in stack.alarms if item.name == "ml/training/hosts_reporting")
    assert alarm.queries[0].expression == (
        'SELECT COUNT(Heartbeat) FROM SCHEMA("InfraWatch", AutoScalingGroupName, Cluster, Component, InstanceId) '
        "WHERE AutoScalingGroupName = 'train' AND Cluster = 'a' AND Component = 'agent'")
    # Agents publishing every 30 s send 2 heartbeats a minute each: 95 hosts are 190 of them.
    assert (alarm.queries[0].period, alarm.threshold, alarm.comparison) == (60, 190.0, "LessThanThreshold")
    assert (alarm.datapoints_to_alarm, alarm.evaluation_periods, alarm.treat_missing_data) == (3, 3, "breaching")
    assert (alarm.alarm_actions, alarm.ok_actions) == ((), ())  # a paged fleet's child notifies nothing
    critical = next(item for item in stack.composites if item.name == "ml/training/critical")
    assert 'ALARM("ml/training/hosts_reporting")' in critical.rule
    assert stack.series["ml/training/hosts_reporting"] == 100  # counted against the Metrics Insights quotas
    slow = desired(fleet_spec(extra=REPORTING.format(min_hosts=95) + "publish_interval = 90\n"))
    slow_alarm = next(item for item in slow.alarms if item.name == "ml/training/hosts_reporting")
    # Every 90 s: a 120 s period holds at least one heartbeat of each live host.
    assert (slow_alarm.queries[0].period, slow_alarm.threshold) == (120, 95.0)
    assert "ml/training/hosts_reporting" not in {item.name for item in desired(fleet_spec()).alarms}


def test_the_fleet_dashboard_graphs_each_query_and_shows_the_fleets_alarms_and_composites() -> None:
    stack = desired(fleet_spec(extra=PAGED + REPORTING.format(min_hosts=95)))
    assert [dashboard.name for dashboard in stack.dashboards] == ["ml-us-east-1-fleet"]
    widgets = json.loads(stack.dashboards[0].body)["widgets"]
    graphs = [widget for widget in widgets if widget["type"] == "metric"]
    queries = {alarm.name.removeprefix("ml/training/"): alarm.queries[0] for alarm in stack.alarms}
    assert [graph["properties"]["title"] for graph in graphs] == [f"training: {key}" for key in queries]
    temperature = next(graph for graph in graphs if graph["properties"]["title"] == "training: gpu_temperature_high")
    assert temperature["properties"]["metrics"] == [[{
        "expression": queries["gpu_temperature_high"].expression, "id": "q0", "label": "gpu_temperature_high"}]]
    assert temperature["properties"]["period"] == queries["gpu_temperature_high"].period
    statuses = [widget for widget in widgets if widget["type"] == "alarm"]
    arn = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:ml/training/"
    assert [status["properties"]["alarms"] for status in statuses] == [
        [arn + key for key in queries] + [arn + "critical", arn + "warning"]]
    assert validate.dashboard_problems(stack.dashboards[0]) == []


def other_stacks_insights_alarms(provisioner: Provisioner, count: int) -> None:
    cloudwatch = provisioner.client("cloudwatch")
    query = 'SELECT MAX(CPUUtilization) FROM SCHEMA("AWS/EC2", InstanceId) GROUP BY InstanceId'
    for index in range(count):
        cloudwatch.put_metric_alarm(
            AlarmName=f"other/{index}", EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold",
            Metrics=[{"Id": "q", "ReturnData": True, "Period": 60, "Expression": query}],
        )
    cloudwatch.put_metric_alarm(  # metric math is not a Metrics Insights alarm
        AlarmName="other/math", EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold",
        Metrics=[{"Id": "m", "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": "AWS/EC2", "MetricName": "CPUUtilization"}, "Period": 60, "Stat": "Average"}},
                 {"Id": "e", "ReturnData": True, "Expression": "m * 2"}],
    )


def test_the_regions_200_insights_alarms_count_other_stacks_only_when_this_run_creates_some(
    provisioner: Provisioner,
) -> None:
    ours = len(desired(fleet_spec()).series)
    other_stacks_insights_alarms(provisioner, 200 - ours)
    at = provisioner.run(fleet_spec(), "--yes")  # exactly 200 in the Region: allowed
    assert at.code == 0, at.err
    rerun = provisioner.run(fleet_spec(), "--yes")  # creates no Metrics Insights alarm: no Region-wide read
    assert (rerun.code, provisioner.recorder.calls.count("DescribeAlarms")) == (0, 1)
    grown = provisioner.run(fleet_spec(extra=REPORTING.format(min_hosts=90)), "--yes")  # one more: 201
    assert grown.code == 2
    assert grown.err.splitlines() == [
        f"fleets: 201 Metrics Insights alarms in us-east-1 after this run ({ours + 1} of this spec, {200 - ours} "
        "already there from other stacks or kept), more than the 200 CloudWatch allows per account and Region; "
        "nothing was written"]
    assert provisioner.recorder.writes == Counter()
    # 200 - ours + ours + the math alarm, 100 a page (086c3d7 counted this spec's alarms only, and applied).
    assert provisioner.recorder.calls.count("DescribeAlarms") == 1 + 3
