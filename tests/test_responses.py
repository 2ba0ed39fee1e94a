"""Automated responses provisioned against moto: the document, both roles, the rule and its target, the
recover alarms; the plan shows them with their exact policies and limits; --prune removes them; parliament
finds nothing in the policies; the validator names instance types EC2 cannot recover."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import parliament
import pytest
import tomllib
from moto import mock_aws

from provisioning import export
from provisioning.aws import Account
from provisioning.discovery import Host, Inventory
from provisioning.responses import replace_response, shipped_document
from provisioning.spec import parse
from tests.fakes.aws import Provisioner, an_image

HOST = "i-0000000000000000a"
ACCOUNT = Account("123456789012", "us-east-1", "aws")
BASE = f"""
stack = "ml"

[[hosts]]
instance_ids = ["{HOST}"]
gpus = 1
"""
RESPONSES = """
[responses.replace_unhealthy_gpu_host]
enabled = true
auto_scaling_groups = ["trainers"]
outside_group = "stop"
max_replacements_per_day = 3
min_in_service = 4

[responses.recover_on_status_check]
enabled = true
reboot_on_instance_check = true
"""
SPEC = BASE + RESPONSES
AUTOMATION_ROLE = "ml-us-east-1-replace-gpu-host"
EVENTS_ROLE = "ml-us-east-1-start-replace"
DOCUMENT = "ml-ReplaceUnhealthyGpuHost"
RULE = "ml-replace-gpu-host"
WARNING_TOPIC = "arn:aws:sns:us-east-1:123456789012:ml-warning"


@pytest.fixture
def provisioner(tmp_path: Path) -> Iterator[Provisioner]:
    with mock_aws():
        yield Provisioner(tmp_path)


def planned() -> Any:
    spec = parse(tomllib.loads(SPEC))
    return replace_response(spec, ACCOUNT, Inventory((Host(HOST, (), ("0",), ("/",)),), ()), WARNING_TOPIC)


def role_policy(provisioner: Provisioner, role: str, name: str) -> str:
    document = provisioner.client("iam").get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def test_dry_run_shows_the_response_its_roles_exact_policies_and_limits_and_writes_nothing(
    provisioner: Provisioner,
) -> None:
    run = provisioner.run(SPEC, "--dry-run")
    assert (run.code, provisioner.recorder.writes) == (0, Counter())
    automation, events = planned().roles
    for line in (
        f"+ create document {DOCUMENT}", f"+ create role {AUTOMATION_ROLE}", f"+ create role {EVENTS_ROLE}",
        f"+ create rule {RULE}", f"+ create alarm ml/host/{HOST}/status_check_system",
        f"+ create alarm ml/host/{HOST}/status_check_instance",
        "    limits: at most 3 health replacements per group per UTC day; never when the group has 4 InService "
        "instances or fewer.",
        "    groups: trainers; hosts in no group are stopped.",
        f"    role {AUTOMATION_ROLE} policy replace-unhealthy-gpu-host: {automation.policy}",
        f"    role {AUTOMATION_ROLE} trust: {automation.trust}",
        f"    role {EVENTS_ROLE} policy start-replace-unhealthy-gpu-host: {events.policy}",
        "Response recover_on_status_check: 2 status check alarms with EC2 actions reboot, recover.",
    ):
        assert line in run.lines


def test_apply_creates_the_document_roles_rule_target_and_recover_alarms_and_a_rerun_writes_nothing(
    provisioner: Provisioner,
) -> None:
    assert provisioner.run(SPEC, "--yes").code == 0
    ssm = provisioner.client("ssm")
    described = ssm.describe_document(Name=DOCUMENT)["Document"]
    assert (described["DocumentType"], described["DocumentFormat"]) == ("Automation", "JSON")
    assert json.loads(ssm.get_document(Name=DOCUMENT)["Content"]) == json.loads(shipped_document())

    response = planned()
    automation, events = response.roles
    assert role_policy(provisioner, AUTOMATION_ROLE, "replace-unhealthy-gpu-host") == automation.policy
    assert role_policy(provisioner, EVENTS_ROLE, "start-replace-unhealthy-gpu-host") == events.policy
    iam = provisioner.client("iam")
    principals = {role: iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
                  for role in (AUTOMATION_ROLE, EVENTS_ROLE)}
    assert principals == {AUTOMATION_ROLE: {"Service": "ssm.amazonaws.com"},
                          EVENTS_ROLE: {"Service": "events.amazonaws.com"}}

    target = provisioner.client("events").list_targets_by_rule(Rule=RULE)["Targets"]
    assert [(item["Id"], item["Arn"], item["RoleArn"]) for item in target] == [(
        "replace-gpu-host",
        f"arn:aws:ssm:us-east-1:123456789012:automation-definition/{DOCUMENT}:$DEFAULT",
        f"arn:aws:iam::123456789012:role/{EVENTS_ROLE}",
    )]
    template = json.loads(target[0]["InputTransformer"]["InputTemplate"].replace("<instance>", HOST)
                          .replace("<alarm>", "a"))
    assert {key: template[key] for key in ("MinInService", "MaxReplacementsPerDay", "OutsideGroupAction")} == {
        "MinInService": ["4"], "MaxReplacementsPerDay": ["3"], "OutsideGroupAction": ["stop"],
    }
    pattern = json.loads(provisioner.client("events").describe_rule(Name=RULE)["EventPattern"])
    assert pattern["detail"] == {"alarmName": [{"wildcard": "ml/host/*/gpu_unhealthy@gpu*"}],
                                 "state": {"value": ["ALARM"]}}

    cloudwatch = provisioner.client("cloudwatch")
    alarms = cloudwatch.describe_alarms(AlarmNamePrefix=f"ml/host/{HOST}/status_check")["MetricAlarms"]
    assert {(alarm["MetricName"], tuple(alarm["AlarmActions"])) for alarm in alarms} == {
        ("StatusCheckFailed_System", ("arn:aws:automate:us-east-1:ec2:recover", WARNING_TOPIC)),
        ("StatusCheckFailed_Instance", ("arn:aws:automate:us-east-1:ec2:reboot", WARNING_TOPIC)),
    }
    assert {alarm["Namespace"] for alarm in alarms} == {"AWS/EC2"}

    rerun = provisioner.run(SPEC, "--yes")
    assert (rerun.code, provisioner.recorder.writes) == (0, Counter())


def test_a_changed_limit_rewrites_only_the_rule_target(provisioner: Provisioner) -> None:
    provisioner.run(SPEC, "--yes")
    run = provisioner.run(SPEC.replace("max_replacements_per_day = 3", "max_replacements_per_day = 1"), "--yes")
    assert run.code == 0
    assert provisioner.recorder.writes == Counter({"PutTargets": 1})


def test_prune_removes_the_responses_the_spec_no_longer_declares(provisioner: Provisioner) -> None:
    provisioner.run(SPEC, "--yes")
    kept = provisioner.run(BASE, "--yes")
    # Without --prune the responses the spec no longer names are not even read (a rerun stays cheap): nothing
    # about them in the plan, nothing deleted.
    assert not [line for line in kept.lines if AUTOMATION_ROLE in line]
    assert not {"GetRole", "DescribeDocument"} & set(provisioner.recorder.calls)
    assert provisioner.recorder.writes == Counter({"PutDashboard": 1})  # its alarm widget lists the recover alarms
    listed = provisioner.run(BASE, "--dry-run", "--prune", "--allow-mass-delete")
    assert f"- delete role {AUTOMATION_ROLE}" in listed.lines
    pruned = provisioner.run(BASE, "--yes", "--prune")
    assert pruned.code == 0
    assert provisioner.recorder.writes == Counter({
        "DeleteRolePolicy": 2, "DeleteRole": 2, "DeleteDocument": 1, "RemoveTargets": 1, "DeleteRule": 1,
        "DeleteAlarms": 1,
    })
    assert provisioner.client("iam").list_roles()["Roles"] == []
    assert provisioner.client("events").list_rules(NamePrefix=RULE)["Rules"] == []
    rerun = provisioner.run(BASE, "--yes", "--prune")
    assert (rerun.code, provisioner.recorder.writes) == (0, Counter())


def test_parliament_finds_nothing_and_every_action_is_named_and_scoped() -> None:
    for role in planned().roles:
        assert parliament.analyze_policy_string(role.policy).findings == []
        for statement in json.loads(role.policy)["Statement"]:
            assert all("*" not in action for action in statement["Action"])
    automation = json.loads(planned().roles[0].policy)["Statement"]
    scoped = {statement["Sid"]: statement["Resource"] for statement in automation}
    assert scoped == {
        "ReadGroupsAndTheirHistory": ["*"],  # Describe* of Auto Scaling support no resource-level permissions
        "MarkUnhealthyInTheNamedGroups": [
            "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*:autoScalingGroupName/trainers"],
        "StopHostsInNoGroup": [f"arn:aws:ec2:us-east-1:123456789012:instance/{HOST}"],
        "NotifyTheWarningTopic": [WARNING_TOPIC],
    }


def test_parliament_would_catch_a_wildcard_action() -> None:
    policy = planned().roles[0].policy.replace("autoscaling:SetInstanceHealth", "autoscaling:*")
    assert parliament.analyze_policy_string(policy).findings != []


def test_an_instance_type_ec2_cannot_recover_is_named(provisioner: Provisioner) -> None:
    ec2 = provisioner.client("ec2")
    image = an_image(ec2)
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="p5.48xlarge")
    instance_id = instance["Instances"][0]["InstanceId"]
    spec = BASE.replace(f'"{HOST}"', f'"{instance_id}", "{HOST}"') + RESPONSES
    run = provisioner.run(spec, "--dry-run")
    assert run.code == 2
    assert run.err.splitlines() == [
        f'responses.recover_on_status_check: {instance_id} is a "p5.48xlarge", which EC2 cannot recover '
        "(DescribeInstanceTypes AutoRecoverySupported is false); set enabled = false or move it"
    ]


def test_an_instance_ec2_does_not_know_is_named_in_a_warning_and_keeps_its_alarm(provisioner: Provisioner) -> None:
    run = provisioner.run(SPEC, "--dry-run")
    assert run.code == 0
    assert (f"warning: responses.recover_on_status_check: EC2 does not know {HOST} (DescribeInstances), so "
            "whether their instance type can be recovered is not checked") in run.err.splitlines()
    assert f"+ create alarm ml/host/{HOST}/status_check_system" in run.lines


@pytest.mark.parametrize(("extra", "problem"), [
    ('[alarms.gpu_unhealthy]\nenabled = false\n[responses.replace_unhealthy_gpu_host]\nenabled = true\n'
     'auto_scaling_groups = ["g"]\n',
     "responses.replace_unhealthy_gpu_host.alarms: alarms.gpu_unhealthy is disabled, so it cannot start the "
     "response; enable it or drop it"),
    ('[responses.replace_unhealthy_gpu_host]\nenabled = true\n',
     'responses.replace_unhealthy_gpu_host: no Auto Scaling group to act on (hosts[].auto_scaling_group or '
     'auto_scaling_groups) and outside_group = "nothing": the response could only notify'),
    ('[responses.replace_unhealthy_gpu_host]\nalarms = ["gpu_idle"]\n',
     'responses.replace_unhealthy_gpu_host.alarms: must be a non-empty list of "gpu_unhealthy", '
     '"gpu_xid_errors", "gpu_ecc_errors", got ["gpu_idle"]'),
    ('[responses.replace_unhealthy_gpu_host]\nmax_replacements_per_day = 0\n',
     "responses.replace_unhealthy_gpu_host.max_replacements_per_day: must be 1..50, got 0"),
    ('[responses.replace_unhealthy_gpu_host]\nenabled = true\nauto_scaling_groups = ["g"]\n',
     'stack: the response\'s SSM document is named after the stack, and SSM reserves names starting with aws, '
     'amazon, amzn, got "AWS-ml"'),
])
def test_spec_problems_name_the_key(provisioner: Provisioner, extra: str, problem: str) -> None:
    base = BASE.replace('stack = "ml"', 'stack = "AWS-ml"') if "AWS-ml" in problem else BASE
    run = provisioner.run(base + extra, "--dry-run")
    assert (run.code, run.err.splitlines()) == (2, [problem])


def test_a_role_with_the_responses_name_but_not_this_stacks_tags_is_left_alone(provisioner: Provisioner) -> None:
    trust = '{"Version":"2012-10-17","Statement":[]}'
    provisioner.client("iam").create_role(RoleName=AUTOMATION_ROLE, AssumeRolePolicyDocument=trust)
    run = provisioner.run(SPEC, "--yes")
    assert run.code == 1
    assert f"! conflict role {AUTOMATION_ROLE} (exists without this stack's tags; left alone)" in run.lines
    assert provisioner.recorder.writes["PutRolePolicy"] == 1  # the events role only
    assert provisioner.client("iam").list_role_policies(RoleName=AUTOMATION_ROLE)["PolicyNames"] == []


def test_the_export_holds_the_document_roles_rule_and_recover_alarms_and_is_cfn_lint_clean(
    provisioner: Provisioner, tmp_path: Path
) -> None:
    run = provisioner.run(SPEC, "--export", "cloudformation")
    assert run.code == 0, run.err
    template = json.loads(run.out)
    dry = provisioner.run(SPEC, "--dry-run")
    planned = {tuple(line.split(" ", 3)[2:4]) for line in dry.lines if line.startswith("+ create ")}
    assert export.resources(template, ACCOUNT) == planned
    by_kind = {resource["Metadata"]["infrawatch"]["kind"]: resource for resource in template["Resources"].values()
               if resource["Type"] in ("AWS::SSM::Document", "AWS::IAM::Role")}
    assert by_kind["document"]["Properties"]["Content"] == json.loads(shipped_document())
    roles = [resource["Properties"] for resource in template["Resources"].values()
             if resource["Type"] == "AWS::IAM::Role"]
    assert sorted(role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"] for role in roles) == [
        "events.amazonaws.com", "ssm.amazonaws.com"]
    automation = next(role for role in roles if role["RoleName"] == {"Fn::Sub": "ml-${AWS::Region}-replace-gpu-host"})
    resources = {statement["Sid"]: statement["Resource"]
                 for statement in automation["Policies"][0]["PolicyDocument"]["Statement"]}
    assert resources["MarkUnhealthyInTheNamedGroups"] == [{"Fn::Sub": (
        "arn:${AWS::Partition}:autoscaling:${AWS::Region}:${AWS::AccountId}:autoScalingGroup:*:"
        "autoScalingGroupName/trainers")}]
    path = tmp_path / "responses.json"
    path.write_text(run.out)
    lint = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), str(path)], capture_output=True,
                          text=True, check=False)
    assert (lint.returncode, lint.stdout) == (0, "")
