"""The desired state of one stack: topics, alarms, composites, dashboards, rule and responses, from spec
and inventory."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.schema import ConfigError
from provisioning import composite
from provisioning.alarm_catalogue import SEVERITIES
from provisioning.alarms import Actions, AlarmBuilder, AlarmDefinition
from provisioning.aws import Account, Caller
from provisioning.composite import CompositeDefinition, desired_composites
from provisioning.dashboards import DashboardBuilder, DashboardDefinition
from provisioning.discovery import Inventory
from provisioning.events import RuleDefinition, desired_rule, rule_arn
from provisioning.fleet import FleetBuilder
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
    composites: tuple[CompositeDefinition, ...] = ()
    series: Mapping[str, int] = field(default_factory=dict)  # Metrics Insights alarm -> series it analyzes
    notes: tuple[str, ...] = ()  # what stays per resource and why, splits and limits, for the plan
    responses: DesiredResponses = DesiredResponses(None, ())  # its recover alarms are also in `alarms`


def desired_stack(spec: Spec, account: Account, inventory: Inventory, caller: Caller | None = None) -> DesiredStack:
    """Raises ConfigError when the fleets or composites break a CloudWatch quota. `caller` reads ListMetrics
    for fleets without a host count and DescribeAlarms for a suppressor outside the spec."""
    topics = desired_topics(spec, account, rule_arn(account, spec.stack) if rule_notifies(spec) else "")
    severity_actions = actions(spec, topics)
    builder = AlarmBuilder(spec, severity_actions)
    quiet = AlarmBuilder(spec, {severity: Actions(alarm=()) for severity in SEVERITIES})
    fleets = FleetBuilder(spec, builder, quiet, caller).build()
    alarms = builder.build(inventory) + fleets.alarms
    responses = desired_responses(spec, account, inventory, topics["warning"].arn)
    alarms += responses.recover_alarms
    composites = desired_composites(spec, severity_actions, fleets.members)
    problems = fleets.problems + composite.problems(spec, composites, alarms)
    problems += composite.routing_problems(spec, rule_notifies(spec))
    problems += composite.suppressor_problems(
        spec, [alarm.name for alarm in alarms], lambda name: _alarm_exists(caller, name)
    )
    if problems:
        raise ConfigError(problems)
    hosts = dataclasses.replace(inventory, hosts=inventory.hosts + tuple(fleets.hosts))
    dashboards = DashboardBuilder(spec, account, alarms, composites).build(hosts) if spec.dashboards.enabled else []
    return DesiredStack(
        stack=spec.stack,
        tags=spec.managed_tags,
        topics=topics,
        alarms=tuple(alarms),
        dashboards=tuple(dashboards),
        rule=desired_rule(spec, account, topics["critical"].arn),
        composites=tuple(composites),
        series=dict(fleets.series),
        notes=tuple(fleets.notes),
        responses=responses,
    )


def _alarm_exists(caller: Caller | None, name: str) -> bool:
    if caller is None:
        return False
    found = caller("cloudwatch", "DescribeAlarms", AlarmNames=[name], AlarmTypes=["MetricAlarm", "CompositeAlarm"])
    return bool(found.get("MetricAlarms") or found.get("CompositeAlarms"))
