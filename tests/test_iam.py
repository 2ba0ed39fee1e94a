"""The least-privilege IAM policy: exactly the actions a configuration needs, linted by parliament."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import parliament
import pytest

from agent import iam
from agent.cli import main
from agent.config import parse

REPO = Path(__file__).parent.parent
PUBLISH = {
    "Sid": "PublishMetricsToOneNamespace", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
    "Condition": {"StringEquals": {"cloudwatch:namespace": "InfraWatch"}},
}
DESCRIBE_TAGS = {"Sid": "ReadAutoScalingGroupTag", "Effect": "Allow", "Action": "ec2:DescribeTags", "Resource": "*"}

CONFIGS: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
    ({}, [PUBLISH]),
    ({"naming": "cwagent"},
     [{**PUBLISH, "Condition": {"StringEquals": {"cloudwatch:namespace": "CWAgent"}}}]),
    ({"namespace": "ML/Hosts", "naming": "cwagent"},
     [{**PUBLISH, "Condition": {"StringEquals": {"cloudwatch:namespace": "ML/Hosts"}}}]),
    ({"append_dimensions": ["InstanceId", "AutoScalingGroupName"]}, [PUBLISH, DESCRIBE_TAGS]),
    ({"aggregate_dimensions": [["AutoScalingGroupName"]]}, [PUBLISH, DESCRIBE_TAGS]),
    # The group from IMDS tags only, or no EC2 identity at all: no EC2 API call, no permission.
    ({"aggregate_dimensions": [["AutoScalingGroupName"]], "ec2": {"describe_tags": False}}, [PUBLISH]),
    ({"aggregate_dimensions": [["AutoScalingGroupName"]], "ec2": {"identity": False}}, [PUBLISH]),
    ({"aggregate_dimensions": [["InstanceType"]]}, [PUBLISH]),
]


@pytest.mark.parametrize(("config", "statements"), CONFIGS)
def test_the_policy_grants_exactly_what_the_config_needs(config: dict[str, Any],
                                                         statements: list[dict[str, Any]]) -> None:
    assert iam.policy(parse(config)) == {"Version": "2012-10-17", "Statement": statements}


@pytest.mark.parametrize(("config", "statements"), CONFIGS)
def test_parliament_finds_nothing(config: dict[str, Any], statements: list[dict[str, Any]]) -> None:
    findings = parliament.analyze_policy_string(iam.render(parse(config))).findings
    assert [(finding.issue, finding.detail) for finding in findings] == []


def test_parliament_would_catch_a_wrong_condition_key() -> None:
    policy = iam.policy(parse({}))
    policy["Statement"][0]["Condition"] = {"StringEquals": {"cloudwatch:Namespace2": "InfraWatch"}}
    findings = parliament.analyze_policy_string(json.dumps(policy)).findings
    assert [finding.issue for finding in findings] == ["UNKNOWN_CONDITION_FOR_ACTION"]


def test_the_shipped_policy_is_the_default_configurations() -> None:
    assert (REPO / "systemd" / "iam-policy.json").read_text() == iam.render(parse({}))


def test_print_iam_policy_follows_the_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('namespace = "ML/Hosts"\naggregate_dimensions = [["AutoScalingGroupName"]]\n')
    assert main(["--config", str(path), "print-iam-policy"]) == 0
    assert json.loads(capsys.readouterr().out)["Statement"] == [
        {**PUBLISH, "Condition": {"StringEquals": {"cloudwatch:namespace": "ML/Hosts"}}}, DESCRIBE_TAGS,
    ]
    assert main(["print-iam-policy"]) == 0
    assert capsys.readouterr().out == (REPO / "systemd" / "iam-policy.json").read_text()


def test_with_ssm_the_instance_may_read_exactly_its_config_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["print-iam-policy", "--with-ssm", "/infrawatch/agent.toml"]) == 0
    policy = capsys.readouterr().out
    assert json.loads(policy)["Statement"] == [PUBLISH, {
        "Sid": "ReadAgentConfigParameter", "Effect": "Allow", "Action": "ssm:GetParameter",
        "Resource": "arn:aws:ssm:*:*:parameter/infrawatch/agent.toml",
    }]
    findings = parliament.analyze_policy_string(policy).findings
    assert [(finding.issue, finding.detail) for finding in findings] == []
