"""The host the agent runs on: EC2 identity or hostname, region, and the Auto Scaling group lookup.

Built once per process and kept across config reloads: IMDS is asked once, and the group lookup starts
the first time a configuration needs it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog

from agent.config import AgentConfig, Ec2Config
from agent.ec2 import AsgLookup, Ec2Identity, Imds, discover
from agent.fleet import DimensionPlan, needs_auto_scaling_group

log = structlog.get_logger()


def ec2_client(region: str) -> Any:
    import boto3

    return boto3.client("ec2", region_name=region)


def sdk_region() -> str | None:
    """The region from the SDK's configuration (AWS_DEFAULT_REGION, the profile), else AWS_REGION: the
    variable the AWS CLI v2 and the other SDKs read, and botocore does not."""
    import boto3

    return boto3.session.Session().region_name or os.environ.get("AWS_REGION") or None


def region_source() -> str:
    """Where `sdk_region` found its region, in the words a person would use to change it."""
    import boto3

    session = boto3.session.Session()
    if os.environ.get("AWS_DEFAULT_REGION"):
        return "AWS_DEFAULT_REGION"
    if session.region_name:
        return f"profile {session.profile_name!r} in the AWS config file"
    if os.environ.get("AWS_REGION"):
        return "AWS_REGION"
    return "nowhere: set AWS_REGION"


class HostContext:
    def __init__(
        self,
        ec2: Ec2Config,
        *,
        hostname: str | None = None,
        imds: Imds | None = None,
        ec2_client_factory: Callable[[str], Any] = ec2_client,
        sdk_region: Callable[[], str | None] = sdk_region,
    ) -> None:
        self.hostname = hostname or socket.gethostname()
        self._imds = imds or Imds(timeout=ec2.imds_timeout, attempts=ec2.imds_attempts)
        self._ec2_client_factory = ec2_client_factory
        self._sdk_region = sdk_region
        self._group: AsgLookup | None = None
        self.identity: Ec2Identity | None = None
        if ec2.identity:
            self.identity = discover(self._imds, ec2.identity_wait, self.hostname)
        else:
            log.info("not_on_ec2", host=self.hostname, reason="ec2.identity = false")

    def region(self) -> str | None:
        """The CloudWatch client's region: the SDK configuration's, else the instance's own."""
        return self._sdk_region() or (self.identity.region if self.identity else None)

    def group_lookup(self, config: AgentConfig) -> AsgLookup | None:
        """The Auto Scaling group lookup, started on first need; None when not on EC2 or not needed."""
        if self.identity is None or not needs_auto_scaling_group(config.append_dimensions,
                                                                 config.aggregate_dimensions):
            return None
        if self._group is None:
            # The instance's own region: the SDK's may point CloudWatch elsewhere.
            ec2 = self._ec2_client_factory(self.identity.region) if config.ec2.describe_tags else None
            self._group = AsgLookup(imds=self._imds, instance_id=self.identity.instance_id, ec2=ec2).start()
        return self._group

    def plan(self, config: AgentConfig, wall_clock: Callable[[], float] = time.time) -> DimensionPlan:
        return DimensionPlan(
            identity=self.identity.dimensions() if self.identity else None,
            hostname=self.hostname,
            static=config.dimensions,
            append=config.append_dimensions,
            aggregate=config.aggregate_dimensions,
            rollup_metrics=config.aggregate_metrics,
            group=self.group_lookup(config),
            tag_wait=config.ec2.tag_wait,
            wall_clock=wall_clock,
        )

    def wait_for_group(self, timeout: float) -> None:
        if self._group is not None:
            self._group.done.wait(timeout)
