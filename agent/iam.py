"""The least-privilege IAM policy a configuration needs; `infrawatch-agent print-iam-policy` prints it.

PutMetricData has no resource-level permissions (its Resource is "*"), so the `cloudwatch:namespace`
condition key is what limits it to the configured namespace. ec2:DescribeTags (also only "*") is granted
only when the configuration needs the Auto Scaling group and may ask the EC2 API for it.
"""

from __future__ import annotations

import json
from typing import Any

from agent.config import AgentConfig
from agent.fleet import needs_auto_scaling_group


def describes_tags(config: AgentConfig) -> bool:
    return (config.ec2.identity and config.ec2.describe_tags
            and needs_auto_scaling_group(config.append_dimensions, config.aggregate_dimensions))


def ssm_parameter_arn(name: str) -> str:
    """The ARN pattern of a Parameter Store name in any region and account of the partition the role is in:
    a role's policy cannot know the account it is created in, and the name is the secret's identity."""
    return f"arn:aws:ssm:*:*:parameter/{name.lstrip('/')}"


def policy(config: AgentConfig, ssm_parameter: str | None = None) -> dict[str, Any]:
    """`ssm_parameter`: the Parameter Store name the SSM rollout reads the config from (docs/rollout.md)."""
    statements: list[dict[str, Any]] = [{
        "Sid": "PublishMetricsToOneNamespace",
        "Effect": "Allow",
        "Action": "cloudwatch:PutMetricData",
        "Resource": "*",
        "Condition": {"StringEquals": {"cloudwatch:namespace": config.namespace}},
    }]
    if describes_tags(config):
        statements.append({
            "Sid": "ReadAutoScalingGroupTag",
            "Effect": "Allow",
            "Action": "ec2:DescribeTags",
            "Resource": "*",
        })
    if ssm_parameter:
        statements.append({
            "Sid": "ReadAgentConfigParameter",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": ssm_parameter_arn(ssm_parameter),
        })
    return {"Version": "2012-10-17", "Statement": statements}


def render(config: AgentConfig, ssm_parameter: str | None = None) -> str:
    return json.dumps(policy(config, ssm_parameter), indent=2) + "\n"
