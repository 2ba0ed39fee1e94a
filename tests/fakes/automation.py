"""A test-only interpreter for SSM Automation documents (schemaVersion 0.3), for the step types we ship.

It runs `aws:executeAwsApi`, `aws:branch` and `aws:assertAwsResourceProperty` steps as the Automation
service does (Systems Manager user guide, "Automation actions reference" and "Using action outputs as
inputs"): steps run in order unless `nextStep`, a branch or `onFailure: step:<name>` says otherwise;
`isEnd` ends the run; `{{ Parameter }}`, `{{ Step.Output }}` and `{{ global:DATE }}` are interpolated,
a string that is exactly one variable taking the variable's type; outputs are JSONPath selections converted
to their declared Type. Anything else (another action, an unknown variable, a selector that matches
nothing, a branch operator not listed here) is an error, never a guess.

`ScalingHistory` adds what moto's Auto Scaling lacks: AWS records a scaling activity when an instance it
marked unhealthy is replaced ("an instance was taken out of service in response to a user health-check")
and answers DescribeScalingActivities from those records, newest first, filtered by StartTimeLowerBound;
moto records none and does not replace the instance.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore import xform_name

Call = Callable[[str, str, dict[str, Any]], dict[str, Any]]

VARIABLE = re.compile(r"\{\{\s*([\w:.]+)\s*\}\}")
SEGMENT = re.compile(r"\.(\w+)(\(\))?|\[(\d+)\]|\[\?\(@\.(\w+)\s*(==|=~)\s*(?:'([^']*)'|/(.*?)/)\)\]")
HEALTH_CHECK_CAUSE = "At {time} an instance was taken out of service in response to a user health-check."


class StepFailed(Exception):
    pass


def select(document: Any, path: str) -> Any:
    """The JSONPath subset the document uses: `.key`, `[n]`, `[?(@.key == 'v')]`, `[?(@.key =~ /re/)]` and a
    final `.length()`. After a filter the selection is a list and `.key` maps over it (Jayway's rule)."""
    if not path.startswith("$"):
        raise StepFailed(f"selector must start with $: {path}")
    value, many, position = document, False, 1
    while position < len(path):
        match = SEGMENT.match(path, position)
        if match is None:
            raise StepFailed(f"unsupported selector {path!r} at {path[position:]!r}")
        key, call, index, field_name, operator, literal, pattern = match.groups()
        if call:
            if key != "length" or not isinstance(value, list):
                raise StepFailed(f"{path}: {key}() needs a list")
            value, many = len(value), False
        elif key is not None:
            value = [item[key] for item in value if key in item] if many else _key(value, key, path)
        elif index is not None:
            if not isinstance(value, list) or int(index) >= len(value):
                raise StepFailed(f"{path}: no item {index}")
            value = value[int(index)]
        else:
            value = [item for item in value if _kept(item, field_name, operator, literal, pattern)]
            many = True
        position = match.end()
    return value


def _kept(item: Mapping[str, Any], name: str, operator: str, literal: str, pattern: str) -> bool:
    found = str(item.get(name, ""))
    return found == literal if operator == "==" else re.fullmatch(pattern, found) is not None


def _key(value: Any, key: str, path: str) -> Any:
    if not isinstance(value, dict) or key not in value:
        raise StepFailed(f"{path}: no {key}")
    return value[key]


def _typed(value: Any, kind: str) -> Any:
    """A value converted to a parameter or output Type, as Automation converts them."""
    if isinstance(value, list) and kind in ("String", "Integer", "Boolean"):
        if len(value) != 1:
            raise StepFailed(f"a list of {len(value)} cannot become a {kind}")
        value = value[0]
    if kind == "Integer":
        return int(value)
    if kind == "Boolean":
        if isinstance(value, bool):
            return value
        if str(value).lower() not in ("true", "false"):
            raise StepFailed(f"{value!r} is not a Boolean")
        return str(value).lower() == "true"
    if kind == "String":
        return str(value).lower() if isinstance(value, bool) else str(value)
    return value


def _jsonable(value: Any) -> Any:
    """A response as the Automation service sees it: JSON, timestamps as ISO 8601 strings."""
    return json.loads(json.dumps(value, default=lambda item: item.isoformat()))


def transform(input_transformer: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    """EventBridge's InputTransformer: each `<name>` of the template replaced by its path's value."""
    text = input_transformer["InputTemplate"]
    for name, path in input_transformer["InputPathsMap"].items():
        text = text.replace(f"<{name}>", str(select(event, path)))
    parsed: dict[str, Any] = json.loads(text)
    return parsed


@dataclass
class Execution:
    steps: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    status: str = "InProgress"
    failure: str = ""


class Automation:
    ACTIONS = ("aws:executeAwsApi", "aws:branch", "aws:assertAwsResourceProperty")
    BRANCH_OPERATORS: Mapping[str, Callable[[Any, Any], bool]] = {
        "StringEquals": lambda left, right: str(left) == str(right),
        "NumericGreater": lambda left, right: float(left) > float(right),
        "NumericGreaterOrEquals": lambda left, right: float(left) >= float(right),
        "NumericLesserOrEquals": lambda left, right: float(left) <= float(right),
    }

    def __init__(self, document: Mapping[str, Any], call: Call, today: Callable[[], dt.date]) -> None:
        if document.get("schemaVersion") != "0.3":
            raise ValueError("an Automation document has schemaVersion 0.3")
        self._document = document
        self._call = call
        self._today = today
        self._steps = {step["name"]: index for index, step in enumerate(document["mainSteps"])}
        unknown = [step["action"] for step in document["mainSteps"] if step["action"] not in self.ACTIONS]
        if unknown:
            raise ValueError(f"the interpreter does not run {unknown}")

    def run(self, given: Mapping[str, Any]) -> Execution:
        declared = self._document["parameters"]
        missing = set(declared) - set(given)
        extra = set(given) - set(declared)
        if missing or extra:
            raise ValueError(f"parameters: missing {sorted(missing)}, unknown {sorted(extra)}")
        values = {name: _typed(value, declared[name]["type"]) for name, value in given.items()}
        for name, value in values.items():
            allowed = declared[name].get("allowedValues")
            if allowed and value not in allowed:
                raise ValueError(f"{name}: {value!r} not in {allowed}")
            pattern = declared[name].get("allowedPattern")
            if pattern and not re.match(pattern, str(value)):
                raise ValueError(f"{name}: {value!r} does not match {pattern}")
        execution = Execution()
        steps = self._document["mainSteps"]
        index: int | None = 0
        while index is not None:
            step = steps[index]
            execution.steps.append(step["name"])
            try:
                chosen = self._step(step, values, execution)
            except StepFailed as error:
                target = step.get("onFailure", "Abort")
                if not target.startswith("step:"):
                    execution.status, execution.failure = "Failed", f"{step['name']}: {error}"
                    return execution
                index = self._steps[target.removeprefix("step:")]
                continue
            if chosen:
                index = self._steps[chosen]
            elif step.get("isEnd"):
                index = None
            elif "nextStep" in step:
                index = self._steps[step["nextStep"]]
            else:
                index = index + 1 if index + 1 < len(steps) else None
        execution.status = "Success"
        return execution

    def _step(self, step: Mapping[str, Any], values: dict[str, Any], execution: Execution) -> str | None:
        inputs = self._interpolate(step["inputs"], values, execution)
        if step["action"] == "aws:branch":
            for choice in inputs["Choices"]:
                operator = next(key for key in choice if key not in ("NextStep", "Variable"))
                if self.BRANCH_OPERATORS[operator](choice["Variable"], choice[operator]):
                    return str(choice["NextStep"])
            return str(inputs["Default"])
        service, api = inputs.pop("Service"), inputs.pop("Api")
        if step["action"] == "aws:assertAwsResourceProperty":
            selector, desired = inputs.pop("PropertySelector"), inputs.pop("DesiredValues")
            found = select(_jsonable(self._call(service, api, inputs)), selector)
            if str(found) not in desired:
                raise StepFailed(f"{selector} is {found!r}, not one of {desired}")
            return None
        response = _jsonable(self._call(service, api, inputs))
        for output in step.get("outputs", []):
            execution.outputs[f"{step['name']}.{output['Name']}"] = _typed(
                select(response, output["Selector"]), output.get("Type", "String")
            )
        return None

    def _interpolate(self, value: Any, values: Mapping[str, Any], execution: Execution) -> Any:
        if isinstance(value, dict):
            return {key: self._interpolate(item, values, execution) for key, item in value.items()}
        if isinstance(value, list):
            return [self._interpolate(item, values, execution) for item in value]
        if not isinstance(value, str):
            return value

        def lookup(name: str) -> Any:
            if name == "global:DATE":
                return self._today().isoformat()
            if name in values:
                return values[name]
            if name in execution.outputs:
                return execution.outputs[name]
            raise StepFailed(f"no variable {name}")

        whole = VARIABLE.fullmatch(value)
        if whole:
            return lookup(whole.group(1))
        return VARIABLE.sub(lambda match: _typed(lookup(match.group(1)), "String"), value)


class ScalingHistory:
    """moto's Auto Scaling plus the activity records AWS keeps (see the module docstring)."""

    def __init__(self, clients: Callable[[str], Any], now: Callable[[], dt.datetime]) -> None:
        self._clients = clients
        self._now = now
        self.activities: list[dict[str, Any]] = []

    def replaced(self, group: str, instance: str, at: dt.datetime) -> None:
        """An earlier health replacement, as AWS would have recorded it."""
        self.activities.append({
            "ActivityId": str(uuid.uuid4()), "AutoScalingGroupName": group,
            "Description": f"Terminating EC2 instance: {instance}",
            "Cause": HEALTH_CHECK_CAUSE.format(time=at.strftime("%Y-%m-%dT%H:%M:%SZ")),
            "StartTime": at, "StatusCode": "Successful", "Progress": 100,
        })

    def __call__(self, service: str, api: str, params: dict[str, Any]) -> dict[str, Any]:
        client = self._clients(service)
        response: dict[str, Any] = getattr(client, xform_name(api))(**params)  # moto validates and acts
        if (service, api) == ("autoscaling", "SetInstanceHealth") and params["HealthStatus"] == "Unhealthy":
            group = client.describe_auto_scaling_instances(InstanceIds=[params["InstanceId"]])
            name = group["AutoScalingInstances"][0]["AutoScalingGroupName"]
            client.terminate_instance_in_auto_scaling_group(
                InstanceId=params["InstanceId"], ShouldDecrementDesiredCapacity=False
            )
            self.replaced(name, params["InstanceId"], self._now())
        if (service, api) == ("autoscaling", "DescribeScalingActivities"):
            bounds = {item["Name"]: item["Values"][0] for item in params.get("Filters", [])}
            lower = dt.datetime.fromisoformat(bounds.get("StartTimeLowerBound", "1970-01-01T00:00:00+00:00"))
            found = [item for item in self.activities
                     if item["AutoScalingGroupName"] == params.get("AutoScalingGroupName")
                     and item["StartTime"] >= lower]
            found.sort(key=lambda item: item["StartTime"], reverse=True)
            response["Activities"] = found[:params.get("MaxRecords", 100)]
        return response
