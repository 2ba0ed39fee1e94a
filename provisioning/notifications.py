"""SNS: one topic per severity, its policy, encryption and subscriptions, and the test notification.

A topic the spec does not name is created as `<stack>-<severity>` (by name, then configured: CreateTopic
is idempotent only with identical attributes). Its policy lets only CloudWatch alarms of this stack, and
the stack's EventBridge rule when it targets the topic, publish. A topic the spec names by ARN is used as
it is and never modified.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from agent.schema import render
from provisioning.alarm_catalogue import SEVERITIES
from provisioning.alarms import Actions, name_patterns
from provisioning.aws import Account, Caller
from provisioning.spec import Spec, Topic

CLOUDWATCH = "cloudwatch.amazonaws.com"
EVENTS = "events.amazonaws.com"
KMS_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey*")
NOT_FOUND = ("NotFound", "NotFoundException")


def canonical_json(document: Any) -> str:
    """One spelling per document, so equal policies, patterns and bodies compare equal as strings."""
    if isinstance(document, str):
        document = json.loads(document)
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class TopicDefinition:
    severity: str
    name: str
    arn: str
    managed: bool  # created and configured by this stack; False: an existing topic used as it is
    attributes: tuple[tuple[str, str], ...] = ()  # Policy (canonical JSON) and KmsMasterKeyId
    subscriptions: tuple[tuple[str, str], ...] = ()  # (protocol, endpoint)


def topic_name(stack: str, severity: str) -> str:
    return f"{stack}-{severity}"


def policy_id(stack: str) -> str:
    """The Id of every policy this stack writes: GetTopicAttributes, the one read a rerun makes per topic,
    tells the stack's own topics by it, without reading their tags."""
    return f"infrawatch-{stack}"


def owns_topic(policy: str, stack: str) -> bool:
    try:
        document = json.loads(policy) if policy else {}
    except json.JSONDecodeError:
        return False
    return isinstance(document, dict) and document.get("Id") == policy_id(stack)


def desired_topics(spec: Spec, account: Account, rule_arn: str) -> dict[str, TopicDefinition]:
    """Topics by severity; `rule_arn` is the stack's rule when it publishes to the critical topic, else ""."""
    topics = {}
    for severity in SEVERITIES:
        settings: Topic = getattr(spec.notifications, severity)
        if settings.topic_arn:
            topics[severity] = TopicDefinition(
                severity, settings.topic_arn.rsplit(":", 1)[1], settings.topic_arn, managed=False
            )
            continue
        name = topic_name(spec.stack, severity)
        arn = account.arn("sns", name)
        publisher_rule = rule_arn if severity == "critical" else ""
        topics[severity] = TopicDefinition(
            severity, name, arn, managed=True,
            attributes=(
                ("KmsMasterKeyId", settings.kms_key_id),
                ("Policy", topic_policy(arn, account, spec.stack, publisher_rule)),
            ),
            subscriptions=tuple(sorted((item.protocol, item.endpoint) for item in settings.subscriptions)),
        )
    return topics


def rule_notifies(spec: Spec) -> bool:
    """Whether the stack's EventBridge rule publishes to the critical topic (its critical alarms' only path
    there for the states it matches; see `actions`). Only a topic this stack creates: an existing topic is
    used as it is, so its policy may not let EventBridge publish, and the alarms' own actions stay its path."""
    return (
        spec.events.enabled and spec.events.notify_critical_topic and not spec.notifications.critical.topic_arn
        and bool(name_patterns(spec, "critical"))
    )


def topic_policy(topic_arn: str, account: Account, stack: str, rule_arn: str) -> str:
    statements: list[dict[str, Any]] = [{
        "Sid": "CloudWatchAlarmsOfThisStack",
        "Effect": "Allow",
        "Principal": {"Service": CLOUDWATCH},
        "Action": "sns:Publish",
        "Resource": topic_arn,
        "Condition": {
            "StringEquals": {"aws:SourceAccount": account.id},
            "ArnLike": {"aws:SourceArn": account.arn("cloudwatch", f"alarm:{stack}/*")},
        },
    }]
    if rule_arn:
        statements.append({
            "Sid": "EventBridgeAlarmStateRule",
            "Effect": "Allow",
            "Principal": {"Service": EVENTS},
            "Action": "sns:Publish",
            "Resource": topic_arn,
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account.id},
                "ArnEquals": {"aws:SourceArn": rule_arn},
            },
        })
    return canonical_json({"Version": "2012-10-17", "Id": policy_id(stack), "Statement": statements})


def actions(spec: Spec, topics: Mapping[str, TopicDefinition]) -> dict[str, Actions]:
    """Each severity's alarms notify their own topic, once: where the rule already delivers a state to the
    critical topic (with a readable message), the critical alarms' own action for that state is left out."""
    by_rule = set(spec.events.states) if rule_notifies(spec) else set()
    found = {}
    for severity, topic in topics.items():
        routed = by_rule if severity == "critical" else set()
        ok = getattr(spec.notifications, severity).ok_notifications
        found[severity] = Actions(
            alarm=() if "ALARM" in routed else (topic.arn,),
            ok=(topic.arn,) if ok and "OK" not in routed else (),
        )
    return found


def preflight_problems(spec: Spec, topics: Mapping[str, TopicDefinition], caller: Caller) -> list[str]:
    """Existing topics must exist in the stack's region; encryption keys must be customer-managed and usable
    by the publishers."""
    problems = []
    for severity, topic in topics.items():
        settings: Topic = getattr(spec.notifications, severity)
        path = f"notifications.{severity}"
        if not topic.managed:
            region = caller.clients["cloudwatch"].meta.region_name
            topic_region = topic.arn.split(":")[3]
            if topic_region != region:
                problems.append(
                    f"{path}.topic_arn: the topic is in {topic_region}, but this stack is provisioned in {region} "
                    f"and an alarm can notify only a topic of its own region, got {render(topic.arn)}"
                )
                continue
            try:
                caller("sns", "GetTopicAttributes", TopicArn=topic.arn)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") not in NOT_FOUND:
                    raise
                problems.append(
                    f"{path}.topic_arn: no such topic (GetTopicAttributes), got {render(topic.arn)}"
                )
        elif settings.kms_key_id:
            publishers = [CLOUDWATCH, *([EVENTS] if severity == "critical" and rule_notifies(spec) else [])]
            problem = _key_problem(settings.kms_key_id, publishers, caller)
            if problem:
                problems.append(f"{path}.kms_key_id: {problem}, got {render(settings.kms_key_id)}")
    return problems


def _key_problem(key_id: str, publishers: list[str], caller: Caller) -> str | None:
    try:
        metadata = caller("kms", "DescribeKey", KeyId=key_id)["KeyMetadata"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in NOT_FOUND:
            raise
        return "no such KMS key (DescribeKey)"
    if metadata.get("KeyManager") != "CUSTOMER":
        return "must be a customer-managed key: CloudWatch cannot use AWS-managed keys"
    policy_text = caller("kms", "GetKeyPolicy", KeyId=metadata["KeyId"], PolicyName="default")["Policy"]
    policy = json.loads(policy_text)
    missing = [principal for principal in publishers if not _allows(policy, principal)]
    if missing:
        return f"the key policy must allow {' and '.join(missing)} to use {' and '.join(KMS_ACTIONS)}"
    return None


def _allows(policy: Mapping[str, Any], service: str) -> bool:
    granted: set[str] = set()
    for statement in _as_list(policy.get("Statement", [])):
        if statement.get("Effect") != "Allow" or "Condition" in statement:
            continue
        principal = statement.get("Principal", {})
        services = _as_list(principal.get("Service", [])) if isinstance(principal, dict) else [principal]
        if service in services or "*" in services:
            granted.update(action.lower() for action in _as_list(statement.get("Action", [])))
    return "kms:*" in granted or all(action.lower() in granted for action in KMS_ACTIONS)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def send_test_notifications(spec: Spec, topics: Mapping[str, TopicDefinition], caller: Caller) -> list[str]:
    """Publishes one message to each topic; returns a line per topic with its message id."""
    lines = []
    for severity, topic in topics.items():
        result = caller(
            "sns", "Publish", TopicArn=topic.arn,
            Subject=f"infrawatch test notification ({spec.stack}, {severity})",
            Message=(
                f"This is a test of the {severity} notifications of infrawatch stack {spec.stack}. "
                f"Alarms of this severity will notify this topic ({topic.arn})."
            ),
        )
        lines.append(f"sent test notification to {topic.arn} (message {result['MessageId']})")
    return lines
