"""EC2 identity over IMDSv2 against a fake IMDS on loopback (healthy, down, slow), and the group lookup."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from structlog.testing import capture_logs

from agent.cli import run_once
from agent.collectors.memory import MemoryCollector
from agent.config import AgentConfig, Ec2Config, parse
from agent.dryrun import PrintingClient
from agent.ec2 import ASG_TAG, AsgLookup, Ec2Identity, Imds, ImdsUnavailable, discover
from agent.host import HostContext, sdk_region
from tests.conftest import free_port
from tests.fakes.host import FakeClock, SwapMemory, VirtualMemory
from tests.fakes.imds import FakeImds

IDENTITY = Ec2Identity("i-0123456789abcdef0", "p5.48xlarge", "ami-0fedcba9876543210", "us-east-1a", "us-east-1")
IDENTITY_LOG = {"event": "ec2_identity", "log_level": "info", "instance_id": "i-0123456789abcdef0",
                "instance_type": "p5.48xlarge", "image_id": "ami-0fedcba9876543210",
                "availability_zone": "us-east-1a", "region": "us-east-1"}


def imds_at(fake: FakeImds | str, *, timeout: float = 1.0, attempts: int = 1) -> Imds:
    """botocore's fetcher pointed at the fake; env={} so the suite's AWS_EC2_METADATA_DISABLED does not apply."""
    return Imds(base_url=fake.url if isinstance(fake, FakeImds) else fake, env={}, timeout=timeout, attempts=attempts)


def test_identity_over_imdsv2_with_one_token_for_every_request() -> None:
    with FakeImds() as fake, capture_logs() as logged:
        identity = discover(imds_at(fake), wait=5.0, hostname="gpu-7")
    assert identity == IDENTITY
    assert identity.dimensions() == {"InstanceId": "i-0123456789abcdef0", "InstanceType": "p5.48xlarge",
                                     "ImageId": "ami-0fedcba9876543210", "AvailabilityZone": "us-east-1a"}
    assert fake.requests == [("PUT", "/latest/api/token", "21600"),
                             ("GET", "/latest/dynamic/instance-identity/document", "token-1")]
    assert logged == [IDENTITY_LOG]


def test_a_get_without_a_token_is_refused_by_the_fake_as_on_an_imdsv2_only_instance() -> None:
    import urllib.error
    import urllib.request

    with FakeImds() as fake, pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(fake.url + "latest/dynamic/instance-identity/document", timeout=5)
    assert refused.value.code == 401


def test_the_token_is_reused_until_near_its_ttl_then_refreshed() -> None:
    clock = FakeClock()
    with FakeImds(tags={}) as fake:
        imds = Imds(base_url=fake.url, env={}, token_ttl=300, monotonic=clock)
        imds.get("latest/meta-data/tags/instance")
        clock.advance(239)  # 61 s left: still good
        imds.get("latest/meta-data/tags/instance")
        clock.advance(1)  # 60 s left: within the refresh margin
        imds.get("latest/meta-data/tags/instance")
    assert [(method, header) for method, _, header in fake.requests] == [
        ("PUT", "300"), ("GET", "token-1"), ("GET", "token-1"), ("PUT", "300"), ("GET", "token-2"),
    ]


def test_a_token_refused_early_is_replaced_once() -> None:
    with FakeImds(tags={"Name": "trainer"}) as fake:
        imds = imds_at(fake)
        assert imds.get("latest/meta-data/tags/instance/Name") == "trainer"
        fake.revoke_tokens()
        assert imds.get("latest/meta-data/tags/instance/Name") == "trainer"
    assert [(method, header) for method, _, header in fake.requests] == [
        ("PUT", "21600"), ("GET", "token-1"), ("GET", "token-1"), ("PUT", "21600"), ("GET", "token-2"),
    ]


def test_imds_down_means_not_on_ec2_after_one_attempt_and_one_log_line() -> None:
    with capture_logs() as logged:
        started = time.monotonic()
        identity = discover(imds_at(f"http://127.0.0.1:{free_port()}/", attempts=1), wait=5.0, hostname="laptop")
        elapsed = time.monotonic() - started
    assert identity is None
    assert elapsed < 2.0  # connection refused answers at once: no retry storm
    assert len(logged) == 1
    assert (logged[0]["event"], logged[0]["host"]) == ("not_on_ec2", "laptop")
    assert logged[0]["reason"].startswith("no IMDSv2 token")


def test_slow_imds_never_holds_startup_past_identity_wait() -> None:
    # Each request may take 5 s by the fetcher's own timeout; the hard deadline is what bounds startup.
    with FakeImds(delay=30.0) as fake, capture_logs() as logged:
        started = time.monotonic()
        identity = discover(imds_at(fake, timeout=5.0), wait=0.3, hostname="gpu-7")
        elapsed = time.monotonic() - started
    assert identity is None
    assert 0.3 <= elapsed < 1.0
    assert logged == [{"event": "not_on_ec2", "log_level": "info", "host": "gpu-7",
                       "reason": "IMDS did not answer within 0.3 s"}]


def test_slow_imds_past_the_request_timeout_is_not_retried_as_v1() -> None:
    with FakeImds(delay=30.0) as fake:
        with pytest.raises(ImdsUnavailable, match="no IMDSv2 token"):
            imds_at(fake, timeout=0.2).get("latest/dynamic/instance-identity/document")
        assert fake.methods() == ["PUT"]  # the token timed out; no GET without one followed


def test_disabled_by_sdk_setting_asks_nothing() -> None:
    with FakeImds() as fake:
        imds = Imds(base_url=fake.url, env={"AWS_EC2_METADATA_DISABLED": "true"})
        with pytest.raises(ImdsUnavailable, match="AWS_EC2_METADATA_DISABLED is true"):
            imds.get("latest/dynamic/instance-identity/document")
    assert fake.requests == []


def test_group_from_imds_tags_needs_no_api_call() -> None:
    with FakeImds(tags={"Name": "trainer", ASG_TAG: "gpu-fleet"}) as fake, capture_logs() as logged:
        lookup = AsgLookup(imds=imds_at(fake), instance_id=IDENTITY.instance_id, ec2=None)
        lookup.run()
    assert (lookup.done.is_set(), lookup.value) == (True, "gpu-fleet")
    assert logged == [{"event": "auto_scaling_group_lookup", "log_level": "info", "group": "gpu-fleet",
                       "source": "imds_tags"}]


def test_instance_tags_in_imds_without_the_group_tag_means_no_group() -> None:
    with FakeImds(tags={"Name": "trainer"}) as fake:
        lookup = AsgLookup(imds=imds_at(fake), instance_id=IDENTITY.instance_id, ec2=None)
        lookup.run()
    assert (lookup.done.is_set(), lookup.value) == (True, None)
    assert [path for _, path, _ in fake.requests if path.startswith("/latest/meta")] == [
        "/latest/meta-data/tags/instance"]


def ec2_with_group(group: str) -> tuple[object, str]:
    """A moto instance tagged as Auto Scaling does it, next to an unrelated tag."""
    ec2 = boto3.client("ec2", region_name="us-east-1")
    instance_id = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.create_tags(Resources=[instance_id], Tags=[{"Key": ASG_TAG, "Value": group}, {"Key": "Team", "Value": "ml"}])
    return ec2, instance_id


def test_group_from_describe_tags_when_imds_serves_no_tags() -> None:
    with mock_aws(), FakeImds(tags=None) as fake:
        ec2, instance_id = ec2_with_group("gpu-fleet")
        lookup = AsgLookup(imds=imds_at(fake), instance_id=instance_id, ec2=ec2)
        lookup.run()
    assert (lookup.done.is_set(), lookup.value) == (True, "gpu-fleet")


def test_describe_tags_failing_is_logged_once_and_retried_with_growing_pauses() -> None:
    class FlakyEc2:
        def __init__(self) -> None:
            self.calls = 0

        def describe_tags(self, **request: object) -> dict[str, object]:
            self.calls += 1
            if self.calls <= 3:
                raise ConnectionError("endpoint unreachable")
            assert request == {"Filters": [{"Name": "resource-id", "Values": [IDENTITY.instance_id]},
                                           {"Name": "key", "Values": [ASG_TAG]}]}
            return {"Tags": [{"Key": ASG_TAG, "Value": "gpu-fleet"}]}

    pauses: list[float] = []
    with FakeImds(tags=None) as fake, capture_logs() as logged:
        lookup = AsgLookup(imds=imds_at(fake), instance_id=IDENTITY.instance_id, ec2=FlakyEc2(),
                           sleep=pauses.append)
        lookup.run()
    assert lookup.value == "gpu-fleet"
    assert pauses == [1.0, 2.0, 4.0]
    assert [entry["event"] for entry in logged] == ["describe_tags_failed", "auto_scaling_group_lookup"]


def test_without_imds_tags_and_describe_tags_off_the_group_stays_unknown() -> None:
    with FakeImds(tags=None) as fake, capture_logs() as logged:
        lookup = AsgLookup(imds=imds_at(fake), instance_id=IDENTITY.instance_id, ec2=None)
        lookup.run()
    assert (lookup.done.is_set(), lookup.value) == (True, None)
    assert logged == [{"event": "auto_scaling_group_unknown", "log_level": "warning",
                       "reason": "tags are not in IMDS and ec2.describe_tags is off"}]


def needing_group(**ec2: object) -> AgentConfig:
    return parse({"append_dimensions": ["InstanceId", "AutoScalingGroupName"], "ec2": ec2})


def test_host_context_region_comes_from_the_sdk_first_then_from_imds() -> None:
    with FakeImds() as fake:
        on_ec2 = HostContext(Ec2Config(), imds=imds_at(fake), sdk_region=lambda: None)
        configured = HostContext(Ec2Config(), imds=imds_at(fake), sdk_region=lambda: "eu-west-1")
    off_ec2 = HostContext(Ec2Config(identity=False), hostname="laptop", sdk_region=lambda: None)
    assert (on_ec2.region(), configured.region(), off_ec2.region()) == ("us-east-1", "eu-west-1", None)


def test_host_context_starts_the_group_lookup_only_when_a_dimension_needs_it() -> None:
    regions: list[str] = []

    def ec2_client(region: str) -> object:
        regions.append(region)
        return None

    with FakeImds(tags={ASG_TAG: "gpu-fleet"}) as fake:
        host = HostContext(Ec2Config(), imds=imds_at(fake), ec2_client_factory=ec2_client,
                           sdk_region=lambda: "eu-west-1")
        assert host.group_lookup(parse({})) is None
        lookup = host.group_lookup(needing_group())
        assert lookup is not None and lookup.done.wait(5)
        assert host.group_lookup(needing_group()) is lookup  # one lookup per process, kept across reloads
    assert lookup.value == "gpu-fleet"
    assert regions == ["us-east-1"]  # DescribeTags goes to the instance's region, not the SDK's


def test_identity_off_asks_imds_nothing() -> None:
    with FakeImds() as fake, capture_logs() as logged:
        host = HostContext(Ec2Config(identity=False), hostname="laptop", imds=imds_at(fake))
    assert host.identity is None
    assert fake.requests == []
    assert logged == [{"event": "not_on_ec2", "log_level": "info", "host": "laptop", "reason": "ec2.identity = false"}]


def test_without_a_region_from_the_sdk_or_imds_the_agent_exits_2_saying_so(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if name not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    config = tmp_path / "agent.toml"
    config.write_text("[gpu]\nenabled = false\n")
    result = subprocess.run([sys.executable, "-m", "agent", "--config", str(config), "--once"],
                            capture_output=True, text=True, timeout=60, check=False,
                            env={**env, "AWS_CONFIG_FILE": "/dev/null"}, cwd=Path(__file__).parent.parent)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 2
    assert [(event["event"], event.get("hint")) for event in events][-2:] == [
        ("not_on_ec2", None), ("no_region", "set AWS_REGION or a profile's region, or run on EC2")]


def test_a_dry_run_on_ec2_publishes_the_identity_group_and_roll_up_exactly() -> None:
    config = parse({"append_dimensions": ["InstanceId", "InstanceType", "AutoScalingGroupName"],
                    "aggregate_dimensions": [["AutoScalingGroupName"]], "aggregate_metrics": ["MemoryUtilization"]})
    memory = MemoryCollector(virtual_memory=lambda: VirtualMemory(total=100, available=40),
                             swap_memory=lambda: SwapMemory(total=0, used=0))
    out = io.StringIO()
    with FakeImds(tags={ASG_TAG: "gpu-fleet"}) as fake:
        host = HostContext(config.ec2, imds=imds_at(fake), ec2_client_factory=lambda region: None,
                           sdk_region=lambda: None)
        assert run_once(config, PrintingClient(out), [memory], sleep=lambda seconds: None, host=host) == 0
    [request] = [json.loads(line) for line in out.getvalue().splitlines()]
    utilization = [(d["Dimensions"], d["Values"], d["Counts"]) for d in request["MetricData"]
                   if d["MetricName"] == "MemoryUtilization"]
    assert utilization == [
        ([{"Name": "AutoScalingGroupName", "Value": "gpu-fleet"}, {"Name": "InstanceId", "Value": IDENTITY.instance_id},
          {"Name": "InstanceType", "Value": "p5.48xlarge"}], [60.0], [2.0]),
        ([{"Name": "AutoScalingGroupName", "Value": "gpu-fleet"}], [60.0], [2.0]),
    ]


def test_aws_region_alone_names_the_region(monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore reads AWS_DEFAULT_REGION only; AWS_REGION is what the CLI v2 and the other SDKs read.
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert sdk_region() == "eu-west-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert sdk_region() == "us-west-2"  # the SDK's own setting wins
