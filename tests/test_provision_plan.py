"""The plan, line by line, and exactly the writes it makes: rule pruning, dropped targets, drift, conflicts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from tests.fakes.aws import Provisioner

ACCOUNT = "123456789012"
CRITICAL = f"arn:aws:sns:us-east-1:{ACCOUNT}:ml-critical"
WARNING = f"arn:aws:sns:us-east-1:{ACCOUNT}:ml-warning"
LAMBDA = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:restart-agent"
HOST = "i-0000000000000000a"
BASE = 'stack = "ml"\ntags = { team = "ml-platform" }\n'
WITH_AUTOMATION = BASE + f'[events]\ntarget_arn = "{LAMBDA}"\n'
WITHOUT_RULE = BASE + "[events]\nenabled = false\n"
WITH_HOST = BASE + f'[[hosts]]\ninstance_ids = ["{HOST}"]\n'
FREE = "(us-east-1 list prices, 2026-12; an account's first 3 dashboards and 10 alarm metrics are free)."
NO_ALARMS_COST = f"Cost of the stack: 0 alarms over 0 metrics and 0 dashboards, about $0.00/month {FREE}"


def applying(writes: int) -> str:
    return f"Apply: {writes} writes, about 0 s at 3 alarm writes per second."


ALARMS_ONLY_POLICY = {  # the critical topic's policy once no rule publishes to it
    "Version": "2012-10-17", "Id": "infrawatch-ml",
    "Statement": [{
        "Sid": "CloudWatchAlarmsOfThisStack", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Action": "sns:Publish", "Resource": CRITICAL,
        "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT},
                      "ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:ml/*"}},
    }],
}


@pytest.fixture
def provisioner(tmp_path: Path) -> Iterator[Provisioner]:
    with mock_aws():
        yield Provisioner(tmp_path)


def test_a_rule_no_longer_wanted_is_kept_and_then_pruned_targets_first(provisioner: Provisioner) -> None:
    assert provisioner.run(WITH_AUTOMATION, "--yes").code == 0
    kept = provisioner.run(WITHOUT_RULE, "--dry-run")
    assert (kept.code, kept.lines) == (0, [
        "~ update topic ml-critical (Policy)",  # its EventBridge statement goes with the rule
        "= unchanged topic ml-warning",
        "! keep rule ml-alarm-state (no longer in the spec; --prune deletes it)",
        "Plan: 0 to create, 1 to update, 0 to delete, 1 unchanged, 1 kept.",
        applying(1),
        NO_ALARMS_COST,
    ])
    assert provisioner.recorder.write_requests == []

    pruned = provisioner.run(WITHOUT_RULE, "--yes", "--prune")
    assert pruned.code == 0
    assert pruned.lines[:4] == [
        "~ update topic ml-critical (Policy)",
        "= unchanged topic ml-warning",
        "- delete rule ml-alarm-state",
        "Plan: 0 to create, 1 to update, 1 to delete, 1 unchanged.",
    ]
    [policy, *rule] = provisioner.recorder.write_requests
    assert (policy[0], policy[1]["TopicArn"], policy[1]["AttributeName"]) == ("SetTopicAttributes", CRITICAL, "Policy")
    assert json.loads(policy[1]["AttributeValue"]) == ALARMS_ONLY_POLICY
    assert rule == [
        ("RemoveTargets", {"Rule": "ml-alarm-state", "Ids": ["automated-response", "critical-topic"]}),
        ("DeleteRule", {"Name": "ml-alarm-state"}),
    ]
    assert provisioner.client("events").list_rules()["Rules"] == []


def test_a_target_dropped_from_the_spec_is_removed_from_the_rule(provisioner: Provisioner) -> None:
    assert provisioner.run(WITH_AUTOMATION, "--yes").code == 0
    run = provisioner.run(BASE, "--yes")
    assert (run.code, run.lines) == (0, [
        "= unchanged topic ml-critical",
        "= unchanged topic ml-warning",
        "~ update rule ml-alarm-state (Targets)",
        "Plan: 0 to create, 1 to update, 0 to delete, 2 unchanged.",
        applying(1),
        NO_ALARMS_COST,
        "applied ~ update rule ml-alarm-state (Targets)",
        "Applied 1 changes; 0 failed.",
    ])
    assert provisioner.recorder.write_requests == [
        ("RemoveTargets", {"Rule": "ml-alarm-state", "Ids": ["automated-response"]}),
    ]
    targets = provisioner.client("events").list_targets_by_rule(Rule="ml-alarm-state")["Targets"]
    assert [target["Id"] for target in targets] == ["critical-topic"]


def test_topic_attribute_and_tag_drift_made_outside_is_reverted_and_foreign_tags_stay(
    provisioner: Provisioner,
) -> None:
    assert provisioner.run(BASE, "--yes").code == 0
    sns = provisioner.client("sns")
    sns.set_topic_attributes(TopicArn=WARNING, AttributeName="KmsMasterKeyId", AttributeValue="alias/someone")
    sns.set_topic_attributes(TopicArn=WARNING, AttributeName="Policy", AttributeValue=json.dumps(
        {"Version": "2012-10-17", "Statement": []}))
    sns.tag_resource(ResourceArn=WARNING, Tags=[{"Key": "team", "Value": "finance"}, {"Key": "owner", "Value": "bob"}])
    provisioner.recorder.clear()

    run = provisioner.run(BASE, "--yes")
    assert (run.code, run.lines) == (0, [
        "= unchanged topic ml-critical",
        "~ update topic ml-warning (KmsMasterKeyId 'alias/someone' -> ''; Policy; Tags)",
        "= unchanged rule ml-alarm-state",
        "Plan: 0 to create, 1 to update, 0 to delete, 2 unchanged.",
        applying(3),
        NO_ALARMS_COST,
        "applied ~ update topic ml-warning (KmsMasterKeyId 'alias/someone' -> ''; Policy; Tags)",
        "Applied 1 changes; 0 failed.",
    ])
    [kms, policy, tags] = provisioner.recorder.write_requests
    assert kms == ("SetTopicAttributes", {"TopicArn": WARNING, "AttributeName": "KmsMasterKeyId", "AttributeValue": ""})
    assert (policy[0], policy[1]["AttributeName"]) == ("SetTopicAttributes", "Policy")
    assert [statement["Sid"] for statement in json.loads(policy[1]["AttributeValue"])["Statement"]] == [
        "CloudWatchAlarmsOfThisStack"]
    assert tags == ("TagResource", {"ResourceArn": WARNING, "Tags": [{"Key": "team", "Value": "ml-platform"}]})
    listed = {tag["Key"]: tag["Value"] for tag in sns.list_tags_for_resource(ResourceArn=WARNING)["Tags"]}
    assert listed == {"managed-by": "infrawatch", "infrawatch:stack": "ml", "team": "ml-platform", "owner": "bob"}
    assert provisioner.run(BASE, "--yes").lines[-3] == "Plan: 0 to create, 0 to update, 0 to delete, 3 unchanged."


def test_a_topic_with_the_stacks_name_but_not_its_tags_is_a_conflict_left_alone(provisioner: Provisioner) -> None:
    sns = provisioner.client("sns")
    sns.create_topic(Name="ml-critical")  # someone else's topic, untagged
    theirs = sns.get_topic_attributes(TopicArn=CRITICAL)["Attributes"]["Policy"]
    provisioner.recorder.clear()

    run = provisioner.run(BASE, "--yes")
    assert (run.code, run.lines) == (1, [
        "! conflict topic ml-critical (exists without this stack's tags; left alone)",
        "+ create topic ml-warning",
        "+ create rule ml-alarm-state",
        "Plan: 2 to create, 0 to update, 0 to delete, 0 unchanged, 1 in conflict.",
        applying(4),
        NO_ALARMS_COST,
        "applied + create topic ml-warning",
        "applied + create rule ml-alarm-state",
        "Applied 2 changes; 0 failed.",
        "1 resources with this stack's names are not this stack's and were left alone.",
    ])
    assert [operation for operation, _ in provisioner.recorder.write_requests] == [
        "CreateTopic", "SetTopicAttributes", "PutRule", "PutTargets",
    ]
    assert provisioner.recorder.write_requests[0][1]["Name"] == "ml-warning"
    assert sns.get_topic_attributes(TopicArn=CRITICAL)["Attributes"]["Policy"] == theirs


def test_a_changed_dashboard_body_is_rewritten_and_one_without_the_marker_is_a_conflict(
    provisioner: Provisioner,
) -> None:
    assert provisioner.run(WITH_HOST, "--yes").code == 0
    cloudwatch = provisioner.client("cloudwatch")
    name = "ml-us-east-1-fleet"
    ours = cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"]
    edited = json.loads(ours)
    edited["widgets"][1]["properties"]["title"] = "edited by hand"
    cloudwatch.put_dashboard(DashboardName=name, DashboardBody=json.dumps(edited))
    provisioner.recorder.clear()

    unchanged_alarms = [f"= unchanged alarm ml/host/{HOST}/{key}"
                        for key in ("cpu_high", "memory_high", "storage_high@/", "heartbeat_missing")]
    run = provisioner.run(WITH_HOST, "--yes")
    assert (run.code, run.lines[:9]) == (0, [
        "= unchanged topic ml-critical",
        "= unchanged topic ml-warning",
        *unchanged_alarms,
        f"~ update dashboard {name} (DashboardBody)",
        "= unchanged rule ml-alarm-state",
        "Plan: 0 to create, 1 to update, 0 to delete, 7 unchanged.",
    ])
    assert provisioner.recorder.write_requests == [("PutDashboard", {"DashboardName": name, "DashboardBody": ours})]

    edited["widgets"][0]["properties"]["markdown"] = "someone's own dashboard now"
    cloudwatch.put_dashboard(DashboardName=name, DashboardBody=json.dumps(edited))
    provisioner.recorder.clear()
    run = provisioner.run(WITH_HOST, "--yes")
    assert run.code == 1
    assert run.lines[6:9] == [
        f"! conflict dashboard {name} (exists without this stack's marker; left alone)",
        "= unchanged rule ml-alarm-state",
        "Plan: 0 to create, 0 to update, 0 to delete, 7 unchanged, 1 in conflict.",
    ]
    assert provisioner.recorder.write_requests == []
