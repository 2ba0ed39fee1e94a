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


def policy(config: AgentConfig) -> dict[str, Any]:
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
    return {"Version": "2012-10-17", "Statement": statements}


def render(config: AgentConfig) -> str:
    return json.dumps(policy(config), indent=2) + "\n"
