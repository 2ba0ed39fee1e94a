"""`--prune` that an on-call team can trust: firing alarms and live hosts are kept; mass deletion is refused."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from tests.fakes.aws import Provisioner, an_image

SPEC = """
stack = "ml"
[[hosts]]
instance_ids = [{hosts}]
"""
HOST_KEYS = ("cpu_high", "heartbeat_missing", "memory_high", "storage_high@/")


@pytest.fixture
def provisioner(tmp_path: Path) -> Iterator[Provisioner]:
    with mock_aws():
        yield Provisioner(tmp_path)


def launch(provisioner: Provisioner, count: int) -> list[str]:
    ec2 = provisioner.client("ec2")
    image = an_image(ec2)
    instances = ec2.run_instances(ImageId=image, MinCount=count, MaxCount=count)["Instances"]
    return sorted(instance["InstanceId"] for instance in instances)


def spec(*hosts: str) -> str:
    return SPEC.format(hosts=", ".join(f'"{host}"' for host in hosts))


def alarm_names(provisioner: Provisioner) -> set[str]:
    pages = provisioner.client("cloudwatch").get_paginator("describe_alarms").paginate()
    return {alarm["AlarmName"] for page in pages for alarm in page["MetricAlarms"]}


def test_prune_keeps_a_firing_alarm_and_every_alarm_of_a_host_ec2_still_has(provisioner: Provisioner) -> None:
    down, up = launch(provisioner, 2)
    assert provisioner.run(spec(down, up), "--yes").code == 0
    heartbeat = f"ml/host/{down}/heartbeat_missing"
    provisioner.client("ec2").stop_instances(InstanceIds=[down])
    provisioner.client("cloudwatch").set_alarm_state(AlarmName=heartbeat, StateValue="ALARM",
                                                     StateReason="3 of 3 heartbeats missing")

    run = provisioner.run(spec(up), "--yes", "--prune")  # the stopped host left the spec (or discovery)
    assert run.code == 0
    assert provisioner.recorder.writes == Counter({"PutDashboard": 1})  # the fleet dashboard loses its row
    stopped = f"host {down} is stopped in EC2, not terminated: --prune keeps its alarms"
    assert sorted(line for line in run.lines if line.startswith("!")) == [
        f"! keep alarm ml/host/{down}/cpu_high ({stopped})",
        f"! keep alarm {heartbeat} (in ALARM: --prune never deletes a firing alarm; {stopped})",
        f"! keep alarm ml/host/{down}/memory_high ({stopped})",
        f"! keep alarm ml/host/{down}/storage_high@/ ({stopped})",
    ]
    assert "Plan: 0 to create, 1 to update, 0 to delete, 7 unchanged, 4 kept." in run.lines
    assert run.lines[-2:] == [
        "applied ~ update dashboard ml-us-east-1-fleet (DashboardBody)",
        "Applied 1 changes; 0 failed.",
    ]

    provisioner.client("ec2").terminate_instances(InstanceIds=[down])
    run = provisioner.run(spec(up), "--yes", "--prune", "--allow-mass-delete")
    assert run.code == 0
    assert provisioner.recorder.writes == Counter({"DeleteAlarms": 1})
    assert f"! keep alarm {heartbeat} (in ALARM: --prune never deletes a firing alarm)" in run.lines
    assert alarm_names(provisioner) == {heartbeat, *(f"ml/host/{up}/{key}" for key in HOST_KEYS)}


def test_discovery_that_finds_nothing_refuses_to_prune_even_on_a_dry_run(provisioner: Provisioner) -> None:
    host = "i-0000000000000000a"  # EC2 has forgotten it: only the refusal protects its alarms
    provisioner.client("cloudwatch").put_metric_data(Namespace="InfraWatch", MetricData=[{
        "MetricName": "Heartbeat", "Value": 1.0,
        "Dimensions": [{"Name": "Component", "Value": "agent"}, {"Name": "InstanceId", "Value": host}],
    }])
    discover = 'stack = "ml"\n[[hosts]]\ndiscover = true\n'
    assert provisioner.run(discover, "--yes").code == 0
    typo = 'namespace = "InfraWatchh"\n' + discover

    for args in (("--dry-run",), ("--yes",)):
        run = provisioner.run(typo, "--prune", *args)
        assert (run.code, provisioner.recorder.writes) == (1, Counter())
        assert run.lines[-5:] == [
            "Plan: 0 to create, 0 to update, 5 to delete, 3 unchanged.",  # 4 alarms, the fleet dashboard
            "Apply: 5 writes, about 1 s at 3 alarm writes per second.",
            "Cost of the stack: 0 alarms over 0 metrics and 0 dashboards, about $0.00/month (us-east-1 list prices, "
            "2026-12; an account's first 3 dashboards and 10 alarm metrics are free).",
            "Refused: the plan deletes 4 of this stack's 4 alarms, more than 20 %; pass --allow-mass-delete if that "
            "is intended.",
            "Refused: hosts[0] (discover = true) found no hosts, so the plan deletes every alarm of that group; "
            "pass --allow-mass-delete if that is intended.",
        ]
    assert len(alarm_names(provisioner)) == 4
    kept = provisioner.run(typo, "--dry-run")  # without --prune nothing is deleted, so nothing is refused
    # The 4 alarms; the dashboard the spec no longer names is looked for (ListDashboards) only with --prune.
    assert (kept.code, kept.lines[-3]) == (0, "Plan: 0 to create, 0 to update, 0 to delete, 3 unchanged, 4 kept.")
