"""Who this host is on EC2: the identity over IMDSv2, and its Auto Scaling group in the background.

IMDS is spoken through botocore's own fetcher (token PUT with a TTL, timeouts, retries, the SDK's
endpoint settings); IMDSv1 is never used. The identity is asked once at startup within a hard deadline;
no answer means "not on EC2" for the rest of the run: one log line, no retry storm.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import botocore.session
import structlog
from botocore.utils import METADATA_BASE_URL, IMDSFetcher, resolve_imds_endpoint_mode

from agent.logs import LogOnce

log = structlog.get_logger()

IDENTITY_DOCUMENT = "latest/dynamic/instance-identity/document"
INSTANCE_TAGS = "latest/meta-data/tags/instance"
ASG_TAG = "aws:autoscaling:groupName"
TOKEN_REFRESH_MARGIN = 60.0  # seconds before expiry a token is replaced
DESCRIBE_TAGS_BACKOFF = (1.0, 300.0)  # first and longest pause between failed DescribeTags calls


class ImdsUnavailable(Exception):
    """IMDS did not answer (not on EC2, IMDS disabled, hop limit too small, timeout)."""


class Imds(IMDSFetcher):
    """botocore's IMDS fetcher with the session token kept and refreshed, and plain GETs."""

    def __init__(
        self,
        *,
        timeout: float = 1.0,
        attempts: int = 2,
        token_ttl: int = 21600,
        base_url: str | None = None,
        env: Mapping[str, str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        config: dict[str, Any] = {"ec2_metadata_v1_disabled": True}
        if base_url is None:
            session = botocore.session.get_session()
            config["ec2_metadata_service_endpoint"] = session.get_config_variable("ec2_metadata_service_endpoint")
            config["ec2_metadata_service_endpoint_mode"] = resolve_imds_endpoint_mode(session)
        super().__init__(timeout=timeout, num_attempts=attempts, base_url=base_url or METADATA_BASE_URL,
                         env=dict(env) if env is not None else None, config=config)
        self._TOKEN_TTL = str(token_ttl)
        self._token_ttl = token_ttl
        self._monotonic = monotonic
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = threading.Lock()

    def _session_token(self) -> str:
        with self._lock:
            now = self._monotonic()
            if self._token is None or now >= self._token_expires - TOKEN_REFRESH_MARGIN:
                if self._disabled:  # botocore's reading of the SDK setting
                    raise ImdsUnavailable("AWS_EC2_METADATA_DISABLED is true")
                try:
                    token = self._fetch_metadata_token()
                except Exception as error:  # botocore raises its own types for bad endpoints and 400s
                    raise ImdsUnavailable(f"token request failed: {error!r}") from error
                if not token:
                    raise ImdsUnavailable("no IMDSv2 token (timeout, IMDS disabled, or hop limit too small)")
                self._token, self._token_expires = token, now + self._token_ttl
            return self._token

    def get(self, path: str) -> str | None:
        """The text at `path`, or None when IMDS answers 404 (the item does not exist)."""
        for _ in range(2):  # a 401 means the token expired early: one more try with a fresh one
            token = self._session_token()
            try:
                response = self._get_request(path, retry_func=lambda r: r.status_code >= 500, token=token)
            except Exception as error:
                raise ImdsUnavailable(f"GET {path} failed: {error!r}") from error
            if response.status_code == 200:
                return str(response.text)
            if response.status_code == 404:
                return None
            if response.status_code != 401:
                break
            with self._lock:
                self._token = None
        raise ImdsUnavailable(f"GET {path}: HTTP {response.status_code}")


@dataclass(frozen=True)
class Ec2Identity:
    instance_id: str
    instance_type: str
    image_id: str
    availability_zone: str
    region: str

    def dimensions(self) -> dict[str, str]:
        return {"InstanceId": self.instance_id, "InstanceType": self.instance_type, "ImageId": self.image_id,
                "AvailabilityZone": self.availability_zone}


def read_identity(imds: Imds) -> Ec2Identity:
    text = imds.get(IDENTITY_DOCUMENT)
    if text is None:
        raise ImdsUnavailable("no instance identity document")
    document = json.loads(text)
    return Ec2Identity(document["instanceId"], document["instanceType"], document["imageId"],
                       document["availabilityZone"], document["region"])


def discover(imds: Imds, wait: float, hostname: str) -> Ec2Identity | None:
    """The identity, or None when IMDS has not answered within `wait` seconds; startup never waits longer."""
    result: list[Ec2Identity | Exception] = []
    answered = threading.Event()

    def ask() -> None:
        try:
            result.append(read_identity(imds))
        except Exception as error:
            result.append(error)
        answered.set()

    threading.Thread(target=ask, name="imds identity", daemon=True).start()
    if not answered.wait(wait):
        reason = f"IMDS did not answer within {wait:g} s"
    elif isinstance(result[0], Ec2Identity):
        identity = result[0]
        log.info("ec2_identity", instance_id=identity.instance_id, instance_type=identity.instance_type,
                 image_id=identity.image_id, availability_zone=identity.availability_zone, region=identity.region)
        return identity
    else:
        reason = str(result[0])
    log.info("not_on_ec2", host=hostname, reason=reason)
    return None


class AsgLookup:
    """The instance's Auto Scaling group, found on a background thread; `done` is set once `value` is final.

    IMDS instance tags are read first (no API call, no permission). When the instance does not expose
    its tags in IMDS, ec2:DescribeTags is asked instead, with a growing pause between failures, until it
    answers. `value` stays None when the instance is in no Auto Scaling group.
    """

    def __init__(
        self,
        *,
        imds: Imds,
        instance_id: str,
        ec2: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.done = threading.Event()
        self.value: str | None = None
        self._imds = imds
        self._instance_id = instance_id
        self._ec2 = ec2
        self._sleep = sleep
        self._warn = LogOnce(log)

    def start(self) -> AsgLookup:
        threading.Thread(target=self.run, name="asg lookup", daemon=True).start()
        return self

    def run(self) -> None:
        try:
            keys = self._imds.get(INSTANCE_TAGS)
            if keys is not None:
                self._finish(self._imds.get(f"{INSTANCE_TAGS}/{ASG_TAG}") if ASG_TAG in keys.split() else None,
                             "imds_tags")
                return
        except ImdsUnavailable as error:
            log.warning("imds_tags_failed", error=str(error))
        if self._ec2 is None:
            log.warning("auto_scaling_group_unknown", reason="tags are not in IMDS and ec2.describe_tags is off")
            self.done.set()
        else:
            self._finish(self._describe_tags(), "describe_tags")

    def _describe_tags(self) -> str | None:
        pause, longest = DESCRIBE_TAGS_BACKOFF
        while True:
            try:
                response = self._ec2.describe_tags(Filters=[
                    {"Name": "resource-id", "Values": [self._instance_id]},
                    {"Name": "key", "Values": [ASG_TAG]},
                ])
                return next((tag["Value"] for tag in response.get("Tags", [])), None)
            except Exception as error:
                self._warn.warning("describe_tags", "describe_tags_failed", error=repr(error), retry_in_s=pause,
                                   hint="grant ec2:DescribeTags or allow tags in instance metadata")
                self._sleep(pause)
                pause = min(pause * 2, longest)

    def _finish(self, value: str | None, source: str) -> None:
        self.value = value
        log.info("auto_scaling_group_lookup", group=value, source=source)
        self.done.set()
