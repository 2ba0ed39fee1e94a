"""`provision-alarms --export cloudformation`: the exact desired state as a CloudFormation template.

The desired stack is built for a symbolic account (`${AWS::AccountId}`, `${AWS::Region}`,
`${AWS::Partition}`), so every ARN, policy and dashboard body the direct apply would write becomes an
`Fn::Sub` that CloudFormation or a StackSet instance completes in each account and Region. What differs
between accounts beyond that (subscription endpoints, an existing topic's ARN, the automated response's
ARNs) is a template parameter whose default is the spec's value. Every resource carries its plan identity
(`Metadata.infrawatch`: kind and name), one resource per created plan change; a topic's policy is a
resource of its own (`AWS::SNS::TopicPolicy`) that belongs to the topic's change. With `[rollout] enabled`,
the SSM document and association that install the agent (`provisioning.rollout`) join them: only the export
has those.

A stack deployed from the template belongs to CloudFormation: applying the same spec directly as well
would make both fight over the same names.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from agent.schema import ConfigError
from provisioning import rollout
from provisioning.aws import Account, Caller
from provisioning.discovery import Inventory
from provisioning.events import RuleDefinition
from provisioning.spec import Spec
from provisioning.stack import DesiredStack, desired_stack

ROLLOUT = "rollout"  # the kind of the [rollout] resources, which only the export has (the plan applies no SSM)
SYMBOLIC = Account(id="${AWS::AccountId}", region="${AWS::Region}", partition="${AWS::Partition}")
MAX_RESOURCES = 500  # CloudFormation's resources per stack
MAX_LOGICAL_ID = 255
_OTHER_SUBSTITUTION = re.compile(r"\$\{(?!AWS::)")  # Fn::Sub reads `${!x}` as the literal `${x}`
_WORD = re.compile(r"[A-Za-z0-9]+")


def template(spec: Spec, inventory: Inventory, caller: Caller | None) -> dict[str, Any]:
    """Raises ConfigError when the stack does not fit one CloudFormation stack."""
    return Exporter(spec, desired_stack(spec, SYMBOLIC, inventory, caller)).template()


def logical_id(prefix: str, name: str) -> str:
    """`AlarmMlTrainingCpuHigh1a2b3c4d`: readable, unique (the hash of the name), within 255 alphanumerics."""
    words = "".join(word[:1].upper() + word[1:] for word in _WORD.findall(name))
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return (prefix + words)[: MAX_LOGICAL_ID - len(digest)] + digest


class Exporter:
    def __init__(self, spec: Spec, desired: DesiredStack) -> None:
        self._spec = spec
        self._desired = desired
        self._parameters: dict[str, dict[str, str]] = {}
        self._refs: dict[str, str] = {}  # literal value -> parameter name
        self._resources: dict[str, dict[str, Any]] = {}

    def template(self) -> dict[str, Any]:
        self._declare_parameters()
        topics = self._topics()
        alarms = {alarm.name: self._add("Alarm", "alarm", alarm.name, "AWS::CloudWatch::Alarm",
                                        {**alarm.request(), "Tags": self._tags()}, depends=topics)
                  for alarm in self._desired.alarms}
        for composite in self._desired.composites:
            # Its children and its suppressor must exist before it (PutCompositeAlarm).
            named = [*composite.children, composite.actions_suppressor]
            children = sorted({alarms[child] for child in named if child in alarms})
            self._add("Composite", "composite", composite.name, "AWS::CloudWatch::CompositeAlarm",
                      {**composite.request(), "Tags": self._tags()}, depends=children + topics)
        for dashboard in self._desired.dashboards:
            self._add("Dashboard", "dashboard", dashboard.name, "AWS::CloudWatch::Dashboard",
                      {"DashboardName": dashboard.name, "DashboardBody": dashboard.body})
        rule = self._desired.rule
        if rule is not None:
            self._rule(rule, topics)
        self._replace_response(topics)
        for resource_id, resource in rollout.resources(self._spec.stack, self._spec.rollout).items():
            # Export only: the SSM document and association that install the agent ([rollout], docs/rollout.md).
            name = resource["Properties"].get("AssociationName") or resource["Properties"]["Name"]
            self._resources[resource_id] = {**resource, "Metadata": {"infrawatch": {"kind": ROLLOUT, "name": name}}}
        if len(self._resources) > MAX_RESOURCES:
            raise ConfigError([
                f"--export: {len(self._resources)} resources, more than the {MAX_RESOURCES} one CloudFormation "
                "stack may hold; use scope = \"fleet\" or fewer hosts"
            ])
        return {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": f"infrawatch stack {self._spec.stack}: alarms, topics, dashboards and rule, exported "
                           "by provision-alarms. Deploy with CloudFormation or StackSets only; never apply the same "
                           "stack with provision-alarms as well.",
            "Parameters": self._parameters,
            "Resources": self._resources,
        }

    # --- parameters: what differs between accounts --------------------------------------------------

    def _parameter(self, name: str, value: str, description: str) -> None:
        self._parameters[name] = {"Type": "String", "Default": value, "Description": description}
        self._refs[value] = name

    def _declare_parameters(self) -> None:
        for severity, topic in sorted(self._desired.topics.items()):
            title = severity.capitalize()
            if not topic.managed:
                self._parameter(f"{title}TopicArn", topic.arn, f"The existing SNS topic {severity} alarms notify")
            for index, (protocol, endpoint) in enumerate(topic.subscriptions):
                self._parameter(f"{title}Subscription{index + 1}", endpoint,
                                f"{protocol} endpoint subscribed to {topic.name}")
        events = self._spec.events
        if events.enabled and events.target_arn:
            self._parameter("AutomatedResponseArn", events.target_arn, "Lambda function or SSM Automation target")
        if events.enabled and events.role_arn:
            self._parameter("AutomatedResponseRoleArn", events.role_arn, "Role EventBridge assumes for the target")

    # --- resources --------------------------------------------------------------------------------

    def _topics(self) -> list[str]:
        ids = []
        for topic in self._desired.topics.values():
            if not topic.managed:
                continue
            attributes = dict(topic.attributes)
            properties: dict[str, Any] = {"TopicName": topic.name, "Tags": self._tags()}
            if attributes.get("KmsMasterKeyId"):
                properties["KmsMasterKeyId"] = attributes["KmsMasterKeyId"]
            topic_id = self._add("Topic", "topic", topic.name, "AWS::SNS::Topic", properties)
            self._add("TopicPolicy", "topic-policy", topic.name, "AWS::SNS::TopicPolicy", {
                "Topics": [{"Ref": topic_id}], "PolicyDocument": json.loads(attributes["Policy"]),
            })
            for protocol, endpoint in topic.subscriptions:
                self._add("Subscription", "subscription", f"{topic.name} {protocol}:{endpoint}",
                          "AWS::SNS::Subscription",
                          {"TopicArn": {"Ref": topic_id}, "Protocol": protocol, "Endpoint": endpoint})
            ids.append(topic_id)
        return ids

    def _rule(self, rule: RuleDefinition, depends: list[str]) -> None:
        properties = {**rule.request(), "EventPattern": json.loads(rule.pattern),
                      "Targets": [target.request() for target in rule.targets]}
        self._add("Rule", "rule", rule.name, "AWS::Events::Rule", properties, depends=depends)

    def _replace_response(self, topics: list[str]) -> None:
        """The Automation document, its two roles, and the rule that starts it (responses.py)."""
        response = self._desired.responses.replace
        if response is None:
            return
        document = self._add("Document", "document", response.document.name, "AWS::SSM::Document", {
            "Name": response.document.name, "Content": json.loads(response.document.content),
            "DocumentType": "Automation", "DocumentFormat": "JSON", "Tags": self._tags(),
        })
        roles = [self._add("Role", "role", role.name, "AWS::IAM::Role", {
            "RoleName": role.name, "Description": role.description,
            "AssumeRolePolicyDocument": json.loads(role.trust),
            "Policies": [{"PolicyName": role.policy_name, "PolicyDocument": json.loads(role.policy)}],
            "Tags": self._tags(),
        }) for role in response.roles]
        self._rule(response.rule, [document, *roles, *topics])

    def _add(
        self, prefix: str, kind: str, name: str, resource_type: str, properties: dict[str, Any],
        depends: list[str] | None = None,
    ) -> str:
        resource_id = logical_id(prefix, name)
        resource: dict[str, Any] = {
            "Type": resource_type,
            "Properties": {key: self._value(value) for key, value in properties.items()},
            # `{AWS::Region}`, not `${...}`: Metadata is not substituted, and a `${` outside Fn::Sub is an error.
            "Metadata": {"infrawatch": {"kind": kind, "name": name.replace("${", "{")}},
        }
        if depends:
            resource["DependsOn"] = sorted(set(depends))
        self._resources[resource_id] = resource
        return resource_id

    def _tags(self) -> list[dict[str, str]]:
        return [{"Key": key, "Value": value} for key, value in sorted(self._desired.tags.items())]

    def _value(self, value: Any) -> Any:
        """Parameters for account-specific literals, `Fn::Sub` for strings naming the account or Region."""
        if isinstance(value, dict):
            return value if set(value) <= {"Ref", "Fn::Sub"} and len(value) == 1 else {
                key: self._value(item) for key, item in value.items()
            }
        if isinstance(value, list):
            return [self._value(item) for item in value]
        if isinstance(value, str):
            if value in self._refs:
                return {"Ref": self._refs[value]}
            if "${AWS::" in value:
                return {"Fn::Sub": _OTHER_SUBSTITUTION.sub("${!", value)}
        return value


def resources(template: dict[str, Any], account: Account) -> set[tuple[str, str]]:
    """(kind, name) of every resource of an exported template deployed to `account`, as the plan names them,
    its policies folded into their topics; the [rollout] resources, which no plan has, left out."""
    pseudo = {"{AWS::AccountId}": account.id, "{AWS::Region}": account.region, "{AWS::Partition}": account.partition}
    names = set()
    for resource in template["Resources"].values():
        meta = resource["Metadata"]["infrawatch"]
        if meta["kind"] == ROLLOUT:
            continue
        name = meta["name"]
        for placeholder, value in pseudo.items():
            name = name.replace(placeholder, value)
        names.add(("topic" if meta["kind"] == "topic-policy" else meta["kind"], name))
    return names
