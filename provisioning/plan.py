"""The plan: desired vs actual state, one change per resource, each with exactly the writes it needs.

A resource whose normalized form and tags equal the desired ones is unchanged and needs no write, so a
second run with the same spec writes nothing. A resource with one of this stack's names that is not
this stack's (no tags or marker) is a conflict and left alone. Alarms are told by the marker their
description ends with, so an unchanged alarm costs no call beyond its DescribeAlarms page; tags are
reconciled on the alarms whose definition changed (`stale`), the only ones whose tags are read.
Resources of this stack the spec no longer wants are deleted only with `--prune`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from provisioning.alarms import AlarmDefinition, host_of
from provisioning.composite import CompositeDefinition
from provisioning.dashboards import DashboardDefinition
from provisioning.events import RuleDefinition
from provisioning.notifications import TopicDefinition
from provisioning.responses import ActualDocument, ActualRole, DocumentDefinition, RoleDefinition
from provisioning.stack import DesiredStack
from provisioning.state import ActualAlarm, ActualRule, ActualStack, ActualTopic, owned

CREATE, UPDATE, DELETE, UNCHANGED = "create", "update", "delete", "unchanged"
CONFLICT, KEEP = "conflict", "keep"
NOT_OURS = ("exists without this stack's tags; left alone",)
NOT_MARKED = ("exists without this stack's marker; left alone",)
SYMBOLS = {CREATE: "+", UPDATE: "~", DELETE: "-", UNCHANGED: "=", CONFLICT: "!", KEEP: "!"}
MAX_SHOWN_VALUE = 60  # longer values (policies, bodies, lists) are named, not printed


@dataclass(frozen=True)
class Write:
    service: str
    operation: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Change:
    action: str
    kind: str
    name: str
    details: tuple[str, ...] = ()
    writes: tuple[Write, ...] = ()

    def line(self) -> str:
        text = f"{SYMBOLS[self.action]} {self.action} {self.kind} {self.name}"
        return f"{text} ({'; '.join(self.details)})" if self.details else text


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]

    @property
    def writes(self) -> int:
        return sum(len(change.writes) for change in self.changes)

    def count(self, action: str) -> int:
        return sum(1 for change in self.changes if change.action == action)

    def lines(self) -> list[str]:
        summary = (
            f"Plan: {self.count(CREATE)} to create, {self.count(UPDATE)} to update, "
            f"{self.count(DELETE)} to delete, {self.count(UNCHANGED)} unchanged"
        )
        extra = [f"{self.count(action)} {label}" for action, label in ((CONFLICT, "in conflict"), (KEEP, "kept"))
                 if self.count(action)]
        return [change.line() for change in self.changes] + [", ".join([summary, *extra]) + "."]


def _set_attribute(topic_arn: str, name: str, value: str) -> Write:
    params = {"TopicArn": topic_arn, "AttributeName": name, "AttributeValue": value}
    return Write("sns", "SetTopicAttributes", params)


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def _changed(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """One detail per differing field: `Threshold 90.0 -> 85.0`, or just the name for long values."""
    details = []
    for key in sorted(set(desired) | set(actual)):
        old, new = actual.get(key), desired.get(key)
        if old == new:
            continue
        shown = f"{old!r} -> {new!r}"
        details.append(f"{key} {shown}" if len(shown) <= MAX_SHOWN_VALUE else key)
    return details


def _missing_tags(desired: Mapping[str, str], actual: Mapping[str, str]) -> dict[str, str]:
    """The desired tags the resource lacks or carries with another value. Tags with other keys belong to
    whoever set them (AWS Config, tag policies, cost tooling) and are never removed or rewritten."""
    return {key: value for key, value in desired.items() if actual.get(key) != value}


def _tag_writes(
    service: str, arn_key: str, arn: str, desired: Mapping[str, str], actual: Mapping[str, str],
    *, operation: str = "TagResource", **resource: str,
) -> list[Write]:
    """`operation` (TagResource unless named) for this stack's own tag keys that are missing or changed;
    nothing else. `resource` adds identifying parameters beside `arn_key` (SSM's ResourceType)."""
    missing = _missing_tags(desired, actual)
    return [Write(service, operation, {arn_key: arn, **resource, "Tags": _tag_list(missing)})] if missing else []


def _tag_details(desired: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    return ["Tags"] if _missing_tags(desired, actual) else []


MAX_PRUNE_SHARE = 0.2  # more than this share of the stack's alarms deleted in one plan needs confirming


def mass_deletion(plan: Plan, actual: ActualStack, stack: str, empty_groups: Iterable[str]) -> list[str]:
    """Why the plan deletes suspiciously much: discovery that finds nothing (a namespace typo, every host
    down for hours) must not silently take a group's alarms with it. Empty: nothing suspicious."""
    deleted = [change.name for change in plan.changes if change.action == DELETE and change.kind == "alarm"]
    if not deleted:
        return []
    reasons = []
    total = sum(1 for alarm in actual.alarms.values() if alarm.owned(stack))
    if len(deleted) > MAX_PRUNE_SHARE * total:
        reasons.append(
            f"the plan deletes {len(deleted)} of this stack's {total} alarms, more than "
            f"{MAX_PRUNE_SHARE * 100:g} %"
        )
    if any(host_of(stack, name) for name in deleted):
        reasons += [f"{group} found no hosts, so the plan deletes every alarm of that group" for group in empty_groups]
    return reasons


def pruned_hosts(desired: DesiredStack, actual: ActualStack) -> set[str]:
    """EC2 instance ids of the hosts whose alarms the spec no longer wants: `--prune` asks EC2 about them."""
    wanted = {alarm.name for alarm in desired.alarms}
    hosts = {host_of(desired.stack, name) for name in actual.alarms if name not in wanted}
    return {host for host in hosts if host.startswith("i-")}


class Planner:
    def __init__(
        self, desired: DesiredStack, actual: ActualStack, *, prune: bool,
        instance_states: Mapping[str, str] | None = None,
    ) -> None:
        self._desired = desired
        self._actual = actual
        self._prune = prune
        self._tags = desired.tags
        # {instance id: EC2 state} of `pruned_hosts`; an id EC2 no longer knows is absent (long terminated).
        self._instance_states = instance_states or {}

    def plan(self) -> Plan:
        changes = [
            *self._topics(),
            *self._alarms(),
            *self._composites(),
            *self._dashboards(),
            *self._rule(self._desired.rule, self._actual.rule),
            *self._responses(),
        ]
        ordered = [change for change in changes if change.action != DELETE]
        ordered += self._deletions_in_order([change for change in changes if change.action == DELETE])
        return Plan(tuple(ordered))

    def _removed(self, kind: str, name: str, writes: Iterable[Write], protected: tuple[str, ...] = ()) -> Change:
        if not self._prune:
            return Change(KEEP, kind, name, ("no longer in the spec; --prune deletes it",))
        if protected:
            return Change(KEEP, kind, name, protected)
        return Change(DELETE, kind, name, writes=tuple(writes))

    @staticmethod
    def _deletions_in_order(deletions: list[Change]) -> list[Change]:
        # Rules first (they target the topic, the document and a role), topics last (alarms notify them).
        # Composites before the alarms their rules name: CloudWatch refuses to delete a composite's child.
        order = {"rule": 0, "role": 1, "document": 1, "dashboard": 1, "composite": 2, "alarm": 3,
                 "subscription": 4, "topic": 5}
        return sorted(deletions, key=lambda change: order[change.kind])

    # --- topics and subscriptions -----------------------------------------------------------------

    def _topics(self) -> list[Change]:
        changes = []
        wanted = {topic.name for topic in self._desired.topics.values() if topic.managed}
        # A topic of this stack that the spec now names by ARN (used as it is) is still in use.
        used = {topic.arn for topic in self._desired.topics.values()}
        for topic in self._desired.topics.values():
            if not topic.managed:
                changes.append(Change(UNCHANGED, "topic", topic.arn, ("existing topic, used as it is",)))
                continue
            actual = self._actual.topics.get(topic.name)
            if actual is not None and not actual.owned(self._desired.stack):
                changes.append(Change(CONFLICT, "topic", topic.name, NOT_OURS))
                continue
            changes.append(self._topic(topic, actual))
            changes += self._subscriptions(topic, actual)
        for name, actual in self._actual.topics.items():
            if name not in wanted and actual.arn not in used and actual.owned(self._desired.stack):
                deletion = Write("sns", "DeleteTopic", {"TopicArn": actual.arn})
                changes.append(self._removed("topic", name, [deletion]))
        return changes

    def _topic(self, topic: TopicDefinition, actual: ActualTopic | None) -> Change:
        attributes = dict(topic.attributes)
        if actual is None:
            writes = [Write("sns", "CreateTopic", {"Name": topic.name, "Tags": _tag_list(self._tags)})]
            writes += [_set_attribute(topic.arn, key, value) for key, value in attributes.items() if value]
            return Change(CREATE, "topic", topic.name, writes=tuple(writes))
        writes = [
            _set_attribute(topic.arn, key, value)
            for key, value in attributes.items() if actual.attributes.get(key, "") != value
        ]
        details = _changed(attributes, {key: actual.attributes.get(key, "") for key in attributes})
        if actual.tags is not None:  # read only without the marker or for a rewritten topic (`stale`)
            writes += _tag_writes("sns", "ResourceArn", topic.arn, self._tags, actual.tags)
            details += _tag_details(self._tags, actual.tags)
        return Change(UPDATE if writes else UNCHANGED, "topic", topic.name, tuple(details), tuple(writes))

    def _subscriptions(self, topic: TopicDefinition, actual: ActualTopic | None) -> list[Change]:
        existing = {(item.protocol, item.endpoint): item for item in (actual.subscriptions if actual else ())}
        changes = []
        for protocol, endpoint in topic.subscriptions:
            name = f"{topic.name} {protocol}:{endpoint}"
            if (protocol, endpoint) in existing:
                changes.append(Change(UNCHANGED, "subscription", name))
            else:
                params = {"TopicArn": topic.arn, "Protocol": protocol, "Endpoint": endpoint}
                subscribe = Write("sns", "Subscribe", params)
                changes.append(Change(CREATE, "subscription", name, writes=(subscribe,)))
        for key, item in existing.items():
            if key in topic.subscriptions:
                continue
            name = f"{topic.name} {item.protocol}:{item.endpoint}"
            if not item.confirmed:
                pending = ("pending confirmation: SNS cannot remove it yet",)
                changes.append(Change(KEEP, "subscription", name, pending))
            else:
                changes.append(self._removed(
                    "subscription", name, [Write("sns", "Unsubscribe", {"SubscriptionArn": item.arn})]
                ))
        return changes

    # --- alarms -----------------------------------------------------------------------------------

    def _alarms(self) -> list[Change]:
        changes = [self._alarm("alarm", "PutMetricAlarm", alarm, self._actual.alarms.get(alarm.name))
                   for alarm in self._desired.alarms]
        return changes + self._unwanted("alarm", self._actual.alarms, {alarm.name for alarm in self._desired.alarms})

    def _composites(self) -> list[Change]:
        composites = self._desired.composites
        changes = [self._alarm("composite", "PutCompositeAlarm", composite, self._actual.composites.get(composite.name))
                   for composite in composites]
        return changes + self._unwanted("composite", self._actual.composites, {item.name for item in composites})

    def _unwanted(self, kind: str, actual: Mapping[str, ActualAlarm], wanted: set[str]) -> list[Change]:
        return [
            self._removed(kind, name, [Write("cloudwatch", "DeleteAlarms", {"AlarmNames": [name]})],
                          self._protected(name, alarm))
            for name, alarm in actual.items() if name not in wanted and alarm.owned(self._desired.stack)
        ]

    def _protected(self, name: str, actual: ActualAlarm) -> tuple[str, ...]:
        """Why `--prune` must keep an alarm the spec no longer wants: a host that discovery missed (down for
        hours, a namespace typo) is exactly when its firing heartbeat alarm matters."""
        reasons = []
        if actual.state == "ALARM":
            reasons.append("in ALARM: --prune never deletes a firing alarm")
        host = host_of(self._desired.stack, name)
        state = self._instance_states.get(host, "terminated")
        if state != "terminated":
            reasons.append(f"host {host} is {state} in EC2, not terminated: --prune keeps its alarms")
        return tuple(reasons)

    def _alarm(
        self, kind: str, operation: str, alarm: AlarmDefinition | CompositeDefinition, actual: ActualAlarm | None
    ) -> Change:
        request = alarm.request()
        if actual is None:
            write = Write("cloudwatch", operation, {**request, "Tags": _tag_list(self._tags)})
            return Change(CREATE, kind, alarm.name, writes=(write,))
        if not actual.owned(self._desired.stack):
            return Change(CONFLICT, kind, alarm.name, NOT_MARKED)
        details = _changed(request, actual.definition.request())
        writes = [Write("cloudwatch", operation, request)] if details else []
        if actual.tags is not None:  # read only for a changed alarm (`stale`)
            writes += _tag_writes("cloudwatch", "ResourceARN", actual.arn, self._tags, actual.tags)
            details += _tag_details(self._tags, actual.tags)
        return Change(UPDATE if writes else UNCHANGED, kind, alarm.name, tuple(details), tuple(writes))

    # --- dashboards -------------------------------------------------------------------------------

    def _dashboards(self) -> list[Change]:
        changes = [self._dashboard(dashboard) for dashboard in self._desired.dashboards]
        wanted = {dashboard.name for dashboard in self._desired.dashboards}
        for name, actual in self._actual.dashboards.items():
            if name not in wanted and actual.owned:
                changes.append(self._removed(
                    "dashboard", name, [Write("cloudwatch", "DeleteDashboards", {"DashboardNames": [name]})]
                ))
        return changes

    def _dashboard(self, dashboard: DashboardDefinition) -> Change:
        actual = self._actual.dashboards.get(dashboard.name)
        params = {"DashboardName": dashboard.name, "DashboardBody": dashboard.body}
        write = Write("cloudwatch", "PutDashboard", params)
        if actual is None:
            return Change(CREATE, "dashboard", dashboard.name, writes=(write,))
        if not actual.owned:
            return Change(CONFLICT, "dashboard", dashboard.name, NOT_MARKED)
        if actual.body != dashboard.body:
            return Change(UPDATE, "dashboard", dashboard.name, ("DashboardBody",), (write,))
        return Change(UNCHANGED, "dashboard", dashboard.name)

    # --- EventBridge rule -------------------------------------------------------------------------

    def _rule(self, desired: RuleDefinition | None, actual: ActualRule | None) -> list[Change]:
        if actual is not None and not actual.owned(self._desired.stack):
            name = actual.definition.name
            return [Change(CONFLICT, "rule", name, NOT_OURS)] if desired else []
        if desired is None:
            if actual is None:
                return []
            return [self._removed("rule", actual.definition.name, self._rule_deletion(actual))]
        if actual is None:
            writes = [Write("events", "PutRule", {**desired.request(), "Tags": _tag_list(self._tags)})]
            if desired.targets:
                writes.append(Write("events", "PutTargets", {
                    "Rule": desired.name, "Targets": [target.request() for target in desired.targets],
                }))
            return [Change(CREATE, "rule", desired.name, writes=tuple(writes))]
        return [self._rule_update(desired, actual)]

    def _rule_update(self, desired: RuleDefinition, actual: ActualRule) -> Change:
        details = _changed(desired.request(), actual.definition.request())
        writes = [Write("events", "PutRule", desired.request())] if details else []
        current = {target.id: target for target in actual.definition.targets}
        stale = [target for target in desired.targets if current.get(target.id) != target]
        if stale:
            writes.append(Write("events", "PutTargets", {
                "Rule": desired.name, "Targets": [target.request() for target in stale],
            }))
        extra = sorted(set(current) - {target.id for target in desired.targets})
        if extra:
            writes.append(Write("events", "RemoveTargets", {"Rule": desired.name, "Ids": extra}))
        if stale or extra:
            details.append("Targets")
        if actual.tags is not None:  # read only without the marker or for a rewritten rule (`stale`)
            writes += _tag_writes("events", "ResourceARN", desired.arn, self._tags, actual.tags)
            details += _tag_details(self._tags, actual.tags)
        return Change(UPDATE if writes else UNCHANGED, "rule", desired.name, tuple(details), tuple(writes))

    # --- automated responses: the Automation document and its two roles (the rule is planned above) ------

    def _responses(self) -> list[Change]:
        replace = self._desired.responses.replace
        actual = self._actual.responses
        changes = [self._document(replace.document if replace else None, actual.document)]
        wanted = {role.name: role for role in replace.roles} if replace else {}
        for name in sorted(set(wanted) | set(actual.roles)):
            changes.append(self._role(wanted.get(name), actual.roles.get(name)))
        changes += self._rule(replace.rule if replace else None, self._actual.response_rule)
        return [change for change in changes if change is not None]

    def _document(self, desired: DocumentDefinition | None, actual: ActualDocument | None) -> Change | None:
        if actual is not None and not owned(actual.tags, self._desired.stack):
            return Change(CONFLICT, "document", actual.name, NOT_OURS) if desired else None
        if desired is None:
            if actual is None:
                return None
            return self._removed("document", actual.name, [Write("ssm", "DeleteDocument", {"Name": actual.name})])
        if actual is None:
            return Change(CREATE, "document", desired.name, writes=(Write("ssm", "CreateDocument", {
                "Name": desired.name, "Content": desired.content, "DocumentType": "Automation",
                "DocumentFormat": "JSON", "Tags": _tag_list(self._tags),
            }),))
        writes = []
        details = []
        if desired.content != actual.content:
            # The rule targets `$DEFAULT`: the new version (versions count up from the latest) becomes it.
            writes += [
                Write("ssm", "UpdateDocument", {
                    "Name": desired.name, "Content": desired.content, "DocumentVersion": "$LATEST",
                    "DocumentFormat": "JSON",
                }),
                Write("ssm", "UpdateDocumentDefaultVersion", {
                    "Name": desired.name, "DocumentVersion": str(int(actual.latest_version) + 1),
                }),
            ]
            details.append("Content")
        writes += _tag_writes(
            "ssm", "ResourceId", desired.name, self._tags, actual.tags,
            operation="AddTagsToResource", ResourceType="Document",
        )
        details += _tag_details(self._tags, actual.tags)
        return Change(UPDATE if writes else UNCHANGED, "document", desired.name, tuple(details), tuple(writes))

    def _role(self, desired: RoleDefinition | None, actual: ActualRole | None) -> Change | None:
        if actual is not None and not owned(actual.tags, self._desired.stack):
            return Change(CONFLICT, "role", actual.definition.name, NOT_OURS) if desired else None
        if desired is None:
            if actual is None:
                return None
            name = actual.definition.name
            writes = [Write("iam", "DeleteRolePolicy", {"RoleName": name, "PolicyName": policy})
                      for policy in actual.policies]
            return self._removed("role", name, [*writes, Write("iam", "DeleteRole", {"RoleName": name})])
        put_policy = Write("iam", "PutRolePolicy", {
            "RoleName": desired.name, "PolicyName": desired.policy_name, "PolicyDocument": desired.policy,
        })
        if actual is None:
            create = Write("iam", "CreateRole", {
                "RoleName": desired.name, "AssumeRolePolicyDocument": desired.trust,
                "Description": desired.description, "Tags": _tag_list(self._tags),
            })
            return Change(CREATE, "role", desired.name, writes=(create, put_policy))
        current = actual.definition
        writes, details = [], []
        if current.trust != desired.trust:
            writes.append(Write("iam", "UpdateAssumeRolePolicy", {
                "RoleName": desired.name, "PolicyDocument": desired.trust,
            }))
            details.append("AssumeRolePolicyDocument")
        if current.description != desired.description:
            writes.append(Write("iam", "UpdateRole", {"RoleName": desired.name, "Description": desired.description}))
            details.append("Description")
        if (current.policy_name, current.policy) != (desired.policy_name, desired.policy):
            writes.append(put_policy)
            details.append(f"policy {desired.policy_name}")
        writes += [Write("iam", "DeleteRolePolicy", {"RoleName": desired.name, "PolicyName": policy})
                   for policy in actual.policies if policy != desired.policy_name]
        writes += _tag_writes("iam", "RoleName", desired.name, self._tags, actual.tags,
                              operation="TagRole")
        details += _tag_details(self._tags, actual.tags)
        return Change(UPDATE if writes else UNCHANGED, "role", desired.name, tuple(details), tuple(writes))

    @staticmethod
    def _rule_deletion(actual: ActualRule) -> list[Write]:
        name = actual.definition.name
        writes = []
        if actual.definition.targets:
            ids = [target.id for target in actual.definition.targets]
            writes.append(Write("events", "RemoveTargets", {"Rule": name, "Ids": ids}))
        writes.append(Write("events", "DeleteRule", {"Name": name}))
        return writes


def stale(desired: DesiredStack, actual: ActualStack) -> set[str]:
    """This stack's alarms, composites, topics and rules whose definition differs from the desired one: the
    only ones the plan rewrites, and so the only ones whose tags it needs."""
    pairs: list[tuple[AlarmDefinition | CompositeDefinition, ActualAlarm | None]]
    pairs = [(alarm, actual.alarms.get(alarm.name)) for alarm in desired.alarms]
    pairs += [(composite, actual.composites.get(composite.name)) for composite in desired.composites]
    names = {
        wanted.name for wanted, found in pairs
        if found is not None and found.owned(desired.stack) and wanted.request() != found.definition.request()
    }
    for topic in desired.topics.values():
        current = actual.topics.get(topic.name)
        if topic.managed and current is not None and dict(topic.attributes) != {
            key: current.attributes.get(key, "") for key, _ in topic.attributes
        }:
            names.add(topic.name)
    replace = desired.responses.replace
    for rule, found in ((desired.rule, actual.rule), (replace.rule if replace else None, actual.response_rule)):
        if rule is not None and found is not None and (
            rule.request() != found.definition.request() or rule.targets != found.definition.targets
        ):
            names.add(rule.name)
    return names
