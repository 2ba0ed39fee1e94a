"""Following a rollout: agents publish AgentVersion when asked, and `provision-alarms --fleet-status` lists the
spec's hosts by version and names the silent ones."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from agent.cli import build_agent
from agent.commandline import version
from agent.config import parse
from agent.fleet import DimensionPlan
from agent.selfstats import AgentStats
from tests.fakes.aws import Provisioner

HOSTS = ["i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c", "i-0000000000000000d"]
SPEC = 'stack = "ml"\n[[hosts]]\ninstance_ids = [' + ", ".join(f'"{host}"' for host in HOSTS) + "]\n"


@pytest.fixture
def provisioner(tmp_path: Path) -> Iterator[Provisioner]:
    with mock_aws():
        yield Provisioner(tmp_path)


def publish(provisioner: Provisioner, name: str, host: str, **dims: str) -> None:
    # Sorted by name, as the agent sends them (moto, unlike CloudWatch, matches dimensions in order).
    pairs = sorted({"InstanceId": host, "Component": "agent", **dims}.items())
    dimensions = [{"Name": key, "Value": value} for key, value in pairs]
    provisioner.client("cloudwatch").put_metric_data(Namespace="InfraWatch", MetricData=[{
        "MetricName": name, "Dimensions": dimensions, "Value": 1.0, "Unit": "Count",
        "Timestamp": dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=2)}])


def test_fleet_status_lists_hosts_by_version_and_names_the_silent_ones(provisioner: Provisioner) -> None:
    publish(provisioner, "AgentVersion", HOSTS[0], Version="0.2.0")
    publish(provisioner, "AgentVersion", HOSTS[1], Version="0.1.0")
    publish(provisioner, "AgentVersion", HOSTS[2], Version="0.2.0")
    for host in HOSTS[:2] + HOSTS[3:]:  # c is silent; d runs an agent without version_series
        publish(provisioner, "Heartbeat", host)
    run = provisioner.run(SPEC, "--fleet-status")
    assert (run.code, run.err) == (1, "")
    assert run.lines == [
        f"infrawatch 0.1.0: 1 host: {HOSTS[1]}",
        f"infrawatch 0.2.0: 2 hosts: {HOSTS[0]}, {HOSTS[2]}",
        f"no AgentVersion series (version_series is off there, or its agent predates it): 1 host: {HOSTS[3]}",
        f"no heartbeat in the last 15 minutes: 1 host: {HOSTS[2]}",
    ]
    assert provisioner.recorder.writes == {}


def test_fleet_status_exits_0_when_every_host_beats(provisioner: Provisioner) -> None:
    for host in HOSTS:
        publish(provisioner, "Heartbeat", host)
    run = provisioner.run(SPEC, "--fleet-status")
    assert (run.code, run.lines[-1]) == (0, "no heartbeat in the last 15 minutes: 0 hosts")


@pytest.mark.parametrize("enabled", [True, False])
def test_agent_version_is_published_only_when_asked(enabled: bool) -> None:
    config = parse({"version_series": enabled})
    sent: list[object] = []
    agent, _ = build_agent(config, object(), AgentStats(), [], DimensionPlan(identity=None, hostname="h"),  # type: ignore[arg-type]
                           submit=sent.extend)
    agent.flush()
    versions = [datum for datum in sent if datum.name == "AgentVersion"]  # type: ignore[attr-defined]
    if not enabled:
        assert versions == []
        return
    (datum,) = versions
    assert (dict(datum.dimensions)["Version"], datum.values, datum.unit) == (version(), (1.0,), "Count")  # type: ignore[attr-defined]
