"""EventBridge: a rule on this stack's alarm state changes, to the critical topic and an automated response.

CloudWatch emits `CloudWatch Alarm State Change` events for every alarm. When the rule notifies the critical
topic it matches only this stack's critical alarms, by name (`wildcard` filters from `alarms.name_patterns`),
and delivers a readable message (an input transformer), while those alarms' own actions leave that state out,
so every subscriber hears of each alarm once. Otherwise it matches every alarm of the stack by the name
prefix `<stack>/` (no other stack's names start with it: a stack name has no `/`). A Lambda target's resource
policy must let events.amazonaws.com invoke it from the rule's ARN; an SSM Automation target needs
`events.role_arn`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provisioning.alarms import name_patterns
from provisioning.aws import Account
from provisioning.notifications import canonical_json, rule_notifies
from provisioning.spec import Spec

CRITICAL_TOPIC_TARGET = "critical-topic"
AUTOMATION_TARGET = "automated-response"


# What a subscriber reads instead of the raw event JSON: EventBridge fills each <name> from the event's
# `detail` by the paths below; a template that is a JSON string delivers plain text (input transformer docs).
MESSAGE_PATHS = (
    ("alarm", "$.detail.alarmName"),
    ("description", "$.detail.configuration.description"),
    ("previous", "$.detail.previousState.value"),
    ("reason", "$.detail.state.reason"),
    ("region", "$.region"),
    ("state", "$.detail.state.value"),
    ("time", "$.time"),
)
MESSAGE_TEMPLATE = json.dumps(
    "<alarm> is <state> (was <previous>) in <region> since <time>. <description> Why: <reason>",
    ensure_ascii=False,
)


@dataclass(frozen=True)
class Target:
    id: str
    arn: str
    role_arn: str = ""
    input_paths: tuple[tuple[str, str], ...] = ()  # the input transformer; () sends the event as it is
    input_template: str = ""

    def request(self) -> dict[str, Any]:
        target: dict[str, Any] = {"Id": self.id, "Arn": self.arn}
        if self.role_arn:
            target["RoleArn"] = self.role_arn
        if self.input_template:
            target["InputTransformer"] = {
                "InputPathsMap": dict(self.input_paths), "InputTemplate": self.input_template,
            }
        return target

    @classmethod
    def from_described(cls, raw: Mapping[str, Any]) -> Target:
        transformer = raw.get("InputTransformer", {})
        return cls(
            id=raw["Id"], arn=raw["Arn"], role_arn=raw.get("RoleArn", ""),
            input_paths=tuple(sorted(transformer.get("InputPathsMap", {}).items())),
            input_template=transformer.get("InputTemplate", ""),
        )


@dataclass(frozen=True)
class RuleDefinition:
    name: str
    arn: str
    pattern: str  # canonical JSON
    description: str
    state: str = "ENABLED"
    targets: tuple[Target, ...] = ()  # sorted by id

    def request(self) -> dict[str, Any]:
        """PutRule's parameters, without Tags (applied only at creation; reconciled separately)."""
        return {
            "Name": self.name,
            "EventPattern": self.pattern,
            "State": self.state,
            "Description": self.description,
        }


def rule_name(stack: str) -> str:
    return f"{stack}-alarm-state"


def rule_arn(account: Account, stack: str) -> str:
    return account.arn("events", f"rule/{rule_name(stack)}")


def rule_description(stack: str, what: str) -> str:
    """Every rule description this stack writes starts with its marker: DescribeRule, the read a rerun makes
    anyway, tells the stack's own rules by it, without reading their tags."""
    return f"infrawatch stack {stack}: {what}"


def owns_rule(description: str, stack: str) -> bool:
    return description.startswith(rule_description(stack, ""))


def alarm_name_prefix(stack: str) -> str:
    return f"{stack}/"


def desired_rule(spec: Spec, account: Account, critical_topic_arn: str) -> RuleDefinition | None:
    if not spec.events.enabled:
        return None
    notifies = rule_notifies(spec)
    # Notifying the critical topic, the rule matches what should page and nothing else: warnings reach
    # only the warning topic, through their alarms' own actions.
    names: list[Any] = (
        [{"wildcard": pattern} for pattern in name_patterns(spec, "critical")] if notifies
        else [{"prefix": alarm_name_prefix(spec.stack)}]
    )
    pattern = {
        "source": ["aws.cloudwatch"],
        "detail-type": ["CloudWatch Alarm State Change"],
        "detail": {"alarmName": names, "state": {"value": sorted(spec.events.states)}},
    }
    targets = []
    if notifies:
        targets.append(Target(CRITICAL_TOPIC_TARGET, critical_topic_arn, input_paths=MESSAGE_PATHS,
                              input_template=MESSAGE_TEMPLATE))
    if spec.events.target_arn:
        targets.append(Target(AUTOMATION_TARGET, spec.events.target_arn, spec.events.role_arn))
    if not targets:
        return None  # nothing to deliver to (an existing critical topic keeps the alarms' own actions)
    return RuleDefinition(
        name=rule_name(spec.stack),
        arn=rule_arn(account, spec.stack),
        pattern=canonical_json(pattern),
        description=rule_description(spec.stack, "state changes of its alarms"),
        targets=tuple(sorted(targets, key=lambda target: target.id)),
    )
