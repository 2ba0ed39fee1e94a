"""The desired state of one stack: topics, alarms, dashboards, rule and responses, from spec and inventory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from provisioning.alarms import AlarmBuilder, AlarmDefinition
from provisioning.aws import Account
from provisioning.dashboards import DashboardBuilder, DashboardDefinition
from provisioning.discovery import Inventory
from provisioning.events import RuleDefinition, desired_rule, rule_arn
from provisioning.notifications import TopicDefinition, actions, desired_topics, rule_notifies
from provisioning.responses import DesiredResponses, desired_responses
from provisioning.spec import Spec


@dataclass(frozen=True)
class DesiredStack:
    stack: str
    tags: Mapping[str, str]
    topics: Mapping[str, TopicDefinition]  # by severity
    alarms: tuple[AlarmDefinition, ...]
    dashboards: tuple[DashboardDefinition, ...]
    rule: RuleDefinition | None
    responses: DesiredResponses = DesiredResponses(None, ())  # its recover alarms are also in `alarms`


def desired_stack(spec: Spec, account: Account, inventory: Inventory) -> DesiredStack:
    topics = desired_topics(spec, account, rule_arn(account, spec.stack) if rule_notifies(spec) else "")
    alarms = AlarmBuilder(spec, actions(spec, topics)).build(inventory)
    responses = desired_responses(spec, account, inventory, topics["warning"].arn)
    alarms += responses.recover_alarms
    dashboards = DashboardBuilder(spec, account, alarms).build(inventory) if spec.dashboards.enabled else []
    return DesiredStack(
        stack=spec.stack,
        tags=spec.managed_tags,
        topics=topics,
        alarms=tuple(alarms),
        dashboards=tuple(dashboards),
        rule=desired_rule(spec, account, topics["critical"].arn),
        responses=responses,
    )
