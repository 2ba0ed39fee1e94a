"""Host scope vs fleet scope for 10, 100 and 1,000 hosts × 8 GPUs: alarms, first-run time, monthly cost.

Each figure comes from the provisioner's own plan for an empty account (`desired_stack`, `Planner`), no AWS
call: host scope is a `[[hosts]]` group of N instance ids, fleet scope a `[[fleets]]` group with `hosts = N`
and its paging composites. The first run's wall time is the plan's writes paced at CloudWatch's default
quotas (3 PutMetricAlarm per second, 10 PutDashboard per second), as `provision-alarms` paces them; the
cost is `provisioning.summary.monthly_cost` at the dated list prices it states, dashboards left out.

    .venv/bin/python bench/fleet_scale.py [--hosts 10 100 1000]
"""

from __future__ import annotations

import argparse
import time

from agent.schema import tomllib  # tomli on Python 3.10
from provisioning.aws import DEFAULT_RATES, Account
from provisioning.discovery import Host, Inventory
from provisioning.plan import Planner
from provisioning.spec import parse
from provisioning.stack import desired_stack
from provisioning.state import ActualStack
from provisioning.summary import PRICES_AS_OF, apply_seconds, monthly_cost

ACCOUNT = Account("123456789012", "us-east-1", "aws")
GPUS = 8


def spec(scope: str, hosts: int) -> str:
    if scope == "host":
        return 'stack = "bench"\n'  # the hosts come as the inventory Discovery makes of their instance ids
    return (f'stack = "bench"\n[[fleets]]\nname = "training"\nhosts = {hosts}\ngpus = {GPUS}\n'
            "[fleets.paging]\nenabled = true\n")


def instances(hosts: int) -> list[str]:
    return [f"i-{index:017x}" for index in range(hosts)]


def measure(scope: str, hosts: int) -> dict[str, float]:
    started = time.perf_counter()
    # What Discovery makes of a [[hosts]] group of instance ids (it reads nothing from AWS for them).
    inventory = Inventory(tuple(
        Host(instance, (), tuple(str(index) for index in range(GPUS)), ("/",))
        for instance in (instances(hosts) if scope == "host" else [])
    ), ())
    desired = desired_stack(parse(tomllib.loads(spec(scope, hosts))), ACCOUNT, inventory)
    plan = Planner(desired, ActualStack({}, {}, {}, None), prune=False).plan()
    planned = time.perf_counter() - started
    return {
        "alarms": len(desired.alarms) + len(desired.composites),
        "writes": plan.writes,
        "seconds": apply_seconds(plan, DEFAULT_RATES),
        "cost": monthly_cost(desired.alarms, 0, desired.series, len(desired.composites)),
        "planned": planned,
    }


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args()
    print(f"## provision-alarms: host scope vs fleet scope ({GPUS} GPUs per host)\n")
    print("The first run's wall time at CloudWatch's default quotas (3 alarm writes per second); the monthly "
          f"alarm cost at {PRICES_AS_OF} ($0.10 per alarm metric, a Metrics Insights alarm per metric its query "
          "analyzes, $0.50 per composite alarm). Fleet scope: one Metrics Insights alarm per kind plus the two "
          "composite paging alarms; its dead-host heartbeat stays per host (see docs/fleet-alarms.md).\n")
    print("| Hosts | Host scope: alarms | first run | $/month | Fleet scope: alarms | first run | $/month |")
    print("|---|---|---|---|---|---|---|")
    for hosts in args.hosts:
        host, fleet = measure("host", hosts), measure("fleet", hosts)
        print(f"| {hosts:,} | {host['alarms']:,.0f} | {duration(host['seconds'])} | ${host['cost']:,.2f} | "
              f"{fleet['alarms']:,.0f} | {duration(fleet['seconds'])} | ${fleet['cost']:,.2f} |")


if __name__ == "__main__":
    main()
