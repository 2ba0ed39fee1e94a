"""One stack applied in two regions of one account: dashboards are global, so each region keeps its own."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.fakes.aws import Provisioner

SPEC = """
stack = "ml"
[[hosts]]
instance_ids = ["{host}"]
"""
EAST, WEST = "i-0000000000000000a", "i-0000000000000000b"


def test_the_same_stack_in_two_regions_never_rewrites_or_prunes_the_others_dashboards(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)  # one server: one account-global set of dashboards
    east = Provisioner(tmp_path, region="us-east-1")
    west = Provisioner(tmp_path, region="eu-west-1")
    assert east.run(SPEC.format(host=EAST), "--yes").code == 0
    east_body = east.client("cloudwatch").get_dashboard(DashboardName="ml-us-east-1-fleet")["DashboardBody"]

    run = west.run(SPEC.format(host=WEST), "--yes", "--prune")
    assert run.code == 0
    assert "+ create dashboard ml-eu-west-1-fleet" in run.lines
    assert [line for line in run.lines if "us-east-1-" in line] == []  # no plan line names east's dashboards
    assert west.recorder.writes["PutDashboard"] == 1
    assert west.recorder.writes["DeleteDashboards"] == 0

    listed = east.client("cloudwatch").list_dashboards()["DashboardEntries"]
    assert sorted(entry["DashboardName"] for entry in listed) == ["ml-eu-west-1-fleet", "ml-us-east-1-fleet"]
    east.recorder.clear()
    assert east.client("cloudwatch").get_dashboard(DashboardName="ml-us-east-1-fleet")["DashboardBody"] == east_body
    rerun = east.run(SPEC.format(host=EAST), "--yes", "--prune")
    assert (rerun.code, east.recorder.writes) == (0, Counter())
    assert "Plan: 0 to create, 0 to update, 0 to delete, 8 unchanged." in rerun.lines
