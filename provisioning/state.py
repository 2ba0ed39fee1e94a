"""The actual state of one stack, read from AWS and normalized into the same shapes as the desired state.

Only names this stack can own are read: alarms under `<stack>/`, the topics `<stack>-critical` and
`<stack>-warning`, the spec's dashboards (with `--prune` every dashboard under `<stack>-<region>-`), the rules
`<stack>-alarm-state` and `<stack>-replace-gpu-host`, and the responses' document and roles (with `--prune`,
or when the spec wants them). Whether each is actually this stack's is decided by a marker the stack writes
into what the cheapest read returns: an alarm's description, a topic's policy Id, a rule's description, a
dashboard's first widget. Tags are read where the marker is missing, or for a resource about to be rewritten
(`with_tags`), so a rerun with no change reads one page per 100 alarms and about one call per other resource.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from botocore.exceptions import ClientError

from provisioning.alarm_catalogue import SEVERITIES
from provisioning.alarms import AlarmDefinition, owns
from provisioning.aws import Account, Caller
from provisioning.composite import CompositeDefinition
from provisioning.dashboards import is_owned, name_prefix
from provisioning.events import RuleDefinition, Target, alarm_name_prefix, owns_rule, rule_name
from provisioning.notifications import NOT_FOUND, canonical_json, owns_topic, topic_name
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
    tags: Tags | None  # None: not read (the policy carries the marker and the topic is not rewritten)
    subscriptions: tuple[ActualSubscription, ...]

    def owned(self, stack: str) -> bool:
        return owns_topic(self.attributes.get("Policy", ""), stack) or (
            self.tags is not None and owned(self.tags, stack))


@dataclass(frozen=True)
class ActualDashboard:
    name: str
    body: str  # canonical JSON
    owned: bool


@dataclass(frozen=True)
class ActualRule:
    definition: RuleDefinition
    tags: Tags | None  # None: not read (the description carries the marker and the rule is not rewritten)

    def owned(self, stack: str) -> bool:
        return owns_rule(self.definition.description, stack) or (self.tags is not None and owned(self.tags, stack))


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
    def __init__(self, stack: str, caller: Caller) -> None:
        self._stack = stack
        self._call = caller

    def read(
        self, account: Account, described: tuple[Mapping[str, ActualAlarm], Mapping[str, ActualAlarm]], *,
        dashboards: Iterable[str], subscribed: Iterable[str], responses: bool, prune: bool,
    ) -> ActualStack:
        """The stack beside its `described` alarms and composites: the named `dashboards`, the subscriptions of
        the topics named in `subscribed`, and the responses' document, roles and rule where the spec wants
        them. With `prune` also whatever of the stack's the spec no longer names, which only `prune` deletes:
        every dashboard under the stack's prefix, every topic's subscriptions, the responses."""
        alarms, composites = described
        found = ActualResponses(None, {})
        response_rule = None
        if responses or prune:
            found = read_responses(self._stack, account, self._call)
            response_rule = self.rule(response_rule_name(self._stack))
        topics = self.topics(account, None if prune else set(subscribed))
        return ActualStack(
            dict(alarms), topics, self.dashboards(account.region, dashboards, prune=prune),
            self.rule(rule_name(self._stack)), dict(composites), found, response_rule,
        )

    def alarms(self) -> dict[str, ActualAlarm]:
        """The metric alarms under this stack's prefix; `ActualAlarm.owned` says which are this stack's."""
        return self.described()[0]

    def described(self) -> tuple[dict[str, ActualAlarm], dict[str, ActualAlarm]]:
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
        """`actual` with the tags of the named alarms, topics and rules read, for those about to be rewritten:
        their writes leave tags alone (PutMetricAlarm, SetTopicAttributes, PutRule), so only they need
        reconciling."""

        def tagged(found: Mapping[str, ActualAlarm]) -> dict[str, ActualAlarm]:
            return {
                name: replace(alarm, tags=_tags(
                    self._call("cloudwatch", "ListTagsForResource", ResourceARN=alarm.arn)["Tags"]
                )) if name in names else alarm
                for name, alarm in found.items()
            }

        topics = {name: replace(topic, tags=self._topic_tags(topic.arn))
                  if name in names and topic.tags is None else topic for name, topic in actual.topics.items()}

        def rule(found: ActualRule | None) -> ActualRule | None:
            if found is None or found.tags is not None or found.definition.name not in names:
                return found
            return replace(found, tags=self._rule_tags(found.definition.arn))

        return replace(actual, alarms=tagged(actual.alarms), composites=tagged(actual.composites), topics=topics,
                       rule=rule(actual.rule), response_rule=rule(actual.response_rule))

    def topics(self, account: Account, subscribed: set[str] | None = None) -> dict[str, ActualTopic]:
        """One GetTopicAttributes per topic (its policy carries the marker), and ListSubscriptionsByTopic for
        the topics named in `subscribed` (None: every topic). SNS's subscription counts in the attributes would
        save that call, but they are not kept current (moto never updates them)."""
        topics = {}
        for severity in SEVERITIES:
            name = topic_name(self._stack, severity)
            arn = account.arn("sns", name)
            try:
                attributes = self._call("sns", "GetTopicAttributes", TopicArn=arn)["Attributes"]
            except ClientError as error:
                if _code(error) not in NOT_FOUND:
                    raise
                continue
            subscriptions = tuple(
                ActualSubscription(item["Protocol"], item["Endpoint"], item["SubscriptionArn"])
                for page in self._call.pages("sns", "ListSubscriptionsByTopic", TopicArn=arn)
                for item in page.get("Subscriptions", [])
            ) if subscribed is None or name in subscribed else ()
            managed = {
                "KmsMasterKeyId": attributes.get("KmsMasterKeyId", ""),
                "Policy": canonical_json(attributes["Policy"]) if attributes.get("Policy") else "",
            }
            topic = ActualTopic(name, arn, managed, None, subscriptions)
            if not topic.owned(self._stack):  # no marker: the tags decide
                topic = replace(topic, tags=self._topic_tags(arn))
            topics[name] = topic
        return topics

    def _topic_tags(self, arn: str) -> dict[str, str]:
        return _tags(self._call("sns", "ListTagsForResource", ResourceArn=arn)["Tags"])

    def _rule_tags(self, arn: str) -> dict[str, str]:
        return _tags(self._call("events", "ListTagsForResource", ResourceARN=arn)["Tags"])

    def dashboards(self, region: str, names: Iterable[str], *, prune: bool) -> dict[str, ActualDashboard]:
        """One GetDashboard per named dashboard; with `prune`, also every other one under the stack's prefix
        (ListDashboards), the only way to find those the spec no longer names."""
        wanted = set(names)
        if prune:
            prefix = name_prefix(self._stack, region)
            wanted |= {entry["DashboardName"]
                       for page in self._call.pages("cloudwatch", "ListDashboards", DashboardNamePrefix=prefix)
                       for entry in page.get("DashboardEntries", [])}
        dashboards = {}
        for name in sorted(wanted):
            try:
                body = self._call("cloudwatch", "GetDashboard", DashboardName=name)["DashboardBody"]
            except ClientError as error:
                if _code(error) != "ResourceNotFound":
                    raise
                continue
            mine = is_owned(body, self._stack, region)
            dashboards[name] = ActualDashboard(name, canonical_json(body) if mine else body, mine)
        return dashboards

    def rule(self, name: str) -> ActualRule | None:
        """DescribeRule and its targets (DescribeRule does not return them); the tags only where the description
        lacks the marker."""
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
        definition = RuleDefinition(
            name=name, arn=raw["Arn"], pattern=canonical_json(raw.get("EventPattern", "{}")),
            description=raw.get("Description", ""), state=raw.get("State", ""), targets=targets,
        )
        found = ActualRule(definition, None)
        return found if found.owned(self._stack) else ActualRule(definition, self._rule_tags(raw["Arn"]))
