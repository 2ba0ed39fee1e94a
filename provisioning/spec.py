"""The provisioner's spec: TOML, every key defaulted, validated once at load into frozen dataclasses.

Scalar keys and nested tables are built by `agent.schema`, exactly like the agent's config. What that
module cannot express is written here in the same style: lists of tables (`[[hosts]]`, `[[endpoints]]`,
subscriptions, throughput floors), whose problems are named `hosts[1].gpus: ...`, and the `[alarms.<key>]`
tables, whose defaults differ per alarm kind (see `alarm_catalogue`).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent.catalogue import CATALOGUE, METRICS
from agent.cloudwatch_rules import MAX_DIMENSIONS, dimension_value_problem, metric_name_problem, namespace_problem
from agent.config import AGENT_DIMENSIONS, HOST_DIMENSION, static_dimensions_problem
from agent.config import _identity_problem as identity_problem  # the agent's own rule for append_dimensions
from agent.fleet import HOST as HOSTNAME_DIMENSION
from agent.naming import DEFAULT_NAMESPACE, PROFILES, resolve
from agent.schema import ConfigError, build, join, load_toml, render, section, setting, unknown_key
from provisioning import rollout as rollout_patterns
from provisioning.alarm_catalogue import KINDS, SEVERITIES, VARIANT, AlarmKind

T = TypeVar("T")

MANAGED_BY = ("managed-by", "infrawatch")
STACK_TAG = "infrawatch:stack"
MAX_TAGS = 50  # CloudWatch, SNS and EventBridge all allow 50 tags per resource
MAX_EVALUATION_SECONDS = 86_400  # PutMetricAlarm: Period * EvaluationPeriods at most one day
PROTOCOLS = ("email", "https", "sqs", "lambda")
ALARM_STATES = ("ALARM", "OK", "INSUFFICIENT_DATA")
STATISTICS = ("Average", "Sum", "Minimum", "Maximum", "SampleCount")

_STACK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9-]+$")
_ARN = r"arn:aws[a-z-]*:{service}:[a-z0-9-]+:\d{{12}}:{resource}"
_TOPIC_ARN = re.compile(_ARN.format(service="sns", resource=r"[A-Za-z0-9_-]{1,256}(\.fifo)?") + "$")
_QUEUE_ARN = re.compile(_ARN.format(service="sqs", resource=r"[A-Za-z0-9_-]{1,80}(\.fifo)?") + "$")
_FUNCTION_ARN = re.compile(
    _ARN.format(service="lambda", resource=r"function:[A-Za-z0-9_-]{1,64}(:[\w$-]+)?") + "$"
)
_AUTOMATION_ARN = re.compile(
    _ARN.format(service="ssm", resource=r"automation-definition/[A-Za-z0-9_.-]+(:[\w$]+)?") + "$"
)
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_SERIES_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def tables(cls: type, doc: str) -> Any:
    """Declare a list of tables (`[[key]]` in TOML), each entry a frozen dataclass `cls`."""
    return dataclasses.field(default=(), metadata={"doc": doc, "tables": cls})


def _stack_problem(value: str) -> str | None:
    if not _STACK.match(value):
        return "must be 1..32 letters, digits, - or _, starting with a letter or digit"
    return None


def _namespace_problem(value: str) -> str | None:
    return None if not value else namespace_problem(value)  # empty: the naming profile's namespace


def _tags_problem(value: tuple[tuple[str, str], ...]) -> str | None:
    for key, _ in value:
        if key in (MANAGED_BY[0], STACK_TAG):
            return f'tag "{key}" is set by the provisioner'
        if key.lower().startswith("aws:") or not 1 <= len(key) <= 128:
            return f'tag "{key}" needs 1..128 characters and must not start with "aws:"'
    if len(value) > MAX_TAGS - 2:
        return f"at most {MAX_TAGS - 2} tags fit beside the provisioner's two"
    return None


def _topic_arn_problem(value: str) -> str | None:
    return None if not value or _TOPIC_ARN.match(value) else "must be an SNS topic ARN or empty"


def _kms_problem(value: str) -> str | None:
    if value == "alias/aws/sns" or value.startswith("alias/aws/"):
        return (
            "must be a customer-managed key: a topic encrypted with the AWS-managed key alias/aws/sns "
            "silently drops alarm notifications, because CloudWatch may not use that key"
        )
    return None


def _dimensions_problem(value: tuple[tuple[str, str], ...]) -> str | None:
    problem = static_dimensions_problem(
        value, AGENT_DIMENSIONS | {name for metric in CATALOGUE for name in metric.dimensions}
    )
    if problem:
        return problem
    widest = max(len(metric.dimensions) for metric in CATALOGUE)
    if len(value) + 1 + widest > MAX_DIMENSIONS:
        return f"at most {MAX_DIMENSIONS - 1 - widest} static dimensions fit CloudWatch's {MAX_DIMENSIONS}"
    return None


def _instance_ids_problem(value: tuple[str, ...]) -> str | None:
    bad = [item for item in value if not _INSTANCE_ID.match(item)]
    if bad:
        return 'every item must be an EC2 instance id like "i-0123456789abcdef0"'
    if len(set(value)) != len(value):
        return "must not repeat an instance id"
    return None


def _mounts_problem(value: tuple[str, ...]) -> str | None:
    if any(not item.startswith("/") for item in value):
        return "every item must be an absolute mount path"
    for item in value:  # each is a MountPath dimension value
        problem = dimension_value_problem(item)
        if problem:
            return f"mount path {item!r} {problem}"
    for index, item in enumerate(value):
        if item in value[:index]:
            return f"mounts[{index}] repeats mounts[{value.index(item)}] ({render(item)})"
    return None


def _metric_problem(value: str) -> str | None:
    return None if not value else metric_name_problem(value)  # empty: named as missing by _host_problems


def _floor_dimensions_problem(value: tuple[tuple[str, str], ...]) -> str | None:
    return static_dimensions_problem(value, frozenset())


def _period_problem(value: int) -> str | None:
    if value in (10, 30) or (value > 0 and value % 60 == 0):
        return None
    return "must be 10, 30 or a multiple of 60 seconds"


def _states_problem(value: tuple[str, ...]) -> str | None:
    if not value or any(state not in ALARM_STATES for state in value):
        return "must be a non-empty list of " + ", ".join(f'"{state}"' for state in ALARM_STATES)
    return None


def _event_target_problem(value: str) -> str | None:
    if not value or _FUNCTION_ARN.match(value) or _AUTOMATION_ARN.match(value):
        return None
    return "must be a Lambda function ARN or an SSM Automation document ARN (automation-definition/...)"


def _role_arn_problem(value: str) -> str | None:
    return None if not value or _ROLE_ARN.match(value) else "must be an IAM role ARN or empty"


@dataclass(frozen=True)
class Subscription:
    protocol: str = setting("email", "How SNS delivers: email, https, sqs or lambda.", choices=PROTOCOLS)
    endpoint: str = setting("", "Email address, https:// URL, SQS queue ARN or Lambda function ARN.")


@dataclass(frozen=True)
class Topic:
    topic_arn: str = setting(
        "", "An existing SNS topic, used as it is; empty: create the topic `<stack>-<severity>`.",
        check=_topic_arn_problem,
    )
    kms_key_id: str = setting(
        "", "Customer-managed KMS key (id, ARN or alias) encrypting the created topic; its key policy must "
        "let cloudwatch.amazonaws.com (and events.amazonaws.com) use kms:Decrypt and kms:GenerateDataKey*. "
        "Empty: not encrypted.", check=_kms_problem,
    )
    ok_notifications: bool = setting(False, "Also notify when an alarm of this severity returns to OK.")
    subscriptions: tuple[Subscription, ...] = tables(
        Subscription, "Subscriptions of the created topic; an existing one is never subscribed twice."
    )


@dataclass(frozen=True)
class Notifications:
    critical: Topic = section(Topic, "Where critical alarms notify.")
    warning: Topic = section(Topic, "Where warning alarms notify.")


@dataclass(frozen=True)
class Events:
    enabled: bool = setting(
        True, "Create the EventBridge rule `<stack>-alarm-state` on this stack's alarm state changes."
    )
    states: tuple[str, ...] = setting(("ALARM",), "Alarm states the rule matches.", check=_states_problem)
    notify_critical_topic: bool = setting(
        True, "Notify the critical topic of critical alarms through this rule, as a readable message, instead "
        "of through the alarms' own actions; the rule then matches critical alarms only.",
    )
    target_arn: str = setting(
        "", "Automated response: a Lambda function ARN or an SSM Automation document ARN; empty: none.",
        check=_event_target_problem,
    )
    role_arn: str = setting(
        "", "IAM role EventBridge assumes to start an SSM Automation target.", check=_role_arn_problem
    )


OUTSIDE_GROUP_ACTIONS = ("nothing", "stop")
GPU_HEALTH_ALARMS = ("gpu_unhealthy", "gpu_xid_errors", "gpu_ecc_errors")
RESERVED_DOCUMENT_PREFIXES = ("aws", "amazon", "amzn")  # SSM CreateDocument refuses these, in any case
MAX_REPLACEMENTS_PER_DAY = 50  # the Automation counts one DescribeScalingActivities page: at most 100 records


def _trigger_alarms_problem(value: tuple[str, ...]) -> str | None:
    if not value or any(key not in GPU_HEALTH_ALARMS for key in value):
        return "must be a non-empty list of " + ", ".join(f'"{key}"' for key in GPU_HEALTH_ALARMS)
    if len(set(value)) != len(value):
        return "must not repeat an alarm"
    return None


def _group_names_problem(value: tuple[str, ...]) -> str | None:
    if any(not 1 <= len(name) <= 255 or ":" in name for name in value):
        return "every item must be an Auto Scaling group name (1..255 characters, no colon)"
    return None


@dataclass(frozen=True)
class ReplaceUnhealthyGpuHost:
    enabled: bool = setting(
        False, "Take a host whose GPU health alarm fires out of service, so its Auto Scaling group replaces "
        "it (an SSM Automation started by EventBridge; see docs/responses.md).",
    )
    alarms: tuple[str, ...] = setting(
        ("gpu_unhealthy",), "The GPU health alarms that start it.", check=_trigger_alarms_problem
    )
    auto_scaling_groups: tuple[str, ...] = setting(
        (), "Auto Scaling groups it may act on besides the hosts[].auto_scaling_group ones.",
        check=_group_names_problem,
    )
    max_replacements_per_day: int = setting(
        2, "At most this many health replacements per group per UTC day, counted from the group's "
        "scaling activities (DescribeScalingActivities).", range=(1, MAX_REPLACEMENTS_PER_DAY),
    )
    min_in_service: int = setting(
        1, "Never take a host out of a group that has this many InService instances or fewer.",
        range=(0, 10_000),
    )
    respect_grace_period: bool = setting(
        True, "SetInstanceHealth's ShouldRespectGracePeriod: a host still in its health check grace period "
        "is left alone.",
    )
    outside_group: str = setting(
        "nothing", "A host in no Auto Scaling group: stop it (ec2:StopInstances) or do nothing but notify.",
        choices=OUTSIDE_GROUP_ACTIONS,
    )


@dataclass(frozen=True)
class RecoverOnStatusCheck:
    enabled: bool = setting(
        False, "Per EC2 host, an alarm on AWS/EC2 StatusCheckFailed_System whose action is EC2 recover.",
    )
    reboot_on_instance_check: bool = setting(
        False, "Also an alarm on StatusCheckFailed_Instance whose action is EC2 reboot.",
    )
    evaluation_periods: int = setting(
        2, "Failed minutes in a row before recovering (1-minute periods).", range=(1, 60)
    )


@dataclass(frozen=True)
class Responses:
    replace_unhealthy_gpu_host: ReplaceUnhealthyGpuHost = section(
        ReplaceUnhealthyGpuHost, "Replace a host whose GPU failed."
    )
    recover_on_status_check: RecoverOnStatusCheck = section(
        RecoverOnStatusCheck, "Recover (or reboot) a host that fails its EC2 status checks."
    )


@dataclass(frozen=True)
class Dashboards:
    enabled: bool = setting(True, "Create the fleet dashboard(s) and one dashboard per SageMaker endpoint.")


@dataclass(frozen=True)
class Apply:
    alarm_writes_per_second: float = setting(
        3.0, "PutMetricAlarm and DeleteAlarms calls per second (CloudWatch's default quota is 3).",
        range=(0.1, 1000), unit="per second",
    )


@dataclass(frozen=True)
class AlarmSettings:
    """One `[alarms.<key>]` table; a key left out takes that alarm's default from the alarm catalogue."""

    enabled: bool = setting(True, "Create this alarm.")
    threshold: float = setting(0.0, "Threshold, in the unit the alarm catalogue gives.")
    severity: str = setting("warning", "Which topic it notifies.", choices=SEVERITIES)
    period: int = setting(
        60, "Seconds per datapoint.", range=(10, 86_400), unit="seconds", check=_period_problem
    )
    datapoints: int = setting(3, "M of M-of-N: breaching datapoints that fire the alarm.", range=(1, 1440))
    evaluation_periods: int = setting(5, "N of M-of-N: the datapoints looked at.", range=(1, 1440))


@dataclass(frozen=True)
class ThroughputFloor:
    metric: str = setting(
        "", "The application metric, as the agent publishes it (e.g. a StatsD rate).", check=_metric_problem
    )
    minimum: float = setting(
        0.0, "Alarm when the statistic is below this, in the metric's unit.", range=(0, 1e300)
    )
    unit: str = setting("", "The metric's unit, for the alarm description (e.g. samples/s).")
    statistic: str = setting("Average", "Statistic over each period.", choices=STATISTICS)
    dimensions: tuple[tuple[str, str], ...] = setting(
        (), "Dimensions of the metric besides the host's (InstanceId and the group's dimensions).",
        check=_floor_dimensions_problem,
    )
    name: str = setting("", "Name in the alarm name; empty: the metric name.")
    severity: str = setting("warning", "Which topic it notifies.", choices=SEVERITIES)
    period: int = setting(
        60, "Seconds per datapoint.", range=(10, 86_400), unit="seconds", check=_period_problem
    )
    datapoints: int = setting(5, "M of M-of-N.", range=(1, 1440))
    evaluation_periods: int = setting(5, "N of M-of-N.", range=(1, 1440))


@dataclass(frozen=True)
class HostGroup:
    instance_ids: tuple[str, ...] = setting((), "EC2 instance ids.", check=_instance_ids_problem)
    auto_scaling_group: str = setting("", "An Auto Scaling group: alarms for its InService instances.")
    discover: bool = setting(
        False,
        "Every instance whose agent published a Heartbeat to the namespace in the last 3 hours "
        "(ListMetrics).",
    )
    dimensions: tuple[tuple[str, str], ...] = setting(
        (),
        "The static `dimensions` of these hosts' agent config: every series carries them, so every "
        "alarm must.",
        check=_dimensions_problem,
    )
    gpus: int = setting(0, "GPUs per host: per-GPU alarms for indexes 0..gpus-1.", range=(0, 64))
    mounts: tuple[str, ...] = setting(("/",), "Mount paths with a storage alarm.", check=_mounts_problem)
    discover_devices: bool = setting(
        False, "Take each host's GPU indexes and mount paths from the metrics it publishes (ListMetrics) "
        "instead of gpus and mounts.",
    )
    throughput_floors: tuple[ThroughputFloor, ...] = tables(
        ThroughputFloor, "Application throughput alarms for every host of the group: below a floor pages."
    )


FLEET_SCOPE, HOST_SCOPE = "fleet", "host"
# Alarm names are `<stack>/host/...`, `<stack>/sagemaker/...` and `<stack>/<fleet>/...`: a fleet may not take
# the first two, or its alarms would read as another target's.
RESERVED_FLEET_NAMES = ("host", "sagemaker")
_FLEET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _fleet_name_problem(value: str) -> str | None:
    if not _FLEET_NAME.match(value):
        return "must be 1..64 letters, digits, - or _, starting with a letter or digit"
    if value in RESERVED_FLEET_NAMES:
        return f"must not be {' or '.join(RESERVED_FLEET_NAMES)}: alarm names use them for other targets"
    return None


@dataclass(frozen=True)
class Paging:
    enabled: bool = setting(
        False, "Composite alarms `<stack>/<fleet>/critical` and `/warning` over the fleet's alarms of that "
        "severity: only they notify; the fleet's own alarms notify nothing.",
    )
    suppressor: str = setting(
        "", "Name of an alarm whose ALARM state silences the composites (ActionsSuppressor), e.g. a maintenance "
        "alarm: one of this spec's alarms or one that exists in the account. Empty: none.",
    )
    suppressor_wait: int = setting(
        120, "Seconds the suppressor may take to go into ALARM after a child fires (ActionsSuppressorWaitPeriod).",
        range=(0, 86_400), unit="seconds",
    )
    suppressor_extension: int = setting(
        300, "Seconds the composites stay silent after the suppressor leaves ALARM "
        "(ActionsSuppressorExtensionPeriod).", range=(0, 86_400), unit="seconds",
    )


@dataclass(frozen=True)
class Reporting:
    enabled: bool = setting(
        False, "A critical alarm `<stack>/<fleet>/hosts_reporting` when fewer than min_hosts hosts publish a "
        "Heartbeat: a host that stops publishing leaves every fleet query instead of breaching, and only this count "
        "sees it (routed into the fleet's critical composite when paged).",
    )
    min_hosts: int = setting(
        1, "Alarm when fewer hosts than this publish a Heartbeat, 3 minutes in a row.", range=(1, 1_000_000)
    )
    publish_interval: int = setting(
        60, "The agents' publish.interval: each sends one Heartbeat per interval, and the query counts heartbeats.",
        range=(10, 300), unit="seconds",
    )


@dataclass(frozen=True)
class Fleet:
    name: str = setting("", "Names the group in its alarm names, `<stack>/<name>/<alarm>`.", check=_fleet_name_problem)
    scope: str = setting(
        FLEET_SCOPE, "fleet: one Metrics Insights alarm per alarm kind for every host that publishes, hosts "
        "launched later included; host: one alarm per kind and host publishing now (ListMetrics), for small "
        "fleets and EC2 actions.", choices=(FLEET_SCOPE, HOST_SCOPE),
    )
    append_dimensions: tuple[str, ...] = setting(
        (HOST_DIMENSION,), "The agents' `append_dimensions`: the identity dimensions every series carries "
        "(empty: `Host`, the hostname).", check=identity_problem,
    )
    dimensions: tuple[tuple[str, str], ...] = setting(
        (), "The agents' static `dimensions`: every series carries them, so every query selects them.",
        check=_dimensions_problem,
    )
    filter: tuple[tuple[str, str], ...] = setting(
        (), "Only hosts whose identity dimensions have these values, e.g. {AutoScalingGroupName = \"training\"}; "
        "each must be one of append_dimensions.",
    )
    gpus: int = setting(8, "GPUs per host: the per-GPU alarms and the series estimate.", range=(0, 64))
    mounts: tuple[str, ...] = setting(("/",), "Mount paths with a storage alarm.", check=_mounts_problem)
    hosts: int = setting(
        0, "Hosts the group may grow to, for the Metrics Insights quotas; 0: those publishing now (ListMetrics).",
        range=(0, 1_000_000),
    )
    paging: Paging = section(Paging, "Composite paging alarms of this fleet.")
    reporting: Reporting = section(Reporting, "The dead-host signal of a fleet-scope group: hosts publishing.")


@dataclass(frozen=True)
class Endpoint:
    name: str = setting("", "A SageMaker endpoint name.")
    discover: bool = setting(
        False, "Every InService endpoint (ListEndpoints), optionally filtered by name_contains."
    )
    name_contains: str = setting("", "With discover: only endpoints whose name contains this.")
    variants: tuple[str, ...] = setting(
        (), "Production variant names; empty: read them from DescribeEndpoint."
    )
    instance_type: str = setting(
        "", "The variants' instance type (ml.*); empty: read it from the endpoint config."
    )


def _default_alarms() -> dict[str, AlarmSettings]:
    return {key: _defaults(kind) for key, kind in KINDS.items()}


def _defaults(kind: AlarmKind) -> AlarmSettings:
    return AlarmSettings(
        enabled=kind.enabled, threshold=float(kind.threshold), severity=kind.severity, period=kind.period,
        datapoints=kind.datapoints, evaluation_periods=kind.evaluation_periods,
    )


_ROLLOUT_VERSION = re.compile(rollout_patterns.VERSION_PATTERN)
_ROLLOUT_SOURCE = re.compile(rollout_patterns.SOURCE_PATTERN)
_SHA256 = re.compile(rollout_patterns.SHA256_PATTERN)
_PARAMETER_NAME = re.compile(rollout_patterns.PARAMETER_NAME_PATTERN)
_TAG_KEY = re.compile(r"^[A-Za-z0-9 _.:/=+@-]{1,128}$")


def _pattern_problem(pattern: re.Pattern[str], allowed: str) -> Any:
    return lambda value: None if pattern.match(value) else f"must be {allowed}"


@dataclass(frozen=True)
class Rollout:
    enabled: bool = setting(False, "Roll the agent out with SSM: a Command document and a State Manager "
                            "association in the CloudFormation export (see docs/rollout.md).")
    version: str = setting("", "The infrawatch version to install, e.g. 0.2.0.",
                           check=_pattern_problem(_ROLLOUT_VERSION, "a version such as 0.2.0"))
    source: str = setting(
        "index", "Where the wheel comes from: an S3 object (s3://bucket/infrawatch-0.2.0-py3-none-any.whl), an S3 "
        "prefix ending in / holding a wheelhouse, an https URL, or index (the package index).",
        check=_pattern_problem(_ROLLOUT_SOURCE, "index, an s3:// URI or an https:// URL"),
    )
    sha256: str = setting("", "SHA-256 of the infrawatch wheel; the document refuses any other.",
                          check=_pattern_problem(_SHA256, "64 lower-case hex digits"))
    config_parameter: str = setting(
        "", "SSM Parameter Store name holding the agent's TOML; empty: the installed config is kept.",
        check=_pattern_problem(_PARAMETER_NAME, "a Parameter Store name such as /infrawatch/agent.toml"),
    )
    tag_key: str = setting("infrawatch:fleet", "Instances are targeted by this tag ...",
                           check=_pattern_problem(_TAG_KEY, "1..128 tag key characters"))
    tag_value: str = setting("", "... having this value (required when enabled).",
                             check=_pattern_problem(re.compile(r"^[A-Za-z0-9 _.:/=+@-]{0,128}$"),
                                                    "up to 128 tag value characters"))
    schedule: str = setting("rate(1 day)", "When the association runs again, besides at launch.",
                            check=_pattern_problem(re.compile(r"^(rate\(\d+ (minutes?|hours?|days?)\)|cron\(.+\))$"),
                                                   "rate(N unit) or cron(...)"))
    max_concurrency: str = setting("10%", "Instances updated at once (a count or a percentage).",
                                   check=_pattern_problem(re.compile(r"^([1-9]\d{0,6}|[1-9]\d?%|100%)$"), "N or N%"))
    max_errors: str = setting("5%", "Errors after which the rollout stops (a count or a percentage).",
                              check=_pattern_problem(re.compile(r"^(\d{1,7}|\d{1,2}%|100%)$"), "N or N%"))


@dataclass(frozen=True)
class Spec:
    stack: str = setting(
        "infrawatch", "Prefix of every resource name; names this stack in tags.", check=_stack_problem
    )
    naming: str = setting("native", "The agents' naming profile (their `naming` key).", choices=PROFILES)
    namespace: str = setting(
        "", "The agents' CloudWatch namespace; empty: the naming profile's default (InfraWatch for native).",
        check=_namespace_problem,
    )
    runbook_url: str = setting("", "Link appended to every alarm description.")
    tags: tuple[tuple[str, str], ...] = setting(
        (), "Extra tags on every managed resource, as a table of key = value.", check=_tags_problem
    )
    notifications: Notifications = section(Notifications, "SNS topics per severity.")
    events: Events = section(Events, "EventBridge rule on alarm state changes.")
    dashboards: Dashboards = section(Dashboards, "CloudWatch dashboards.")
    responses: Responses = section(Responses, "Automated responses, carried out by AWS (docs/responses.md).")
    apply: Apply = section(Apply, "How changes are written.")
    rollout: Rollout = section(Rollout, "Agent rollout through SSM State Manager (CloudFormation export only).")
    hosts: tuple[HostGroup, ...] = tables(HostGroup, "Host groups: EC2 instances running the agent.")
    endpoints: tuple[Endpoint, ...] = tables(Endpoint, "SageMaker real-time endpoints.")
    fleets: tuple[Fleet, ...] = tables(
        Fleet, "Host groups declared by what their agents publish, not by instance ids: Metrics Insights alarms."
    )
    alarms: Mapping[str, AlarmSettings] = dataclasses.field(
        default_factory=_default_alarms,
        metadata={"doc": "Per alarm kind overrides, `[alarms.<key>]`; see the alarm catalogue."},
    )

    @property
    def metric_namespace(self) -> str:
        return self.namespace or DEFAULT_NAMESPACE.get(self.naming, "InfraWatch")

    @property
    def managed_tags(self) -> dict[str, str]:
        return {**dict(self.tags), MANAGED_BY[0]: MANAGED_BY[1], STACK_TAG: self.stack}


def build_tables(cls: type[T], data: Mapping[str, Any], problems: list[str], prefix: str = "") -> T:
    """`agent.schema.build` plus lists of tables at any depth."""
    hints = typing.get_type_hints(cls)
    fields = [field for field in dataclasses.fields(cls) if field.name in data]  # type: ignore[arg-type]
    deeper = [field for field in fields if "tables" in field.metadata
              or (field.metadata.get("section") and isinstance(data[field.name], dict))]
    plain = {key: value for key, value in data.items() if key not in {field.name for field in deeper}}
    built = build(cls, plain, problems, prefix)  # this table's own keys first, so problems read top-down
    nested: dict[str, Any] = {}
    for field in deeper:
        path = join(prefix, field.name)
        entry_cls = field.metadata.get("tables")
        if entry_cls is not None:
            nested[field.name] = _build_list(entry_cls, data[field.name], problems, path)
        else:
            nested[field.name] = build_tables(hints[field.name], data[field.name], problems, path)
    return dataclasses.replace(built, **nested)  # type: ignore[type-var]


def _build_list(cls: type[T], raw: Any, problems: list[str], path: str) -> tuple[T, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        problems.append(f"{path}: must be a list of tables, got {render(raw)}")
        return ()
    return tuple(build_tables(cls, item, problems, f"{path}[{index}]") for index, item in enumerate(raw))


def _build_alarms(raw: Any, problems: list[str]) -> dict[str, AlarmSettings]:
    alarms = _default_alarms()
    if not isinstance(raw, dict):
        problems.append(f"alarms: must be a table, got {render(raw)}")
        return alarms
    for key, table in raw.items():
        path = f"alarms.{key}"
        if key not in KINDS:
            problems.append(unknown_key(path, key, list(KINDS)))
        elif not isinstance(table, dict):
            problems.append(f"{path}: must be a table, got {render(table)}")
        else:
            defaults = dataclasses.asdict(alarms[key])
            alarms[key] = build(AlarmSettings, {**defaults, **table}, problems, path)
    return alarms


_THRESHOLD_RANGES = {"%": (0.0, 100.0), "fraction": (0.0, 1.0), "°C": (0.0, 150.0)}


def _alarm_problems(spec: Spec) -> list[str]:
    problems = []
    for key, settings in spec.alarms.items():
        kind = KINDS[key]
        path = f"alarms.{key}"
        low, high = _THRESHOLD_RANGES.get(kind.unit, (0.0, 1e300))
        if not low <= settings.threshold <= high:
            unit = f" {kind.unit}" if kind.unit else ""
            allowed = f"{low:g}..{high:g}{unit}"
            problems.append(f"{path}.threshold: must be {allowed}, got {render(settings.threshold)}")
        problems += _m_of_n_problems(path, settings.period, settings.datapoints, settings.evaluation_periods)
        if kind.target == VARIANT and settings.period < 60:
            problems.append(
                f"{path}.period: must be at least 60 seconds for SageMaker metrics, got {settings.period}"
            )
        if kind.target != VARIANT and settings.enabled:
            problems += _naming_problems(spec.naming, kind, path)
    return problems


def _m_of_n_problems(path: str, period: int, datapoints: int, evaluation_periods: int) -> list[str]:
    problems = []
    if datapoints > evaluation_periods:
        problems.append(
            f"{path}.datapoints: must be at most evaluation_periods ({evaluation_periods}), got {datapoints}"
        )
    if period * evaluation_periods > MAX_EVALUATION_SECONDS:
        problems.append(
            f"{path}.evaluation_periods: period * evaluation_periods must be at most "
            f"{MAX_EVALUATION_SECONDS} seconds, got {period} * {evaluation_periods}"
        )
    return problems


def _naming_problems(profile: str, kind: AlarmKind, path: str) -> list[str]:
    """Every host alarm must watch a series the agents publish under their naming profile."""
    dims = {HOST_DIMENSION: "i-0", **{name: "0" for name in METRICS[kind.metric].dimensions}}
    try:
        resolve(profile, kind.metric, dims)
    except KeyError:
        return [f'{path}: the "{profile}" naming profile publishes no {kind.metric}; set enabled = false']
    return []


def _notification_problems(spec: Spec, earlier: list[str]) -> list[str]:
    problems = []
    for severity in SEVERITIES:
        topic: Topic = getattr(spec.notifications, severity)
        path = f"notifications.{severity}"
        if topic.topic_arn and topic.subscriptions:
            problems.append(f"{path}.subscriptions: only for a topic this stack creates (topic_arn is set)")
        if topic.topic_arn and topic.kms_key_id:
            problems.append(f"{path}.kms_key_id: only for a topic this stack creates (topic_arn is set)")
        seen: set[tuple[str, str]] = set()
        for index, subscription in enumerate(topic.subscriptions):
            entry = f"{path}.subscriptions[{index}]"
            problem = _endpoint_problem(subscription)
            protocol_rejected = any(line.startswith(f"{entry}.protocol:") for line in earlier)
            if problem and not protocol_rejected:
                problems.append(f"{entry}.endpoint: {problem}, got {render(subscription.endpoint)}")
            if (subscription.protocol, subscription.endpoint) in seen:
                problems.append(f"{entry}: repeats an earlier subscription")
            seen.add((subscription.protocol, subscription.endpoint))
    return problems


def _endpoint_problem(subscription: Subscription) -> str | None:
    endpoint = subscription.endpoint
    if subscription.protocol == "email" and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", endpoint):
        return "must be an email address"
    if subscription.protocol == "https" and not re.match(r"^https://[^\s/]+", endpoint):
        return "must be an https:// URL"
    if subscription.protocol == "sqs" and not _QUEUE_ARN.match(endpoint):
        return "must be an SQS queue ARN"
    if subscription.protocol == "lambda" and not _FUNCTION_ARN.match(endpoint):
        return "must be a Lambda function ARN"
    return None


def _events_problems(spec: Spec) -> list[str]:
    if _AUTOMATION_ARN.match(spec.events.target_arn) and not spec.events.role_arn:
        return ["events.role_arn: must be set for an SSM Automation target, got \"\""]
    return []


def _responses_problems(spec: Spec) -> list[str]:
    replace = spec.responses.replace_unhealthy_gpu_host
    if not replace.enabled:
        return []
    path = "responses.replace_unhealthy_gpu_host"
    problems = [
        f"{path}.alarms: alarms.{key} is disabled, so it cannot start the response; enable it or drop it"
        for key in replace.alarms if not spec.alarms[key].enabled
    ]
    if spec.stack.lower().startswith(RESERVED_DOCUMENT_PREFIXES):
        problems.append(
            f"stack: the response's SSM document is named after the stack, and SSM reserves names starting "
            f"with {', '.join(RESERVED_DOCUMENT_PREFIXES)}, got {render(spec.stack)}"
        )
    groups = replace.auto_scaling_groups or any(group.auto_scaling_group for group in spec.hosts)
    if not groups and replace.outside_group == "nothing":
        problems.append(
            f"{path}: no Auto Scaling group to act on (hosts[].auto_scaling_group or auto_scaling_groups) "
            'and outside_group = "nothing": the response could only notify'
        )
    return problems


def _host_problems(spec: Spec, earlier: list[str]) -> list[str]:
    problems = []
    listed: dict[str, str] = {}  # instance id: where the spec lists it first
    for index, group in enumerate(spec.hosts):
        path = f"hosts[{index}]"
        for item_index, instance_id in enumerate(group.instance_ids):
            here = f"{path}.instance_ids[{item_index}]"
            if instance_id in listed:
                problems.append(f"{here}: {render(instance_id)} is also in {listed[instance_id]}")
            listed.setdefault(instance_id, here)
        sources = [bool(group.instance_ids), bool(group.auto_scaling_group), group.discover]
        source_rejected = any(line.startswith(f"{path}.instance_ids:") for line in earlier)
        if sources.count(True) != 1 and not source_rejected:
            problems.append(
                f"{path}: must set exactly one of instance_ids, auto_scaling_group, discover = true, "
                f"got {sources.count(True)}"
            )
        names: set[str] = set()
        for floor_index, floor in enumerate(group.throughput_floors):
            entry = f"{path}.throughput_floors[{floor_index}]"
            if not floor.metric and not any(line.startswith(f"{entry}.metric:") for line in earlier):
                problems.append(f'{entry}.metric: must name the application metric, got ""')
            name = floor.name or floor.metric
            if floor.metric and not _SERIES_NAME.match(name):
                problems.append(f"{entry}.name: must be 1..64 letters, digits, _ . or -, got {render(name)}")
            if name in names:
                problems.append(f"{entry}.name: repeats an earlier floor's name, got {render(name)}")
            names.add(name)
            problems += _m_of_n_problems(entry, floor.period, floor.datapoints, floor.evaluation_periods)
    return problems


def _endpoint_entry_problems(spec: Spec) -> list[str]:
    problems = []
    names: set[str] = set()
    for index, endpoint in enumerate(spec.endpoints):
        path = f"endpoints[{index}]"
        if bool(endpoint.name) == endpoint.discover:
            problems.append(f"{path}: must set exactly one of name, discover = true")
        if endpoint.name and not _ENDPOINT_NAME.match(endpoint.name):
            problems.append(f"{path}.name: must be a SageMaker endpoint name, got {render(endpoint.name)}")
        if endpoint.name in names:
            problems.append(f"{path}.name: repeats an earlier endpoint, got {render(endpoint.name)}")
        names.add(endpoint.name)
        if endpoint.name_contains and not endpoint.discover:
            problems.append(f"{path}.name_contains: only with discover = true")
        if endpoint.instance_type and not _INSTANCE_TYPE.match(endpoint.instance_type):
            problems.append(
                f'{path}.instance_type: must be a SageMaker instance type like "ml.g5.2xlarge", '
                f"got {render(endpoint.instance_type)}"
            )
    return problems


def _fleet_problems(spec: Spec) -> list[str]:
    problems = []
    names: set[str] = set()
    for index, fleet in enumerate(spec.fleets):
        path = f"fleets[{index}]"
        if not fleet.name:
            problems.append(f'{path}.name: must name the fleet, got ""')
        if fleet.name in names:
            problems.append(f"{path}.name: repeats an earlier fleet, got {render(fleet.name)}")
        names.add(fleet.name)
        published = fleet.append_dimensions or (HOSTNAME_DIMENSION,)
        for name, value in fleet.filter:
            if name not in published:
                problems.append(
                    f"{path}.filter.{name}: the agents publish no {name} (their append_dimensions are "
                    f"{render(list(published))}), got {render(value)}"
                )
        unfiltered = [name for name in fleet.append_dimensions
                      if name != HOST_DIMENSION and name not in dict(fleet.filter)]
        if fleet.scope == HOST_SCOPE and unfiltered:
            problems.append(
                f"{path}.filter: scope \"host\" names each host's series exactly, so every append_dimension but "
                f"{HOST_DIMENSION} needs a value here, missing {render(unfiltered)}"
            )
        if fleet.reporting.enabled and fleet.hosts and fleet.reporting.min_hosts > fleet.hosts:
            problems.append(
                f"{path}.reporting.min_hosts: must be at most hosts ({fleet.hosts}), or the alarm is always in "
                f"ALARM, got {fleet.reporting.min_hosts}"
            )
        if fleet.reporting.enabled and fleet.scope == HOST_SCOPE:
            problems.append(
                f"{path}.reporting.enabled: scope \"host\" has a heartbeat_missing alarm per host already; "
                "the hosts_reporting count is for scope \"fleet\", got true"
            )
        if fleet.append_dimensions and HOST_DIMENSION not in fleet.append_dimensions:
            problems.append(
                f"{path}.append_dimensions: must include {HOST_DIMENSION} (or be empty: Host), or no alarm can "
                f"tell one host from another, got {render(list(fleet.append_dimensions))}"
            )
    return problems


def parse(data: Mapping[str, Any]) -> Spec:
    """Validate a TOML document; raises ConfigError listing every problem."""
    problems: list[str] = []
    rest = {key: value for key, value in data.items() if key != "alarms"}
    spec = build_tables(Spec, rest, problems)
    if "alarms" in data:
        spec = dataclasses.replace(spec, alarms=_build_alarms(data["alarms"], problems))
    problems += _alarm_problems(spec)
    problems += _notification_problems(spec, problems)
    problems += _events_problems(spec)
    problems += _responses_problems(spec)
    problems += _host_problems(spec, problems)
    problems += _endpoint_entry_problems(spec)
    problems += _fleet_problems(spec)
    problems += _rollout_problems(spec.rollout)
    if problems:
        raise ConfigError(problems)
    return spec


def _rollout_problems(rollout: Rollout) -> list[str]:
    """An enabled rollout must say what to install, with its checksum, and on which instances."""
    if not rollout.enabled:
        return []
    problems = [f'rollout.{key}: must be set when rollout.enabled = true, got ""'
                for key in ("version", "sha256", "tag_value") if not getattr(rollout, key)]
    if rollout.source.endswith(".whl") and rollout.version and f"-{rollout.version}-" not in rollout.source:
        problems.append(f"rollout.source: names a wheel that is not version {rollout.version}, "
                        f"got {render(rollout.source)}")
    return problems


def load(path: Path) -> Spec:
    return parse(load_toml(path))


def reference(cls: type = Spec, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key path, default, doc) of every key, lists of tables as `hosts[].gpus`, for the README."""
    rows: list[tuple[str, Any, str]] = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        path = join(prefix, field.name)
        if field.metadata.get("section"):
            rows += reference(hints[field.name], path)
        elif field.metadata.get("tables"):
            rows += reference(field.metadata["tables"], f"{path}[]")
        elif field.name == "alarms":
            rows += reference(AlarmSettings, "alarms.<key>")
        else:
            rows.append((path, field.default, field.metadata.get("doc", "")))
    return rows

