"""Composite paging alarms: one per fleet and severity, the only alarms of a paged fleet that notify.

`<stack>/<fleet>/critical` is `ALARM("child") OR ALARM("child") ...` over the fleet's critical alarms, so a
host that dies pages once, not once per alarm. An `ActionsSuppressor` alarm (a maintenance or deployment
alarm the user sets) silences the composites, with the spec's wait and extension periods.

Limits (PutCompositeAlarm reference): the rule is at most 10,240 characters; a composite watches at most
100 alarms (the CloudWatch User Guide's "Composite alarms" quota); the children must exist before the
composite is put; a rule may not form a cycle through other composites. moto does not implement
PutCompositeAlarm: the writes are validated against botocore's service model in the tests (Stubber), and an
endpoint that answers "not implemented" is reported without failing the rest of the apply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.schema import render
from provisioning.alarm_catalogue import HOSTS_REPORTING, SEVERITIES
from provisioning.alarms import Actions, AlarmDefinition, ownership_marker
from provisioning.spec import HOST_SCOPE, Spec

MAX_RULE_LENGTH = 10_240
MAX_CHILDREN = 100
_CHILD = re.compile(r'ALARM\("((?:[^"\\]|\\.)*)"\)')


@dataclass(frozen=True)
class CompositeDefinition:
    """A composite alarm as PutCompositeAlarm takes it, normalized like `AlarmDefinition`."""

    name: str
    description: str
    rule: str
    alarm_actions: tuple[str, ...] = ()
    ok_actions: tuple[str, ...] = ()
    actions_suppressor: str = ""
    suppressor_wait: int = 0
    suppressor_extension: int = 0
    actions_enabled: bool = True

    @property
    def children(self) -> tuple[str, ...]:
        return tuple(match.replace('\\"', '"') for match in _CHILD.findall(self.rule))

    def request(self) -> dict[str, Any]:
        """PutCompositeAlarm's parameters, without Tags (applied only at creation)."""
        params: dict[str, Any] = {
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "AlarmRule": self.rule,
            "ActionsEnabled": self.actions_enabled,
            "AlarmActions": list(self.alarm_actions),
            "OKActions": list(self.ok_actions),
        }
        if self.actions_suppressor:
            params.update(
                ActionsSuppressor=self.actions_suppressor,
                ActionsSuppressorWaitPeriod=self.suppressor_wait,
                ActionsSuppressorExtensionPeriod=self.suppressor_extension,
            )
        return params

    @classmethod
    def from_described(cls, raw: Mapping[str, Any]) -> CompositeDefinition:
        return cls(
            name=raw["AlarmName"], description=raw.get("AlarmDescription", ""), rule=raw.get("AlarmRule", ""),
            alarm_actions=tuple(sorted(raw.get("AlarmActions", []))),
            ok_actions=tuple(sorted(raw.get("OKActions", []))),
            actions_suppressor=raw.get("ActionsSuppressor", "") or "",
            suppressor_wait=int(raw.get("ActionsSuppressorWaitPeriod") or 0) if raw.get("ActionsSuppressor") else 0,
            suppressor_extension=(int(raw.get("ActionsSuppressorExtensionPeriod") or 0)
                                  if raw.get("ActionsSuppressor") else 0),
            actions_enabled=bool(raw.get("ActionsEnabled", True)),
        )


def rule(children: Iterable[str]) -> str:
    return " OR ".join(f'ALARM("{name}")' for name in children)


def composite_name(stack: str, fleet: str, severity: str) -> str:
    return f"{stack}/{fleet}/{severity}"


def desired_composites(
    spec: Spec, actions: Mapping[str, Actions], members: Mapping[str, Sequence[str]]
) -> list[CompositeDefinition]:
    """One composite per paged fleet and severity that has alarms; `members`: each fleet's alarms."""
    composites = []
    for fleet in spec.fleets:
        if not fleet.paging.enabled:
            continue
        for severity in SEVERITIES:
            children = sorted(name for name in members.get(fleet.name, ()) if _severity(spec, name) == severity)
            if not children:
                continue
            paging = fleet.paging
            composites.append(CompositeDefinition(
                name=composite_name(spec.stack, fleet.name, severity),
                description=(f"Any {severity} alarm of fleet {fleet.name} ({len(children)} alarms); the only one "
                             f"of them that notifies. {ownership_marker(spec.stack)}"),
                rule=rule(children),
                alarm_actions=tuple(sorted(actions[severity].alarm)),
                ok_actions=tuple(sorted(actions[severity].ok)),
                actions_suppressor=paging.suppressor,
                suppressor_wait=paging.suppressor_wait if paging.suppressor else 0,
                suppressor_extension=paging.suppressor_extension if paging.suppressor else 0,
            ))
    return composites


def _severity(spec: Spec, name: str) -> str:
    """The severity a fleet's alarm notifies with: its kind's key ends its name (`.../<key>@<series>`, where a
    mount path series may hold `/`)."""
    key = name.split("@", 1)[0].rsplit("/", 1)[-1]
    return HOSTS_REPORTING.severity if key == HOSTS_REPORTING.key else spec.alarms[key].severity


def problems(spec: Spec, composites: Sequence[CompositeDefinition], alarms: Iterable[AlarmDefinition]) -> list[str]:
    """The documented limits of each rule, cycles, and children that are neither desired nor composites."""
    found = []
    paths = {f"{spec.stack}/{fleet.name}/": f"fleets[{index}].paging" for index, fleet in enumerate(spec.fleets)}
    known = {alarm.name for alarm in alarms} | {composite.name for composite in composites}
    for composite in composites:
        path = next((path for prefix, path in paths.items() if composite.name.startswith(prefix)),
                    f'composite "{composite.name}"')
        children = composite.children
        if len(children) > MAX_CHILDREN:
            found.append(f"{path}: the rule of {composite.name} combines {len(children)} alarms, more than the "
                         f"{MAX_CHILDREN} a composite alarm may; split the fleet or use scope = \"fleet\"")
        if len(composite.rule) > MAX_RULE_LENGTH:
            found.append(f"{path}: the rule of {composite.name} is {len(composite.rule):,} characters, more than "
                         f"{MAX_RULE_LENGTH:,}")
        missing = [child for child in children if child not in known]
        if missing:
            found.append(f"{path}: the rule of {composite.name} names an alarm this stack does not create, "
                         f"got {render(missing[0])}")
    found += [f'composite "{name}": its rule reaches itself through {" -> ".join(cycle)}'
              for name, cycle in cycles(composites)]
    return found


def cycles(composites: Sequence[CompositeDefinition]) -> list[tuple[str, list[str]]]:
    """(composite, the path back to it) of every composite whose rule reaches itself."""
    graph = {composite.name: [child for child in composite.children] for composite in composites}
    found = []
    for start in graph:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, trail = stack.pop()
            for child in graph.get(node, ()):
                if child == start:
                    found.append((start, [*trail, child]))
                    stack.clear()
                    break
                if child in graph and child not in seen:
                    seen.add(child)
                    stack.append((child, [*trail, child]))
    return found


def routing_problems(spec: Spec, rule_notifies: bool) -> list[str]:
    """A paged host-scope fleet's alarms are named `<stack>/host/<id>/<key>` like a [[hosts]] group's, which the
    EventBridge rule pages by name: its children would page beside its composite."""
    if not rule_notifies:
        return []
    return [
        f"fleets[{index}].paging.enabled: the alarms of a scope = \"host\" fleet are named like [[hosts]] alarms, "
        "which the EventBridge rule pages by name, so they would page beside the composites; use scope = "
        "\"fleet\", or events.notify_critical_topic = false"
        for index, fleet in enumerate(spec.fleets) if fleet.scope == HOST_SCOPE and fleet.paging.enabled
    ]


def suppressor_problems(spec: Spec, desired: Iterable[str], exists: Any) -> list[str]:
    """Each paged fleet's suppressor must be one of this stack's alarms or exist in the account;
    `exists(name)` asks the account (DescribeAlarms)."""
    wanted = set(desired)
    found = []
    for index, fleet in enumerate(spec.fleets):
        name = fleet.paging.suppressor
        if fleet.paging.enabled and name and name not in wanted and not exists(name):
            found.append(f"fleets[{index}].paging.suppressor: no such alarm in the spec or the account "
                         f"(DescribeAlarms), got {render(name)}")
    return found
