"""The plan, line by line, and exactly the writes it makes: rule pruning, dropped targets, drift, conflicts."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from moto import mock_aws

from provisioning.alarms import AlarmDefinition, ownership_marker
from provisioning.composite import CompositeDefinition
from provisioning.dashboards import DashboardDefinition
from provisioning.events import RuleDefinition, Target
from provisioning.notifications import TopicDefinition
from provisioning.plan import (
    CONFLICT,
    CREATE,
    DELETE,
    KEEP,
    UNCHANGED,
    UPDATE,
    Change,
    Plan,
    Planner,
    Write,
    _changed,
    mass_deletion,
    pruned_hosts,
    stale,
)
from provisioning.responses import (
    ActualDocument,
    ActualResponses,
    ActualRole,
    DesiredResponses,
    DocumentDefinition,
    ReplaceResponse,
    RoleDefinition,
)
from provisioning.spec import ReplaceUnhealthyGpuHost
from provisioning.stack import DesiredStack
from provisioning.state import ActualAlarm, ActualDashboard, ActualRule, ActualStack, ActualSubscription, ActualTopic
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


# --- The planner alone: desired and actual state in, the exact plan and writes out (no AWS) -------------

STACK = "ml"
OURS = {"managed-by": "infrawatch", "infrawatch:stack": STACK, "team": "ml-platform"}
WANTED_TAGS = {"team": "ml-platform"}
TOPIC_ARN = f"arn:aws:sns:us-east-1:{ACCOUNT}:ml-warning"
RULE_ARN = f"arn:aws:events:us-east-1:{ACCOUNT}:rule/ml-alarm-state"


def alarm(name: str, threshold: float = 90.0) -> AlarmDefinition:
    return AlarmDefinition(name=name, description=f"CPU busy. {ownership_marker(STACK)}",
                           comparison="GreaterThanThreshold", threshold=threshold,
                           evaluation_periods=1, datapoints_to_alarm=1, treat_missing_data="breaching",
                           namespace="CWAgent", metric_name="cpu_usage_active", statistic="Average", period=60)


def actual_alarm(definition: AlarmDefinition, tags: Mapping[str, str] | None = None, state: str = "OK",
                 ours: bool = True) -> ActualAlarm:
    """`tags` None: not read (the reader reads them only for an alarm whose definition changed)."""
    definition = definition if ours else replace(definition, description="Someone else's alarm.")
    return ActualAlarm(definition, f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:{definition.name}", tags, state)


def topic(attributes: tuple[tuple[str, str], ...] = (), subscriptions: tuple[tuple[str, str], ...] = (),
          managed: bool = True) -> TopicDefinition:
    return TopicDefinition("warning", "ml-warning", TOPIC_ARN, managed, attributes, subscriptions)


def actual_topic(attributes: Mapping[str, str] | None = None, tags: Mapping[str, str] = OURS,
                 subscriptions: tuple[ActualSubscription, ...] = (), name: str = "ml-warning") -> ActualTopic:
    return ActualTopic(name, f"arn:aws:sns:us-east-1:{ACCOUNT}:{name}", attributes or {}, tags, subscriptions)


def rule(*targets: Target, pattern: str = '{"source":["aws.cloudwatch"]}') -> RuleDefinition:
    return RuleDefinition("ml-alarm-state", RULE_ARN, pattern, "alarms of ml", targets=targets)


def planned(*, topics: Mapping[str, TopicDefinition] | None = None, alarms: tuple[AlarmDefinition, ...] = (),
            dashboards: tuple[DashboardDefinition, ...] = (), desired_rule: RuleDefinition | None = None,
            actual: ActualStack | None = None, prune: bool = False,
            instance_states: Mapping[str, str] | None = None, composites: tuple[CompositeDefinition, ...] = ()) -> Plan:
    desired = DesiredStack(STACK, WANTED_TAGS, topics or {}, alarms, dashboards, desired_rule, composites)
    return Planner(desired, actual or state(), prune=prune, instance_states=instance_states).plan()


def state(*, alarms: Mapping[str, ActualAlarm] | None = None, topics: Mapping[str, ActualTopic] | None = None,
          dashboards: Mapping[str, ActualDashboard] | None = None, rule: ActualRule | None = None,
          composites: Mapping[str, ActualAlarm] | None = None) -> ActualStack:
    return ActualStack(alarms or {}, topics or {}, dashboards or {}, rule, composites or {})


def test_the_summary_counts_every_action_and_names_conflicts_and_kept_only_when_there_are_some() -> None:
    changes = [Change(action, "alarm", f"a{index}") for index, action in enumerate(
        [CREATE, UPDATE, UPDATE, DELETE, DELETE, DELETE, UNCHANGED, UNCHANGED, UNCHANGED, UNCHANGED])]
    assert Plan(tuple(changes)).lines()[-1] == "Plan: 1 to create, 2 to update, 3 to delete, 4 unchanged."
    changes += [Change(CONFLICT, "alarm", "c"), Change(KEEP, "alarm", "k1"), Change(KEEP, "alarm", "k2")]
    assert Plan(tuple(changes)).lines()[-1] == (
        "Plan: 1 to create, 2 to update, 3 to delete, 4 unchanged, 1 in conflict, 2 kept.")
    assert Plan(tuple(changes)).lines()[0] == "+ create alarm a0"
    assert Change(UPDATE, "alarm", "x", ("A", "B")).line() == "~ update alarm x (A; B)"
    writes = (Write("sns", "Subscribe", {}), Write("sns", "Subscribe", {}))
    assert Plan((Change(CREATE, "topic", "t", writes=writes), Change(DELETE, "rule", "r", writes=writes[:1]))
                ).writes == 3


def test_a_changed_field_shows_old_and_new_up_to_60_characters_and_only_its_name_beyond() -> None:
    assert _changed({"A": "x" * 50, "B": 1, "C": 2}, {"A": "y" * 50, "B": 1}) == ["A", "C None -> 2"]
    assert _changed({"A": "x" * 26}, {"A": "y" * 26}) == [f"A {'y' * 26!r} -> {'x' * 26!r}"]  # 60 characters shown
    assert _changed({"A": "x" * 27}, {"A": "y" * 26}) == ["A"]  # 61


def test_mass_deletion_is_more_than_a_fifth_of_the_stacks_own_alarms_or_a_host_group_that_found_nothing() -> None:
    names = [f"ml/host/i-0{index}/cpu_high" for index in range(10)]
    owned_alarms = {name: actual_alarm(alarm(name)) for name in names}
    foreign = {f"ml/other/{index}": actual_alarm(alarm(f"ml/other/{index}"), ours=False) for index in range(10)}
    actual = state(alarms={**owned_alarms, **foreign})

    def deleting(*deleted: str) -> Plan:
        return Plan((*(Change(DELETE, "alarm", name) for name in deleted), Change(DELETE, "topic", "t")))

    assert mass_deletion(Plan((Change(DELETE, "topic", "t"),)), actual, STACK, ["gpu"]) == []
    assert mass_deletion(deleting(*names[:2]), actual, STACK, []) == []  # 2 of 10: exactly a fifth
    assert mass_deletion(deleting(*names[:3]), actual, STACK, ["gpu", "cpu"]) == [
        "the plan deletes 3 of this stack's 10 alarms, more than 20 %",
        "gpu found no hosts, so the plan deletes every alarm of that group",
        "cpu found no hosts, so the plan deletes every alarm of that group",
    ]
    assert mass_deletion(deleting("ml/sagemaker/e/v/latency"), actual, STACK, ["gpu"]) == []


def test_pruned_hosts_are_the_instances_of_alarms_the_spec_no_longer_wants() -> None:
    kept, gone, named = "ml/host/i-0a/cpu_high", "ml/host/i-0b/cpu_high", "ml/host/gpu-box/cpu_high"
    actual = state(alarms={name: actual_alarm(alarm(name)) for name in (kept, gone, named, "ml/sagemaker/e/v/x")})
    desired = DesiredStack(STACK, WANTED_TAGS, {}, (alarm(kept),), (), None)
    assert pruned_hosts(desired, actual) == {"i-0b"}


def test_deletions_come_last_rule_first_topics_last_and_only_with_prune() -> None:
    subscription = ActualSubscription("email", "a@example.com", f"{TOPIC_ARN}:1")
    actual = state(
        alarms={"ml/x": actual_alarm(alarm("ml/x"))},
        topics={"ml-warning": actual_topic(subscriptions=(subscription,))},
        dashboards={"ml-us-east-1-old": ActualDashboard("ml-us-east-1-old", "{}", owned=True),
                    "ml-us-east-1-theirs": ActualDashboard("ml-us-east-1-theirs", "{}", owned=False)},
        rule=ActualRule(rule(Target("t1", TOPIC_ARN)), OURS),
    )
    everything = {"warning": topic()}
    kept = planned(topics=everything, alarms=(alarm("ml/new"),), actual=actual)
    assert kept.lines() == [
        "= unchanged topic ml-warning",
        "! keep subscription ml-warning email:a@example.com (no longer in the spec; --prune deletes it)",
        "+ create alarm ml/new",
        "! keep alarm ml/x (no longer in the spec; --prune deletes it)",
        "! keep dashboard ml-us-east-1-old (no longer in the spec; --prune deletes it)",
        "! keep rule ml-alarm-state (no longer in the spec; --prune deletes it)",
        "Plan: 1 to create, 0 to update, 0 to delete, 1 unchanged, 4 kept.",
    ]
    pruned = planned(topics=everything, alarms=(alarm("ml/new"),), actual=actual, prune=True)
    assert pruned.lines() == [
        "= unchanged topic ml-warning",
        "+ create alarm ml/new",
        "- delete rule ml-alarm-state",
        "- delete dashboard ml-us-east-1-old",
        "- delete alarm ml/x",
        "- delete subscription ml-warning email:a@example.com",
        "Plan: 1 to create, 0 to update, 4 to delete, 1 unchanged.",
    ]
    assert [write for change in pruned.changes[2:] for write in change.writes] == [
        Write("events", "RemoveTargets", {"Rule": "ml-alarm-state", "Ids": ["t1"]}),
        Write("events", "DeleteRule", {"Name": "ml-alarm-state"}),
        Write("cloudwatch", "DeleteDashboards", {"DashboardNames": ["ml-us-east-1-old"]}),
        Write("cloudwatch", "DeleteAlarms", {"AlarmNames": ["ml/x"]}),
        Write("sns", "Unsubscribe", {"SubscriptionArn": f"{TOPIC_ARN}:1"}),
    ]
    topic_gone = planned(actual=state(topics={"ml-warning": actual_topic(),
                                              "ml-critical": actual_topic(name="ml-critical", tags={})}), prune=True)
    assert topic_gone.lines() == ["- delete topic ml-warning",
                                  "Plan: 0 to create, 0 to update, 1 to delete, 0 unchanged."]
    assert topic_gone.changes[0].writes == (Write("sns", "DeleteTopic", {"TopicArn": TOPIC_ARN}),)


def test_a_rule_without_targets_is_deleted_with_one_write() -> None:
    actual = state(rule=ActualRule(rule(), OURS))
    assert planned(actual=actual, prune=True).changes[0].writes == (
        Write("events", "DeleteRule", {"Name": "ml-alarm-state"}),)


def test_topics_are_created_with_their_set_attributes_updated_on_drift_and_an_existing_arn_used_as_it_is() -> None:
    attributes = (("KmsMasterKeyId", "alias/ours"), ("Policy", ""))
    created = planned(topics={"warning": topic(attributes, (("email", "a@example.com"),))})
    assert created.lines() == [
        "+ create topic ml-warning",
        "+ create subscription ml-warning email:a@example.com",
        "Plan: 2 to create, 0 to update, 0 to delete, 0 unchanged.",
    ]
    assert [write for change in created.changes for write in change.writes] == [
        Write("sns", "CreateTopic", {"Name": "ml-warning", "Tags": [{"Key": "team", "Value": "ml-platform"}]}),
        Write("sns", "SetTopicAttributes", {"TopicArn": TOPIC_ARN, "AttributeName": "KmsMasterKeyId",
                                            "AttributeValue": "alias/ours"}),
        Write("sns", "Subscribe", {"TopicArn": TOPIC_ARN, "Protocol": "email", "Endpoint": "a@example.com"}),
    ]
    drifted = actual_topic({"KmsMasterKeyId": "alias/theirs"}, tags={**OURS, "team": "finance", "owner": "bob"},
                           subscriptions=(ActualSubscription("email", "a@example.com", f"{TOPIC_ARN}:1"),
                                          ActualSubscription("sqs", "q", "PendingConfirmation")))
    updated = planned(topics={"warning": topic(attributes, (("email", "a@example.com"),))},
                      actual=state(topics={"ml-warning": drifted}), prune=True)
    assert updated.lines() == [
        "~ update topic ml-warning (KmsMasterKeyId 'alias/theirs' -> 'alias/ours'; Tags)",
        "= unchanged subscription ml-warning email:a@example.com",
        "! keep subscription ml-warning sqs:q (pending confirmation: SNS cannot remove it yet)",
        "Plan: 0 to create, 1 to update, 0 to delete, 1 unchanged, 1 kept.",
    ]
    assert updated.changes[0].writes == (
        Write("sns", "SetTopicAttributes", {"TopicArn": TOPIC_ARN, "AttributeName": "KmsMasterKeyId",
                                            "AttributeValue": "alias/ours"}),
        Write("sns", "TagResource", {"ResourceArn": TOPIC_ARN, "Tags": [{"Key": "team", "Value": "ml-platform"}]}),
    )
    same = planned(topics={"warning": topic(attributes)},
                   actual=state(topics={"ml-warning": actual_topic({"KmsMasterKeyId": "alias/ours"})}))
    assert same.lines() == ["= unchanged topic ml-warning", "Plan: 0 to create, 0 to update, 0 to delete, 1 unchanged."]
    existing = planned(topics={"warning": topic(managed=False)},
                       actual=state(topics={"ml-warning": actual_topic(tags={})}))
    assert existing.lines() == [f"= unchanged topic {TOPIC_ARN} (existing topic, used as it is)",
                                "Plan: 0 to create, 0 to update, 0 to delete, 1 unchanged."]
    conflict = planned(topics={"warning": topic()}, actual=state(topics={"ml-warning": actual_topic(tags={})}))
    assert conflict.lines() == ["! conflict topic ml-warning (exists without this stack's tags; left alone)",
                                "Plan: 0 to create, 0 to update, 0 to delete, 0 unchanged, 1 in conflict."]


def test_a_topic_of_this_stack_the_spec_now_names_by_arn_is_used_and_never_pruned() -> None:
    # On 086c3d7 --prune deleted it: only topics the stack manages counted as wanted.
    plan = planned(topics={"warning": topic(managed=False)}, actual=state(topics={"ml-warning": actual_topic()}),
                   prune=True)
    assert plan.lines() == [f"= unchanged topic {TOPIC_ARN} (existing topic, used as it is)",
                            "Plan: 0 to create, 0 to update, 0 to delete, 1 unchanged."]


def test_alarms_are_created_tagged_updated_field_by_field_and_others_alarms_are_conflicts() -> None:
    created = planned(alarms=(alarm("ml/a"),))
    assert created.changes[0].writes == (
        Write("cloudwatch", "PutMetricAlarm", {**alarm("ml/a").request(),
                                               "Tags": [{"Key": "team", "Value": "ml-platform"}]}),)
    actual = state(alarms={"ml/a": actual_alarm(alarm("ml/a", 85.0), tags={**OURS, "team": "x", "owner": "bob"}),
                           "ml/b": actual_alarm(alarm("ml/b")),
                           "ml/c": actual_alarm(alarm("ml/c"), ours=False),
                           "ml/d": actual_alarm(alarm("ml/d"), ours=False)})
    plan = planned(alarms=(alarm("ml/a"), alarm("ml/b"), alarm("ml/c")), actual=actual, prune=True)
    assert plan.lines() == [
        "~ update alarm ml/a (Threshold 85.0 -> 90.0; Tags)",
        "= unchanged alarm ml/b",
        "! conflict alarm ml/c (exists without this stack's marker; left alone)",
        "Plan: 0 to create, 1 to update, 0 to delete, 1 unchanged, 1 in conflict.",
    ]
    assert plan.changes[0].writes == (
        Write("cloudwatch", "PutMetricAlarm", alarm("ml/a").request()),
        Write("cloudwatch", "TagResource", {"ResourceARN": actual.alarms["ml/a"].arn,
                                           "Tags": [{"Key": "team", "Value": "ml-platform"}]}),
    )
    retagged = planned(alarms=(alarm("ml/a"),), actual=state(alarms={"ml/a": actual_alarm(
        alarm("ml/a"), tags={"managed-by": "infrawatch", "infrawatch:stack": STACK})}))
    assert retagged.lines()[0] == "~ update alarm ml/a (Tags)"
    assert [write.operation for write in retagged.changes[0].writes] == ["TagResource"]
    unread = planned(alarms=(alarm("ml/a"),), actual=state(alarms={"ml/a": actual_alarm(alarm("ml/a"))}))
    assert unread.lines()[0] == "= unchanged alarm ml/a"  # an unchanged alarm's tags are not read


def test_prune_keeps_a_firing_alarm_and_a_host_ec2_still_runs_and_deletes_a_terminated_or_unknown_ones() -> None:
    names = ["ml/host/i-0a/cpu_high", "ml/host/i-0b/cpu_high", "ml/host/i-0c/cpu_high", "ml/host/i-0d/cpu_high"]
    actual = state(alarms={names[0]: actual_alarm(alarm(names[0]), state="ALARM"),
                           **{name: actual_alarm(alarm(name)) for name in names[1:]}})
    plan = planned(actual=actual, prune=True, instance_states={"i-0a": "stopped", "i-0b": "running",
                                                               "i-0c": "terminated"})
    assert plan.lines() == [
        "! keep alarm ml/host/i-0a/cpu_high (in ALARM: --prune never deletes a firing alarm; "
        "host i-0a is stopped in EC2, not terminated: --prune keeps its alarms)",
        "! keep alarm ml/host/i-0b/cpu_high (host i-0b is running in EC2, not terminated: --prune keeps its alarms)",
        "- delete alarm ml/host/i-0c/cpu_high",
        "- delete alarm ml/host/i-0d/cpu_high",
        "Plan: 0 to create, 0 to update, 2 to delete, 0 unchanged, 2 kept.",
    ]


def test_dashboards_are_created_rewritten_when_the_body_differs_and_unmarked_ones_left_alone() -> None:
    new, edited, same, theirs = (DashboardDefinition(f"ml-us-east-1-{name}", '{"widgets":[]}')
                                 for name in ("new", "edited", "same", "theirs"))
    actual = state(dashboards={
        edited.name: ActualDashboard(edited.name, '{"widgets":[1]}', owned=True),
        same.name: ActualDashboard(same.name, same.body, owned=True),
        theirs.name: ActualDashboard(theirs.name, "{}", owned=False),
    })
    plan = planned(dashboards=(new, edited, same, theirs), actual=actual)
    assert plan.lines() == [
        "+ create dashboard ml-us-east-1-new",
        "~ update dashboard ml-us-east-1-edited (DashboardBody)",
        "= unchanged dashboard ml-us-east-1-same",
        "! conflict dashboard ml-us-east-1-theirs (exists without this stack's marker; left alone)",
        "Plan: 1 to create, 1 to update, 0 to delete, 1 unchanged, 1 in conflict.",
    ]
    assert [change.writes for change in plan.changes] == [
        (Write("cloudwatch", "PutDashboard", {"DashboardName": new.name, "DashboardBody": new.body}),),
        (Write("cloudwatch", "PutDashboard", {"DashboardName": edited.name, "DashboardBody": edited.body}),),
        (), (),
    ]


def test_the_rule_is_created_with_its_targets_updated_target_by_target_and_someone_elses_left_alone() -> None:
    topic_target, lambda_target = Target("critical-topic", CRITICAL), Target("automated-response", LAMBDA)
    tags = [{"Key": "team", "Value": "ml-platform"}]
    created = planned(desired_rule=rule(lambda_target, topic_target))
    assert created.lines() == ["+ create rule ml-alarm-state",
                               "Plan: 1 to create, 0 to update, 0 to delete, 0 unchanged."]
    assert created.changes[0].writes == (
        Write("events", "PutRule", {**rule().request(), "Tags": tags}),
        Write("events", "PutTargets", {"Rule": "ml-alarm-state",
                                       "Targets": [lambda_target.request(), topic_target.request()]}),
    )
    assert planned(desired_rule=rule()).changes[0].writes == (Write("events", "PutRule", {**rule().request(),
                                                                                           "Tags": tags}),)
    moved = Target("automated-response", LAMBDA + "-v2")
    current = ActualRule(rule(lambda_target, Target("old", CRITICAL), pattern="{}"), {**OURS, "team": "x"})
    updated = planned(desired_rule=rule(moved, topic_target), actual=state(rule=current))
    assert updated.lines() == [
        "~ update rule ml-alarm-state (EventPattern '{}' -> '{\"source\":[\"aws.cloudwatch\"]}'; Targets; Tags)",
        "Plan: 0 to create, 1 to update, 0 to delete, 0 unchanged.",
    ]
    assert updated.changes[0].writes == (
        Write("events", "PutRule", rule().request()),
        Write("events", "PutTargets", {"Rule": "ml-alarm-state", "Targets": [moved.request(), topic_target.request()]}),
        Write("events", "RemoveTargets", {"Rule": "ml-alarm-state", "Ids": ["old"]}),
        Write("events", "TagResource", {"ResourceARN": RULE_ARN, "Tags": tags}),
    )
    same = planned(desired_rule=rule(topic_target), actual=state(rule=ActualRule(rule(topic_target), OURS)))
    assert same.lines() == ["= unchanged rule ml-alarm-state",
                            "Plan: 0 to create, 0 to update, 0 to delete, 1 unchanged."]
    theirs = state(rule=ActualRule(rule(topic_target), {"managed-by": "infrawatch"}))
    assert planned(desired_rule=rule(), actual=theirs).lines()[0] == (
        "! conflict rule ml-alarm-state (exists without this stack's tags; left alone)")
    assert planned(actual=theirs, prune=True).changes == ()


def test_composites_are_planned_like_alarms_and_deleted_before_the_alarms_they_name() -> None:
    child = alarm("ml/host/i-0a/cpu_high")
    composite = CompositeDefinition("ml/fleet/critical", f"Fleet. {ownership_marker(STACK)}", f'ALARM("{child.name}")')
    created = planned(alarms=(child,), composites=(composite,))
    assert created.lines() == [
        "+ create alarm ml/host/i-0a/cpu_high",
        "+ create composite ml/fleet/critical",
        "Plan: 2 to create, 0 to update, 0 to delete, 0 unchanged.",
    ]
    assert created.changes[1].writes == (Write("cloudwatch", "PutCompositeAlarm", {
        **composite.request(), "Tags": [{"Key": "team", "Value": "ml-platform"}]}),)
    actual = state(alarms={child.name: actual_alarm(child)},
                   composites={composite.name: ActualAlarm(composite, "arn:composite")})
    pruned = planned(actual=actual, prune=True)
    assert pruned.lines() == [
        "- delete composite ml/fleet/critical",
        "- delete alarm ml/host/i-0a/cpu_high",
        "Plan: 0 to create, 0 to update, 2 to delete, 0 unchanged.",
    ]


def test_stale_names_this_stacks_changed_alarms_and_composites_only() -> None:
    child, other = alarm("ml/a"), alarm("ml/b")
    composite = CompositeDefinition("ml/fleet/critical", f"Fleet. {ownership_marker(STACK)}", 'ALARM("ml/a")')
    moved = replace(composite, rule='ALARM("ml/b")')
    desired = DesiredStack(STACK, WANTED_TAGS, {}, (child, other, alarm("ml/new")), (), None, (composite,))
    actual = state(alarms={"ml/a": actual_alarm(alarm("ml/a", 85.0)), "ml/b": actual_alarm(alarm("ml/b", 85.0),
                                                                                           ours=False)},
                   composites={composite.name: ActualAlarm(moved, "arn:composite")})
    assert stale(desired, actual) == {"ml/a", "ml/fleet/critical"}


def test_an_unwanted_dashboard_is_deleted_before_an_unwanted_composite() -> None:
    composite = CompositeDefinition("ml/fleet/critical", f"Fleet. {ownership_marker(STACK)}", 'ALARM("ml/a")')
    actual = state(composites={composite.name: ActualAlarm(composite, "arn:composite")},
                   dashboards={"ml-us-east-1-old": ActualDashboard("ml-us-east-1-old", "{}", owned=True)})
    assert planned(actual=actual, prune=True).lines()[:2] == [
        "- delete dashboard ml-us-east-1-old", "- delete composite ml/fleet/critical"]


def test_an_existing_composite_is_unchanged_or_rewritten_never_created_again() -> None:
    composite = CompositeDefinition("ml/fleet/critical", f"Fleet. {ownership_marker(STACK)}", 'ALARM("ml/a")')
    moved = replace(composite, rule='ALARM("ml/b")')
    same = planned(composites=(composite,), actual=state(composites={composite.name: ActualAlarm(composite, "arn")}))
    assert same.lines()[0] == "= unchanged composite ml/fleet/critical"
    rewritten = planned(composites=(moved,), actual=state(composites={composite.name: ActualAlarm(composite, "arn")}))
    assert rewritten.lines()[0] == (
        "~ update composite ml/fleet/critical (AlarmRule 'ALARM(\"ml/a\")' -> 'ALARM(\"ml/b\")')")
    assert rewritten.changes[0].writes == (Write("cloudwatch", "PutCompositeAlarm", moved.request()),)


# --- automated responses: the document, its two roles and their rule, planned alone -------------------

DOCUMENT = DocumentDefinition("ml-ReplaceUnhealthyGpuHost", '{"schemaVersion":"0.3"}')
RESPONSE_RULE = RuleDefinition("ml-replace-gpu-host", f"arn:aws:events:us-east-1:{ACCOUNT}:rule/ml-replace-gpu-host",
                               '{"source":["aws.cloudwatch"]}', "replace of ml")
ROLE_TAGS = [{"Key": "team", "Value": "ml-platform"}]


def role(name: str = "ml-us-east-1-replace-gpu-host", **changed: str) -> RoleDefinition:
    defined = RoleDefinition(name, f"arn:aws:iam::{ACCOUNT}:role/{name}", "runs the Automation",
                             '{"Statement":["ssm"]}', "replace-unhealthy-gpu-host", '{"Statement":["asg"]}')
    return replace(defined, **changed)


def responses(*roles: RoleDefinition, document: DocumentDefinition = DOCUMENT) -> ReplaceResponse:
    return ReplaceResponse(document, roles, RESPONSE_RULE, (), ReplaceUnhealthyGpuHost())


def planned_responses(wanted: ReplaceResponse | None, *, document: ActualDocument | None = None,
                      roles: tuple[ActualRole, ...] = (), rule: ActualRule | None = None,
                      prune: bool = False) -> Plan:
    desired = DesiredStack(STACK, WANTED_TAGS, {}, (), (), None, responses=DesiredResponses(wanted, ()))
    found = ActualResponses(document, {item.definition.name: item for item in roles})
    actual = ActualStack({}, {}, {}, None, {}, found, rule)
    return Planner(desired, actual, prune=prune).plan()


def test_a_response_role_is_created_with_its_trust_description_tags_and_policy() -> None:
    created = planned_responses(responses(role()), document=ActualDocument(DOCUMENT.name, DOCUMENT.content, "1", OURS),
                                rule=ActualRule(RESPONSE_RULE, OURS))
    assert created.lines() == [
        "= unchanged document ml-ReplaceUnhealthyGpuHost",
        "+ create role ml-us-east-1-replace-gpu-host",
        "= unchanged rule ml-replace-gpu-host",
        "Plan: 1 to create, 0 to update, 0 to delete, 2 unchanged.",
    ]
    assert created.changes[1].writes == (
        Write("iam", "CreateRole", {"RoleName": "ml-us-east-1-replace-gpu-host",
                                    "AssumeRolePolicyDocument": '{"Statement":["ssm"]}',
                                    "Description": "runs the Automation", "Tags": ROLE_TAGS}),
        Write("iam", "PutRolePolicy", {"RoleName": "ml-us-east-1-replace-gpu-host",
                                       "PolicyName": "replace-unhealthy-gpu-host",
                                       "PolicyDocument": '{"Statement":["asg"]}'}),
    )


def test_a_drifted_response_role_gets_one_write_per_drifted_part_and_loses_inline_policies_it_should_not_have(
) -> None:
    name = "ml-us-east-1-replace-gpu-host"
    same = planned_responses(responses(role()), roles=(ActualRole(role(), OURS, ("replace-unhealthy-gpu-host",)),))
    assert (same.lines()[1], same.changes[1].details, same.changes[1].writes) == (
        f"= unchanged role {name}", (), ())
    drifted = ActualRole(role(trust='{"Statement":["anyone"]}', description="edited", policy_name="old",
                              policy='{"Statement":["*"]}'),
                         {"managed-by": "infrawatch", "infrawatch:stack": STACK, "team": "other"},
                         ("old", "added-by-hand"))
    updated = planned_responses(responses(role()), roles=(drifted,))
    assert updated.lines()[1] == (
        f"~ update role {name} (AssumeRolePolicyDocument; Description; policy replace-unhealthy-gpu-host; Tags)")
    assert updated.changes[1].writes == (
        Write("iam", "UpdateAssumeRolePolicy", {"RoleName": name, "PolicyDocument": '{"Statement":["ssm"]}'}),
        Write("iam", "UpdateRole", {"RoleName": name, "Description": "runs the Automation"}),
        Write("iam", "PutRolePolicy", {"RoleName": name, "PolicyName": "replace-unhealthy-gpu-host",
                                       "PolicyDocument": '{"Statement":["asg"]}'}),
        Write("iam", "DeleteRolePolicy", {"RoleName": name, "PolicyName": "old"}),
        Write("iam", "DeleteRolePolicy", {"RoleName": name, "PolicyName": "added-by-hand"}),
        Write("iam", "TagRole", {"RoleName": name, "Tags": ROLE_TAGS}),
    )
    # Each part alone: only its own write, and the role's own policy is never deleted.
    policy = ("replace-unhealthy-gpu-host",)
    for actual, detail, write in (
        (role(trust="{}"), "AssumeRolePolicyDocument",
         Write("iam", "UpdateAssumeRolePolicy", {"RoleName": name, "PolicyDocument": '{"Statement":["ssm"]}'})),
        (role(description="edited"), "Description",
         Write("iam", "UpdateRole", {"RoleName": name, "Description": "runs the Automation"})),
        (role(policy="{}"), "policy replace-unhealthy-gpu-host",
         Write("iam", "PutRolePolicy", {"RoleName": name, "PolicyName": "replace-unhealthy-gpu-host",
                                        "PolicyDocument": '{"Statement":["asg"]}'})),
    ):
        change = planned_responses(responses(role()), roles=(ActualRole(actual, OURS, policy),)).changes[1]
        assert (change.action, change.details, change.writes) == (UPDATE, (detail,), (write,))
    tagged = planned_responses(responses(role()), roles=(ActualRole(role(), {**OURS, "team": "x"}, policy),))
    assert (tagged.changes[1].action, tagged.changes[1].details, tagged.changes[1].writes) == (
        UPDATE, ("Tags",), (Write("iam", "TagRole", {"RoleName": name, "Tags": ROLE_TAGS}),))


def test_a_response_role_not_this_stacks_is_a_conflict_and_a_removed_one_loses_its_policies_then_itself() -> None:
    name = "ml-us-east-1-replace-gpu-host"
    theirs = ActualRole(role(), {"managed-by": "infrawatch"}, ("replace-unhealthy-gpu-host",))
    conflict = planned_responses(responses(role()), roles=(theirs,))
    assert conflict.lines()[1] == f"! conflict role {name} (exists without this stack's tags; left alone)"
    assert conflict.changes[1].writes == ()
    assert planned_responses(None, roles=(theirs,), prune=True).changes == ()

    ours = ActualRole(role(), OURS, ("replace-unhealthy-gpu-host", "extra"))
    assert planned_responses(None, roles=(ours,)).lines() == [
        f"! keep role {name} (no longer in the spec; --prune deletes it)",
        "Plan: 0 to create, 0 to update, 0 to delete, 0 unchanged, 1 kept.",
    ]
    assert planned_responses(None, roles=(ours,), prune=True).changes == (Change(DELETE, "role", name, writes=(
        Write("iam", "DeleteRolePolicy", {"RoleName": name, "PolicyName": "replace-unhealthy-gpu-host"}),
        Write("iam", "DeleteRolePolicy", {"RoleName": name, "PolicyName": "extra"}),
        Write("iam", "DeleteRole", {"RoleName": name}),
    )),)


def test_the_response_document_is_created_its_content_and_tags_reconciled_and_removed_only_with_prune() -> None:
    name = DOCUMENT.name
    created = planned_responses(responses())
    assert created.lines()[:2] == [f"+ create document {name}", "+ create rule ml-replace-gpu-host"]
    assert created.changes[0].writes == (Write("ssm", "CreateDocument", {
        "Name": name, "Content": DOCUMENT.content, "DocumentType": "Automation", "DocumentFormat": "JSON",
        "Tags": ROLE_TAGS}),)
    same = planned_responses(responses(), document=ActualDocument(name, DOCUMENT.content, "7", OURS))
    assert (same.changes[0].action, same.changes[0].details, same.changes[0].writes) == (UNCHANGED, (), ())
    # The rule targets `$DEFAULT`: the version UpdateDocument makes (the latest plus one) becomes the default.
    edited = ActualDocument(name, '{"schemaVersion":"0.2"}', "7", {**OURS, "team": "x"})
    updated = planned_responses(responses(), document=edited)
    assert updated.lines()[0] == f"~ update document {name} (Content; Tags)"
    assert updated.changes[0].writes == (
        Write("ssm", "UpdateDocument", {"Name": name, "Content": DOCUMENT.content, "DocumentVersion": "$LATEST",
                                        "DocumentFormat": "JSON"}),
        Write("ssm", "UpdateDocumentDefaultVersion", {"Name": name, "DocumentVersion": "8"}),
        Write("ssm", "AddTagsToResource", {"ResourceId": name, "ResourceType": "Document", "Tags": ROLE_TAGS}),
    )
    retagged = planned_responses(responses(), document=replace(edited, content=DOCUMENT.content)).changes[0]
    assert (retagged.action, retagged.details, retagged.writes) == (UPDATE, ("Tags",), (
        Write("ssm", "AddTagsToResource", {"ResourceId": name, "ResourceType": "Document", "Tags": ROLE_TAGS}),))

    theirs = ActualDocument(name, DOCUMENT.content, "1", {})
    assert planned_responses(responses(), document=theirs).lines()[0] == (
        f"! conflict document {name} (exists without this stack's tags; left alone)")
    assert planned_responses(None, document=theirs, prune=True).changes == ()
    ours = ActualDocument(name, DOCUMENT.content, "1", OURS)
    assert planned_responses(None, document=ours).lines()[0] == (
        f"! keep document {name} (no longer in the spec; --prune deletes it)")
    assert planned_responses(None, document=ours, prune=True).changes == (
        Change(DELETE, "document", name, writes=(Write("ssm", "DeleteDocument", {"Name": name}),)),)


def test_responses_are_planned_document_roles_by_name_then_rule_and_pruned_after_the_rules() -> None:
    automation, events = role(), role("ml-us-east-1-start-replace", policy_name="start")
    gone = role("ml-us-east-1-old")
    document = ActualDocument(DOCUMENT.name, DOCUMENT.content, "1", OURS)
    plan = planned_responses(responses(automation, events), document=document, roles=(
        ActualRole(gone, OURS, ()), ActualRole(automation, OURS, ("replace-unhealthy-gpu-host",))))
    assert plan.lines() == [
        f"= unchanged document {DOCUMENT.name}",
        "! keep role ml-us-east-1-old (no longer in the spec; --prune deletes it)",
        "= unchanged role ml-us-east-1-replace-gpu-host",
        "+ create role ml-us-east-1-start-replace",
        "+ create rule ml-replace-gpu-host",
        "Plan: 2 to create, 0 to update, 0 to delete, 2 unchanged, 1 kept.",
    ]
    # The whole stack pruned: rules first (they target the document, the role, the topic), then dashboards,
    # the responses' roles and document, composites, alarms, subscriptions, topics.
    child = alarm("ml/a")
    composite = CompositeDefinition("ml/fleet/critical", f"Fleet. {ownership_marker(STACK)}", 'ALARM("ml/a")')
    subscription = ActualSubscription("email", "a@example.com", f"{TOPIC_ARN}:1")
    everything = ActualStack(
        {child.name: actual_alarm(child)},
        {"ml-warning": actual_topic(subscriptions=(subscription,)), "ml-critical": actual_topic(name="ml-critical")},
        {"ml-us-east-1-old": ActualDashboard("ml-us-east-1-old", "{}", owned=True)},
        ActualRule(rule(), OURS), {composite.name: ActualAlarm(composite, "arn:composite")},
        ActualResponses(document, {gone.name: ActualRole(gone, OURS, ())}),
        ActualRule(RESPONSE_RULE, OURS),
    )
    desired = DesiredStack(STACK, WANTED_TAGS, {"warning": topic()}, (), (), None)
    assert Planner(desired, everything, prune=True).plan().lines() == [
        "= unchanged topic ml-warning",
        "- delete rule ml-alarm-state",
        "- delete rule ml-replace-gpu-host",
        "- delete dashboard ml-us-east-1-old",
        f"- delete document {DOCUMENT.name}",
        "- delete role ml-us-east-1-old",
        "- delete composite ml/fleet/critical",
        "- delete alarm ml/a",
        "- delete subscription ml-warning email:a@example.com",
        "- delete topic ml-critical",
        "Plan: 0 to create, 0 to update, 9 to delete, 1 unchanged.",
    ]


def test_stale_names_this_stacks_topics_with_drifted_attributes_and_rules_with_drifted_targets() -> None:
    attributes = (("KmsMasterKeyId", "alias/ours"), ("Policy", ""))
    target = Target("t1", TOPIC_ARN)
    desired = DesiredStack(STACK, WANTED_TAGS, {"warning": topic(attributes)}, (), (), rule(target),
                           responses=DesiredResponses(responses(), ()))
    # An attribute the topic lacks reads as "" (GetTopicAttributes omits an empty Policy): no drift.
    same = ActualStack({}, {"ml-warning": actual_topic({"KmsMasterKeyId": "alias/ours"})}, {},
                       ActualRule(rule(target), None), {}, response_rule=ActualRule(RESPONSE_RULE, None))
    assert stale(desired, same) == set()
    drifted = ActualStack({}, {"ml-warning": actual_topic({"KmsMasterKeyId": "alias/theirs"})}, {},
                          ActualRule(rule(Target("t1", CRITICAL)), None), {},
                          response_rule=ActualRule(replace(RESPONSE_RULE, description="edited"), None))
    assert stale(desired, drifted) == {"ml-warning", "ml-alarm-state", "ml-replace-gpu-host"}
