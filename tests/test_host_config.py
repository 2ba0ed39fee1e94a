"""The host keys of the config (naming, identity dimensions, roll-ups, [ec2]): one exact line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import parse
from agent.schema import render

STATIC_27 = {f"Label{i:02d}": "x" for i in range(27)}

BAD_FILES = [
    ('naming = "telegraf"\n', ['naming: must be "native" or "cwagent", got "telegraf"']),
    ('append_dimensions = ["InstanceID"]\n', [
        'append_dimensions: "InstanceID" is not one of InstanceId, InstanceType, ImageId, AvailabilityZone, '
        'AutoScalingGroupName, got ["InstanceID"]']),
    ('append_dimensions = ["InstanceId", "InstanceId"]\n',
     ['append_dimensions: names a dimension twice, got ["InstanceId", "InstanceId"]']),
    ('aggregate_dimensions = [["Team"]]\n',
     ['aggregate_dimensions: "Team" is not a host, static or metric dimension, got ["Team"]']),
    ('aggregate_dimensions = [["InstanceType", "InstanceType"]]\n',
     ['aggregate_dimensions: each set names up to 30 distinct dimensions, got ["InstanceType", "InstanceType"]']),
    ('aggregate_dimensions = ["AutoScalingGroupName"]\n',
     ['aggregate_dimensions: must be a list of lists of strings, got ["AutoScalingGroupName"]']),
    ('aggregate_metrics = ["CPUUsage"]\n',
     ['aggregate_metrics: "CPUUsage" is not in the metric catalogue, got ["CPUUsage"]']),
    ('[dimensions]\nHost = "x"\n',
     ['dimensions: dimension "Host" is set by the agent and cannot be overridden, got {Host = "x"}']),
    ('[dimensions]\nAutoScalingGroupName = "x"\n', [
        'dimensions: dimension "AutoScalingGroupName" is set by the agent and cannot be overridden, '
        'got {AutoScalingGroupName = "x"}']),
    ("[ec2]\ntag_wait = 301\n", ["ec2.tag_wait: must be 0..300 seconds, got 301"]),
    ("[ec2]\nimds_attempts = 0\n", ["ec2.imds_attempts: must be 1..5, got 0"]),
    ("[ec2]\nidentity_wait = 0\n", ["ec2.identity_wait: must be 0.1..30 seconds, got 0"]),
    ("[ec2]\ndescribe_tag = false\n", ['ec2.describe_tag: unknown key, did you mean "describe_tags"?']),
    # The widest series: a GPU's index, UUID and name (native), or its index, name and arch (cwagent).
    ("[gpu]\nuuid_dimension = true\nname_dimension = true\n[dimensions]\n"
     + "".join(f'{name} = "x"\n' for name in STATIC_27), [
        "dimensions: at most 26 static dimensions fit CloudWatch's 30 with these append_dimensions, "
        f"got {render(STATIC_27)}"]),
    ('naming = "cwagent"\n[dimensions]\n' + "".join(f'{name} = "x"\n' for name in STATIC_27), [
        "dimensions: at most 26 static dimensions fit CloudWatch's 30 with these append_dimensions, "
        f"got {render(STATIC_27)}"]),
    ('naming = "cwagent"\n[gpu]\nuuid_dimension = true\n', [
        'gpu.uuid_dimension: must be false with naming = "cwagent" (the CloudWatch agent publishes no uuid '
        "dimension), got true"]),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_bad_host_keys_exit_2_with_exact_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               text: str, expected: list[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == expected


def test_roll_ups_may_name_static_and_metric_dimensions_or_nothing() -> None:
    config = parse({"dimensions": {"Team": "ml"}, "aggregate_dimensions": [["Team"], ["InstanceType", "MountPath"], []],
                    "aggregate_metrics": ["StorageUtilization"]})
    assert config.aggregate_dimensions == (("Team",), ("InstanceType", "MountPath"), ())
    assert config.aggregate_metrics == ("StorageUtilization",)


def test_host_defaults() -> None:
    config = parse({})
    assert (config.naming, config.namespace, config.append_dimensions, config.aggregate_dimensions) == (
        "native", "InfraWatch", ("InstanceId",), ())
    assert (config.ec2.identity, config.ec2.imds_timeout, config.ec2.imds_attempts, config.ec2.identity_wait,
            config.ec2.tag_wait, config.ec2.describe_tags) == (True, 1.0, 2, 3.0, 30.0, True)
