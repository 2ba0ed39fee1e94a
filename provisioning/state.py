"""The actual state of one stack, read from AWS and normalized into the same shapes as the desired state.

Only names this stack can own are read: alarms under `<stack>/`, the topics `<stack>-critical` and
`<stack>-warning`, dashboards under `<stack>-<region>-`, the rules `<stack>-alarm-state` and
`<stack>-replace-gpu-host`, and the responses' document and roles. Whether each is
actually this stack's is decided by its tags (or, for dashboards, which cannot be tagged, its marker).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from botocore.exceptions import ClientError

from provisioning.alarm_catalogue import SEVERITIES
from provisioning.alarms import AlarmDefinition, owns
from provisioning.aws import Account, Caller
from provisioning.composite import CompositeDefinition
from provisioning.dashboards import is_owned, name_prefix
from provisioning.events import RuleDefinition, Target, alarm_name_prefix, rule_name
from provisioning.notifications import NOT_FOUND, canonical_json, topic_name
from provisioning.responses import ActualResponses, read_responses, response_rule_name
from provisioning.spec import MANAGED_BY, STACK_TAG

Tags = Mapping[str, str]
DESCRIBE_ALARMS_PAGE = 100  # the most DescribeAlarms returns per call


def owned(tags: Tags, stack: str) -> bool:
    return tags.get(MANAGED_BY[0]) == MANAGED_BY[1] and tags.get(STACK_TAG) == stack


@dataclass(frozen=True)
class ActualAlarm:
    """An alarm whose description carries a marker: this stack's when it is `owned`. Its tags are read
    (`tags` not None) only where its definition differs from the desired one, so a rerun reads pages only."""

    definition: AlarmDefinition | CompositeDefinition
    arn: str
    tags: Tags | None = None
    state: str = "OK"  # StateValue: ALARM, OK or INSUFFICIENT_DATA

    def owned(self, stack: str) -> bool:
        return owns(self.definition.description, stack)


@dataclass(frozen=True)
class ActualSubscription:
    protocol: str
    endpoint: str
    arn: str  # "PendingConfirmation" until the endpoint confirms

    @property
    def confirmed(self) -> bool:
        return self.arn.startswith("arn:")


@dataclass(frozen=True)
class ActualTopic:
    name: str
    arn: str
    attributes: Mapping[str, str]  # the attributes this stack manages, normalized
    tags: Tags
    subscriptions: tuple[ActualSubscription, ...]


@dataclass(frozen=True)
class ActualDashboard:
    name: str
    body: str  # canonical JSON
    owned: bool


@dataclass(frozen=True)
class ActualRule:
    definition: RuleDefinition
    tags: Tags


@dataclass(frozen=True)
class ActualStack:
    alarms: Mapping[str, ActualAlarm]
    topics: Mapping[str, ActualTopic]  # by name
    dashboards: Mapping[str, ActualDashboard]
    rule: ActualRule | None
    composites: Mapping[str, ActualAlarm] = field(default_factory=dict)
    responses: ActualResponses = ActualResponses(None, {})
    response_rule: ActualRule | None = None


def _tags(raw: list[Mapping[str, str]]) -> dict[str, str]:
    return {item["Key"]: item["Value"] for item in raw}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class StateReader:
    def __init__(self, stack: str, account: Account, caller: Caller) -> None:
        self._stack = stack
        self._account = account
        self._call = caller

    def read(self) -> ActualStack:
        alarms, composites = self._described()
        return ActualStack(
            alarms, self.topics(), self.dashboards(), self.rule(rule_name(self._stack)), composites,
            read_responses(self._stack, self._account, self._call), self.rule(response_rule_name(self._stack)),
        )

    def alarms(self) -> dict[str, ActualAlarm]:
        """The metric alarms under this stack's prefix; `ActualAlarm.owned` says which are this stack's."""
        return self._described()[0]

    def _described(self) -> tuple[dict[str, ActualAlarm], dict[str, ActualAlarm]]:
        """Metric and composite alarms under this stack's prefix, from DescribeAlarms pages alone."""
        alarms, composites = {}, {}
        pages = self._call.pages(
            "cloudwatch", "DescribeAlarms", AlarmNamePrefix=alarm_name_prefix(self._stack),
            AlarmTypes=["MetricAlarm", "CompositeAlarm"], MaxRecords=DESCRIBE_ALARMS_PAGE,
        )
        for page in pages:
            for raw in page.get("MetricAlarms", []):
                alarms[raw["AlarmName"]] = ActualAlarm(
                    AlarmDefinition.from_described(raw), raw["AlarmArn"], state=raw.get("StateValue", "")
                )
            for raw in page.get("CompositeAlarms", []):
                composites[raw["AlarmName"]] = ActualAlarm(
                    CompositeDefinition.from_described(raw), raw["AlarmArn"], state=raw.get("StateValue", "")
                )
        return alarms, composites

    def with_tags(self, actual: ActualStack, names: set[str]) -> ActualStack:
        """`actual` with the tags of the named alarms read (ListTagsForResource), for the alarms about to be
        rewritten: PutMetricAlarm leaves tags alone, so only they need reconciling."""

        def tagged(found: Mapping[str, ActualAlarm]) -> dict[str, ActualAlarm]:
            return {
                name: replace(alarm, tags=_tags(
                    self._call("cloudwatch", "ListTagsForResource", ResourceARN=alarm.arn)["Tags"]
                )) if name in names else alarm
                for name, alarm in found.items()
            }

        return replace(actual, alarms=tagged(actual.alarms), composites=tagged(actual.composites))

    def topics(self) -> dict[str, ActualTopic]:
        topics = {}
        for severity in SEVERITIES:
            name = topic_name(self._stack, severity)
            arn = self._account.arn("sns", name)
            try:
                attributes = self._call("sns", "GetTopicAttributes", TopicArn=arn)["Attributes"]
            except ClientError as error:
                if _code(error) not in NOT_FOUND:
                    raise
                continue
            tags = self._call("sns", "ListTagsForResource", ResourceArn=arn)["Tags"]
            subscriptions = tuple(
                ActualSubscription(item["Protocol"], item["Endpoint"], item["SubscriptionArn"])
                for page in self._call.pages("sns", "ListSubscriptionsByTopic", TopicArn=arn)
                for item in page.get("Subscriptions", [])
            )
            managed = {
                "KmsMasterKeyId": attributes.get("KmsMasterKeyId", ""),
                "Policy": canonical_json(attributes["Policy"]) if attributes.get("Policy") else "",
            }
            topics[name] = ActualTopic(name, arn, managed, _tags(tags), subscriptions)
        return topics

    def dashboards(self) -> dict[str, ActualDashboard]:
        dashboards = {}
        prefix = name_prefix(self._stack, self._account.region)
        for page in self._call.pages("cloudwatch", "ListDashboards", DashboardNamePrefix=prefix):
            for entry in page.get("DashboardEntries", []):
                name = entry["DashboardName"]
                body = self._call("cloudwatch", "GetDashboard", DashboardName=name)["DashboardBody"]
                mine = is_owned(body, self._stack, self._account.region)
                dashboards[name] = ActualDashboard(name, canonical_json(body) if mine else body, mine)
        return dashboards

    def rule(self, name: str) -> ActualRule | None:
        try:
            raw = self._call("events", "DescribeRule", Name=name)
        except ClientError as error:
            if _code(error) != "ResourceNotFoundException":
                raise
            return None
        targets = tuple(sorted(
            (Target.from_described(item)
             for page in self._call.pages("events", "ListTargetsByRule", Rule=name)
             for item in page.get("Targets", [])),
            key=lambda target: target.id,
        ))
        tags = self._call("events", "ListTagsForResource", ResourceARN=raw["Arn"])["Tags"]
        definition = RuleDefinition(
            name=name, arn=raw["Arn"], pattern=canonical_json(raw.get("EventPattern", "{}")),
            description=raw.get("Description", ""), state=raw.get("State", ""), targets=targets,
        )
        return ActualRule(definition, _tags(tags))
