"""Automated responses, declared in the spec and carried out by AWS itself: no code of ours runs in AWS.

- `replace_unhealthy_gpu_host`: an EventBridge rule on this stack's GPU health alarms (ALARM) starts the
  SSM Automation document we ship (`documents/replace_unhealthy_gpu_host.json`) as a role allowed exactly
  `autoscaling:SetInstanceHealth` on the named groups. The document keeps the limits from AWS's own records:
  the group's InService count (DescribeAutoScalingGroups) against a floor, and the day's health replacements
  (DescribeScalingActivities) against a limit. EventBridge itself assumes a second role that may only start
  that document and pass the first role to SSM.
- `recover_on_status_check`: per EC2 host an alarm on `AWS/EC2 StatusCheckFailed_System` whose action is
  `arn:aws:automate:<region>:ec2:recover` (and `StatusCheckFailed_Instance` → `ec2:reboot` if asked).

Every response notifies the warning topic with what it did: the Automation publishes its outcome, the
recover and reboot alarms list the topic beside the EC2 action.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from botocore.exceptions import ClientError

from agent.config import HOST_DIMENSION
from agent.schema import render
from provisioning.alarm_catalogue import KINDS
from provisioning.alarms import AlarmDefinition
from provisioning.aws import Account, Caller, error_code
from provisioning.discovery import Host, Inventory, published_key
from provisioning.events import RuleDefinition, Target, rule_description
from provisioning.notifications import canonical_json
from provisioning.spec import ReplaceUnhealthyGpuHost, Spec

DOCUMENT_FILE = "replace_unhealthy_gpu_host.json"
REPLACE_TARGET = "replace-gpu-host"
SSM = "ssm.amazonaws.com"
EVENTS = "events.amazonaws.com"
MAX_ROLE_POLICY_CHARS = 10_240  # IAM: an inline role policy's size quota (whitespace not counted)
MAX_FILTER_VALUES = 200  # EC2 Describe* filters: at most 200 values per filter
STATUS_CHECK_PERIOD = 60  # AWS/EC2 status checks are published once a minute
# Auto Scaling's health actions do not support resource-level permissions; SetInstanceHealth does
# (Service Authorization Reference, "Actions defined by Amazon EC2 Auto Scaling").
DESCRIBE_ACTIONS = (
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeScalingActivities",
)


def shipped_document() -> str:
    """The Automation document as shipped (package data), in canonical JSON."""
    text = resources.files("provisioning").joinpath("documents").joinpath(DOCUMENT_FILE).read_text(encoding="utf-8")
    return canonical_json(text)


def document_name(stack: str) -> str:
    return f"{stack}-ReplaceUnhealthyGpuHost"


def response_rule_name(stack: str) -> str:
    return f"{stack}-replace-gpu-host"


def role_names(stack: str, region: str) -> tuple[str, str]:
    """(automation role, events role): IAM is global, so the region keeps two regions' stacks apart."""
    return f"{stack}-{region}-replace-gpu-host", f"{stack}-{region}-start-replace"


def group_arn(account: Account, group: str) -> str:
    return account.arn("autoscaling", f"autoScalingGroup:*:autoScalingGroupName/{group}")


@dataclass(frozen=True)
class DocumentDefinition:
    name: str
    content: str  # canonical JSON


@dataclass(frozen=True)
class RoleDefinition:
    name: str
    arn: str
    description: str
    trust: str  # canonical JSON
    policy_name: str
    policy: str  # canonical JSON


@dataclass(frozen=True)
class ReplaceResponse:
    document: DocumentDefinition
    roles: tuple[RoleDefinition, ...]  # (automation role, events role)
    rule: RuleDefinition
    groups: tuple[str, ...]
    settings: ReplaceUnhealthyGpuHost

    def lines(self) -> list[str]:
        """What the plan shows: the response, its limits, and each role's exact trust and permissions."""
        settings = self.settings
        outside = "stopped" if settings.outside_group == "stop" else "left as they are (notified only)"
        lines = [
            f"Response replace_unhealthy_gpu_host: {', '.join(settings.alarms)} in ALARM → Automation "
            f"{self.document.name} marks the host Unhealthy in its Auto Scaling group "
            f"(ShouldRespectGracePeriod={str(settings.respect_grace_period).lower()}).",
            f"    limits: at most {settings.max_replacements_per_day} health replacements per group per UTC day; "
            f"never when the group has {settings.min_in_service} InService instances or fewer.",
            f"    groups: {', '.join(self.groups) or '(none)'}; hosts in no group are {outside}.",
        ]
        for role in self.roles:
            lines.append(f"    role {role.name} trust: {role.trust}")
            lines.append(f"    role {role.name} policy {role.policy_name}: {role.policy}")
        return lines


@dataclass(frozen=True)
class DesiredResponses:
    replace: ReplaceResponse | None
    recover_alarms: tuple[AlarmDefinition, ...]

    def lines(self) -> list[str]:
        lines = self.replace.lines() if self.replace else []
        if self.recover_alarms:
            actions = sorted({action.rsplit(":", 1)[1] for alarm in self.recover_alarms
                              for action in alarm.alarm_actions if ":automate:" in action})
            lines.append(f"Response recover_on_status_check: {len(self.recover_alarms)} status check alarms "
                         f"with EC2 actions {', '.join(actions)}.")
        return lines


# --- replace_unhealthy_gpu_host -------------------------------------------------------------------------


def _statement(sid: str, actions: Sequence[str], resources: Sequence[str], **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": sorted(resources), **extra}


def _trust(service: str, account: Account, source_arn: str) -> str:
    """Only `service`, and only on behalf of this account (and, for EventBridge, this stack's rule)."""
    condition: dict[str, Any] = {"StringEquals": {"aws:SourceAccount": account.id}}
    if source_arn:
        condition["ArnLike"] = {"aws:SourceArn": source_arn}
    return canonical_json({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole", "Condition": condition,
    }]})


def automation_policy(
    account: Account, groups: Sequence[str], stop_instances: Sequence[str], topic_arn: str
) -> str:
    statements = [_statement("ReadGroupsAndTheirHistory", DESCRIBE_ACTIONS, ["*"])]
    if groups:
        statements.append(_statement(
            "MarkUnhealthyInTheNamedGroups", ["autoscaling:SetInstanceHealth"],
            [group_arn(account, group) for group in groups],
        ))
    if stop_instances:
        statements.append(_statement(
            "StopHostsInNoGroup", ["ec2:StopInstances"],
            [account.arn("ec2", f"instance/{instance}") for instance in stop_instances],
        ))
    statements.append(_statement("NotifyTheWarningTopic", ["sns:Publish"], [topic_arn]))
    return canonical_json({"Version": "2012-10-17", "Statement": statements})


def events_policy(account: Account, document: str, automation_role_arn: str) -> str:
    return canonical_json({"Version": "2012-10-17", "Statement": [
        _statement("StartTheResponse", ["ssm:StartAutomationExecution"],
                   [account.arn("ssm", f"automation-definition/{document}:*")]),
        _statement("PassTheAutomationRole", ["iam:PassRole"], [automation_role_arn],
                   Condition={"StringEquals": {"iam:PassedToService": SSM}}),
    ]})


def _groups(spec: Spec) -> tuple[str, ...]:
    named = [group.auto_scaling_group for group in spec.hosts if group.auto_scaling_group]
    return tuple(sorted({*named, *spec.responses.replace_unhealthy_gpu_host.auto_scaling_groups}))


def replace_response(spec: Spec, account: Account, inventory: Inventory, warning_topic_arn: str) -> ReplaceResponse:
    settings = spec.responses.replace_unhealthy_gpu_host
    automation_name, events_name = role_names(spec.stack, account.region)
    automation_arn = account.arn("iam", f"role/{automation_name}", regional=False)
    rule_name = response_rule_name(spec.stack)
    rule_arn = account.arn("events", f"rule/{rule_name}")
    document = DocumentDefinition(document_name(spec.stack), shipped_document())
    groups = _groups(spec)
    # A host listed by id may still be in a group: the document looks that up first and never stops it.
    outside = [host.instance_id for host in inventory.hosts
               if host.id_dimension == HOST_DIMENSION and not host.auto_scaling_group]
    stop = sorted(outside) if settings.outside_group == "stop" else []
    roles = (
        RoleDefinition(
            automation_name, automation_arn,
            f"infrawatch stack {spec.stack}: the replace_unhealthy_gpu_host Automation runs as this role",
            _trust(SSM, account, account.arn("ssm", "automation-execution/*")), "replace-unhealthy-gpu-host",
            automation_policy(account, groups, stop, warning_topic_arn),
        ),
        RoleDefinition(
            events_name, account.arn("iam", f"role/{events_name}", regional=False),
            f"infrawatch stack {spec.stack}: EventBridge starts the replace_unhealthy_gpu_host Automation",
            _trust(EVENTS, account, rule_arn), "start-replace-unhealthy-gpu-host",
            events_policy(account, document.name, automation_arn),
        ),
    )
    return ReplaceResponse(
        document=document, roles=roles, groups=groups, settings=settings,
        rule=response_rule(spec, account, document.name, roles, warning_topic_arn),
    )


def response_rule(
    spec: Spec, account: Account, document: str, roles: Sequence[RoleDefinition], topic_arn: str
) -> RuleDefinition:
    settings = spec.responses.replace_unhealthy_gpu_host
    # One alarm per GPU: `<stack>/host/<instance>/<key>@gpu<index>` (alarms.AlarmBuilder.host_alarms).
    names = [{"wildcard": f"{spec.stack}/host/*/{key}@gpu*"} for key in sorted(settings.alarms)]
    pattern = {
        "source": ["aws.cloudwatch"],
        "detail-type": ["CloudWatch Alarm State Change"],
        "detail": {"alarmName": names, "state": {"value": ["ALARM"]}},
    }
    metric = KINDS[settings.alarms[0]].metric
    instance_key = published_key(spec.naming, metric, HOST_DIMENSION, {"GPU": "0"})
    # The alarm's own dimensions carry the instance id; the limits ride along as constants of the input.
    paths = (
        ("alarm", "$.detail.alarmName"),
        ("instance", f"$.detail.configuration.metrics[0].metricStat.metric.dimensions.{instance_key}"),
    )
    template = (
        '{"InstanceId":["<instance>"],"AlarmName":["<alarm>"],'
        f'"AutomationAssumeRole":["{roles[0].arn}"],"TopicArn":["{topic_arn}"],'
        f'"MinInService":["{settings.min_in_service}"],'
        f'"MaxReplacementsPerDay":["{settings.max_replacements_per_day}"],'
        f'"RespectGracePeriod":["{str(settings.respect_grace_period).lower()}"],'
        f'"OutsideGroupAction":["{settings.outside_group}"]}}'
    )
    target = Target(
        REPLACE_TARGET, account.arn("ssm", f"automation-definition/{document}:$DEFAULT"), roles[1].arn,
        input_paths=paths, input_template=template,
    )
    name = response_rule_name(spec.stack)
    return RuleDefinition(
        name=name, arn=account.arn("events", f"rule/{name}"), pattern=canonical_json(pattern),
        description=rule_description(spec.stack, "GPU health alarms start replace_unhealthy_gpu_host"),
        targets=(target,),
    )


# --- recover_on_status_check ----------------------------------------------------------------------------


def recover_alarms(
    spec: Spec, account: Account, hosts: Iterable[Host], warning_topic_arn: str
) -> list[AlarmDefinition]:
    settings = spec.responses.recover_on_status_check
    if not settings.enabled:
        return []
    checks = [("status_check_system", "StatusCheckFailed_System", "recover")]
    if settings.reboot_on_instance_check:
        checks.append(("status_check_instance", "StatusCheckFailed_Instance", "reboot"))
    alarms = []
    for host in hosts:
        if host.id_dimension != HOST_DIMENSION:
            continue  # an agent off EC2 has no EC2 status checks
        for key, metric, action in checks:
            minutes = settings.evaluation_periods
            alarms.append(AlarmDefinition(
                name=f"{spec.stack}/host/{host.instance_id}/{key}",
                description=(
                    f"{metric} of {host.instance_id} for {minutes} of {minutes} periods of {STATUS_CHECK_PERIOD} s: "
                    f"EC2 {action}s the instance (responses.recover_on_status_check). "
                    f"Managed by infrawatch stack {spec.stack}."
                ),
                comparison="GreaterThanThreshold", threshold=0.0,
                evaluation_periods=minutes, datapoints_to_alarm=minutes, treat_missing_data="missing",
                alarm_actions=tuple(sorted((f"arn:{account.partition}:automate:{account.region}:ec2:{action}",
                                            warning_topic_arn))),
                namespace="AWS/EC2", metric_name=metric, dimensions=((HOST_DIMENSION, host.instance_id),),
                statistic="Maximum", period=STATUS_CHECK_PERIOD,
            ))
    return alarms


def recovery_check(spec: Spec, hosts: Sequence[Host], caller: Caller) -> tuple[list[str], list[str]]:
    """(problems, warnings): hosts whose instance type EC2 cannot recover (DescribeInstanceTypes
    `AutoRecoverySupported`), and hosts EC2 does not know, whose type could not be checked."""
    if not spec.responses.recover_on_status_check.enabled:
        return [], []
    ids = [host.instance_id for host in hosts if host.id_dimension == HOST_DIMENSION]
    types: dict[str, str] = {}
    for start in range(0, len(ids), MAX_FILTER_VALUES):
        # A filter, unlike InstanceIds, answers for the ids EC2 knows instead of refusing the whole call.
        chunk = ids[start:start + MAX_FILTER_VALUES]
        for page in caller.pages("ec2", "DescribeInstances", Filters=[{"Name": "instance-id", "Values": chunk}]):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    types[instance["InstanceId"]] = instance["InstanceType"]
    supported = {}
    for instance_type in sorted(set(types.values())):
        found = caller("ec2", "DescribeInstanceTypes", InstanceTypes=[instance_type])["InstanceTypes"]
        supported[instance_type] = bool(found and found[0].get("AutoRecoverySupported"))
    problems = [
        f"responses.recover_on_status_check: {instance} is a {render(types[instance])}, which EC2 cannot "
        "recover (DescribeInstanceTypes AutoRecoverySupported is false); set enabled = false or move it"
        for instance in sorted(types) if not supported[types[instance]]
    ]
    unknown = [instance for instance in ids if instance not in types]
    warnings = [
        f"responses.recover_on_status_check: EC2 does not know {', '.join(unknown)} (DescribeInstances), so "
        "whether their instance type can be recovered is not checked"
    ] if unknown else []
    return problems, warnings


def policy_problems(response: ReplaceResponse | None) -> list[str]:
    if response is None:
        return []
    return [
        f"responses.replace_unhealthy_gpu_host: role {role.name}'s policy has {len(role.policy)} characters, "
        f"IAM allows {MAX_ROLE_POLICY_CHARS}; list fewer hosts in no group or use outside_group = \"nothing\""
        for role in response.roles if len(role.policy) > MAX_ROLE_POLICY_CHARS
    ]


def desired_responses(
    spec: Spec, account: Account, inventory: Inventory, warning_topic_arn: str
) -> DesiredResponses:
    replace = None
    if spec.responses.replace_unhealthy_gpu_host.enabled:
        replace = replace_response(spec, account, inventory, warning_topic_arn)
    return DesiredResponses(replace, tuple(recover_alarms(spec, account, inventory.hosts, warning_topic_arn)))


# --- actual state -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActualDocument:
    name: str
    content: str  # canonical JSON of the latest version
    latest_version: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class ActualRole:
    definition: RoleDefinition
    tags: Mapping[str, str]
    policies: tuple[str, ...]  # every inline policy name


@dataclass(frozen=True)
class ActualResponses:
    document: ActualDocument | None
    roles: Mapping[str, ActualRole]


def _tags(raw: Iterable[Mapping[str, str]]) -> dict[str, str]:
    return {item["Key"]: item["Value"] for item in raw}


def read_responses(stack: str, account: Account, caller: Caller) -> ActualResponses:
    """The document and both roles by their names; the response rule is read with the stack's rules."""
    document = None
    name = document_name(stack)
    try:
        described = caller("ssm", "DescribeDocument", Name=name)["Document"]
    except ClientError as error:
        if error_code(error) != "InvalidDocument":
            raise
    else:
        content = caller("ssm", "GetDocument", Name=name, DocumentVersion="$LATEST")["Content"]
        tags = caller("ssm", "ListTagsForResource", ResourceType="Document", ResourceId=name)["TagList"]
        document = ActualDocument(name, canonical_json(content), str(described["LatestVersion"]), _tags(tags))
    roles = {}
    for role_name in role_names(stack, account.region):
        try:
            role = caller("iam", "GetRole", RoleName=role_name)["Role"]
        except ClientError as error:
            if error_code(error) != "NoSuchEntity":
                raise
            continue
        # One page each: IAM allows 10 inline policies and 50 tags per role, a page holds 100.
        policies = tuple(caller("iam", "ListRolePolicies", RoleName=role_name)["PolicyNames"])
        policy_name, policy = "", "{}"
        if policies:
            policy_name = policies[0]
            policy = caller("iam", "GetRolePolicy", RoleName=role_name, PolicyName=policy_name)["PolicyDocument"]
        tags = caller("iam", "ListRoleTags", RoleName=role_name)["Tags"]
        roles[role_name] = ActualRole(
            RoleDefinition(role_name, role["Arn"], role.get("Description", ""),
                           canonical_json(role["AssumeRolePolicyDocument"]), policy_name, canonical_json(policy)),
            _tags(tags), policies,
        )
    return ActualResponses(document, roles)
