"""Dashboards: the same spec gives the same bytes, and a large fleet splits instead of breaking a limit."""

from __future__ import annotations

import json

from provisioning.alarms import AlarmBuilder
from provisioning.aws import Account
from provisioning.dashboards import DashboardBuilder, DashboardDefinition, is_owned
from provisioning.discovery import Host, Inventory, Variant
from provisioning.notifications import actions, desired_topics
from provisioning.spec import parse
from provisioning.validate import dashboard_problems

ACCOUNT = Account(id="123456789012", region="us-east-1", partition="aws")
SPEC = parse({"stack": "ml"})


def hosts(count: int, gpus: int) -> list[Host]:
    return [Host(f"i-{index:017x}", (), tuple(str(gpu) for gpu in range(gpus)), ("/", "/data"))
            for index in range(count)]


def build(inventory: Inventory) -> list[DashboardDefinition]:
    alarms = AlarmBuilder(SPEC, actions(SPEC, desired_topics(SPEC, ACCOUNT, ""))).build(inventory)
    return DashboardBuilder(SPEC, ACCOUNT, alarms).build(inventory)


def widget_count(dashboard: DashboardDefinition) -> int:
    return len(json.loads(dashboard.body)["widgets"])


def metric_count(dashboard: DashboardDefinition) -> int:
    widgets = json.loads(dashboard.body)["widgets"]
    return sum(len(widget["properties"].get("metrics", [])) for widget in widgets)


def test_the_same_inventory_gives_the_same_bytes() -> None:
    inventory = Inventory(tuple(hosts(3, 8)), (Variant("ranker", "AllTraffic", "ml.g5.12xlarge", 48, 4),))
    first, second = build(inventory), build(inventory)
    assert first == second
    assert [dashboard.name for dashboard in first] == ["ml-us-east-1-fleet", "ml-us-east-1-endpoint-ranker"]
    assert all(is_owned(dashboard.body, "ml", "us-east-1") and not is_owned(dashboard.body, "m", "us-east-1")
               and not is_owned(dashboard.body, "ml", "eu-west-1") for dashboard in first)


def test_the_widget_limit_splits_the_fleet() -> None:
    # Each 8-GPU host takes a row of 7 widgets under the 1 header: 71 hosts fill 498 of 500 widgets.
    at_limit = build(Inventory(tuple(hosts(71, 8)), ()))
    assert [(d.name, widget_count(d)) for d in at_limit] == [("ml-us-east-1-fleet", 498)]
    past = build(Inventory(tuple(hosts(72, 8)), ()))
    assert [(d.name, widget_count(d)) for d in past] == [("ml-us-east-1-fleet", 498), ("ml-us-east-1-fleet-2", 8)]
    assert [dashboard_problems(d) for d in past] == [[], []]


def test_the_metric_limit_splits_the_fleet() -> None:
    # A 64-GPU host's row has 139 metrics: 17 hosts fit 2,500 (2,363), 18 would not (2,502).
    at_limit = build(Inventory(tuple(hosts(17, 64)), ()))
    assert [(d.name, metric_count(d)) for d in at_limit] == [("ml-us-east-1-fleet", 2363)]
    past = build(Inventory(tuple(hosts(18, 64)), ()))
    assert [(d.name, metric_count(d)) for d in past] == [("ml-us-east-1-fleet", 2363), ("ml-us-east-1-fleet-2", 139)]


def test_alarm_status_widgets_hold_at_most_100_alarms() -> None:
    [fleet] = build(Inventory(tuple(hosts(1, 64)), ()))
    status = [widget for widget in json.loads(fleet.body)["widgets"] if widget["type"] == "alarm"]
    # 6 host alarms (2 mounts), 5 per GPU × 64 GPUs.
    assert [len(widget["properties"]["alarms"]) for widget in status] == [100, 100, 100, 26]
    assert dashboard_problems(fleet) == []


def test_widgets_fill_the_24_column_grid_row_by_row() -> None:
    [fleet] = build(Inventory(tuple(hosts(1, 1)), ()))
    widgets = json.loads(fleet.body)["widgets"]
    assert [(w["x"], w["y"], w["width"], w["height"]) for w in widgets] == [
        (0, 0, 24, 2),
        (0, 2, 8, 6), (8, 2, 8, 6), (16, 2, 8, 6),
        (0, 8, 8, 6), (8, 8, 8, 6), (16, 8, 8, 6),
        (0, 14, 8, 6),
    ]
