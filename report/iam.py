"""The read-only IAM policy `infrawatch-report` needs; `infrawatch-report print-iam-policy` prints it.

GetMetricData, ListMetrics and DescribeInstances support no resource-level permissions, so they are granted
on "*". DescribeAlarms and ListTagsForResource take alarm ARNs: with a stack they are limited to its
alarms, which the provisioner names `<stack>/...`. Every action only reads.
"""

from __future__ import annotations

import json
from typing import Any

READ_ANYWHERE = ("cloudwatch:GetMetricData", "cloudwatch:ListMetrics", "ec2:DescribeInstances")

READ_ALARMS = ("cloudwatch:DescribeAlarms", "cloudwatch:ListTagsForResource")
# The spec's SageMaker endpoints, found as the provisioner finds them (provisioning.discovery).
READ_ENDPOINTS = {
    "sagemaker:DescribeEndpoint": "arn:aws:sagemaker:*:*:endpoint/*",
    "sagemaker:DescribeEndpointConfig": "arn:aws:sagemaker:*:*:endpoint-config/*",
}
READ_ANYWHERE_FOR_ENDPOINTS = ("sagemaker:ListEndpoints", "ec2:DescribeInstanceTypes")


def policy(stack: str = "") -> dict[str, Any]:
    alarms = f"arn:aws:cloudwatch:*:*:alarm:{stack}/*" if stack else "arn:aws:cloudwatch:*:*:alarm:*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadMetricsAndInstances", "Effect": "Allow",
             "Action": [*READ_ANYWHERE, *READ_ANYWHERE_FOR_ENDPOINTS], "Resource": "*"},
            {"Sid": "ReadTheStacksAlarms", "Effect": "Allow", "Action": list(READ_ALARMS), "Resource": alarms},
            {"Sid": "ReadSageMakerEndpoints", "Effect": "Allow", "Action": list(READ_ENDPOINTS),
             "Resource": sorted(set(READ_ENDPOINTS.values()))},
        ],
    }


def render(stack: str = "") -> str:
    return json.dumps(policy(stack), indent=2) + "\n"
