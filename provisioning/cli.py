"""`provision-alarms`: read the spec, plan against what exists, print the plan, apply it.

Exit codes: 0 success or nothing to do; 1 AWS refused something (what was applied is listed), or a
resource with one of this stack's names is not this stack's, or the plan deletes suspiciously many alarms
without `--allow-mass-delete` (nothing written, the plan says why); 2 the spec is invalid, or names something
that does not exist, or fails CloudWatch's limits (every problem listed; nothing written).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import structlog
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from agent.commandline import CommandParser
from agent.logs import LEVELS, configure
from agent.schema import ConfigError, convert
from provisioning import export, validate
from provisioning.alarms import instance_counts
from provisioning.apply import Applier
from provisioning.aws import (
    ALARM_WRITES,
    DEFAULT_RATES,
    UNREACHABLE,
    Account,
    Caller,
    Clients,
    RateLimiter,
    error_code,
    unreachable_message,
)
from provisioning.discovery import Discovery, instance_states
from provisioning.fleet import account_quota_problems
from provisioning.fleet_status import fleet_status
from provisioning.notifications import preflight_problems, send_test_notifications
from provisioning.plan import (
    CONFLICT,
    CREATE,
    DELETE,
    MAX_PRUNE_SHARE,
    UPDATE,
    Planner,
    mass_deletion,
    pruned_hosts,
    stale,
)
from provisioning.responses import policy_problems, recovery_check
from provisioning.spec import Apply, load
from provisioning.stack import desired_stack
from provisioning.state import StateReader
from provisioning.summary import detailed_lines, footer

log = structlog.get_logger()

OK, REFUSED, INVALID = 0, 1, 2
LARGE_PLAN_WRITES = 1000  # past this, --yes alone does not apply: a mistaken spec would take an hour to undo

Confirm = Callable[[str], bool]


def _ask(question: str) -> bool:
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


EPILOG = """\
examples:
  provision-alarms --config alarms.toml --dry-run   print the plan; change nothing
  provision-alarms --config alarms.toml             print the plan, ask, then apply it
  provision-alarms --config alarms.toml --yes       apply without asking (CI, scripts)
  provision-alarms --config alarms.toml --test-notification

exit codes:
  0  done, or nothing to do
  1  AWS refused something (what was applied is listed), or a resource with one of this stack's names
     is not this stack's
  2  the spec is invalid, names something that does not exist, or breaks CloudWatch's limits (every
     problem listed; nothing written); or the command line is wrong"""


def parser() -> CommandParser:
    parser = CommandParser(
        prog="provision-alarms",
        description="Create and keep up to date the CloudWatch alarms, dashboards, SNS topics and EventBridge "
        "rule that watch\ninfrawatch hosts and SageMaker endpoints, from one declarative spec (TOML). Every run "
        "compares the spec\nwith what exists and changes only the difference.",
        epilog=EPILOG,
        example="provision-alarms --config provisioning/examples/alarms.toml --dry-run",
    )
    parser.add_argument("--config", required=True, type=Path, metavar="PATH", help="the spec file (TOML)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; make no write call")
    parser.add_argument(
        "--prune", action="store_true", help="delete this stack's resources the spec no longer wants"
    )
    parser.add_argument(
        "--allow-mass-delete", action="store_true",
        help=f"let --prune delete more than {MAX_PRUNE_SHARE * 100:g} %% of the stack's alarms, or a whole host "
        "group's alarms when it found no hosts",
    )
    parser.add_argument("--yes", action="store_true", help="apply without asking")
    parser.add_argument(
        "--large-plan-ok", action="store_true",
        help=f"with --yes, also apply a plan of more than {LARGE_PLAN_WRITES:,} writes without asking",
    )
    parser.add_argument(
        "--detail", action="store_true",
        help="under each alarm of the plan, what it watches: metric, statistic, threshold, M of N × period",
    )
    parser.add_argument(
        "--test-notification", action="store_true",
        help="publish a test message to each topic; change nothing",
    )
    parser.add_argument(
        "--fleet-status", action="store_true",
        help="list the spec's hosts by infrawatch version and those without a heartbeat for 15 minutes (exit 1 if "
        "any); change nothing",
    )
    parser.add_argument(
        "--alarm-writes-per-second", type=float, metavar="RATE",
        help="override apply.alarm_writes_per_second (PutMetricAlarm and DeleteAlarms calls per second)",
    )
    parser.add_argument(
        "--export", choices=("cloudformation",),
        help="print the desired state as a CloudFormation template (JSON) instead of applying it; read AWS "
        "only to find hosts and endpoints. Deploy it with CloudFormation or StackSets, never beside a direct apply "
        "of the same stack",
    )
    parser.add_argument("--log-level", default="warning", choices=tuple(LEVELS), help="lowest log level written")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    clients: Clients | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    confirm: Confirm | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    args = parser().parse_args(argv)
    configure(args.log_level, stream=err)

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        spec = load(args.config)
    except ConfigError as error:
        return _invalid(error, err)
    rate = spec.apply.alarm_writes_per_second
    if args.alarm_writes_per_second is not None:
        # The flag overrides the spec key, so it is checked by the spec key's own declaration.
        declared = next(field for field in dataclasses.fields(Apply) if field.name == "alarm_writes_per_second")
        rate, problem = convert(
            "--alarm-writes-per-second", args.alarm_writes_per_second, float, declared.metadata
        )
        if problem:
            print(problem, file=err)
            return INVALID
    rates = {**DEFAULT_RATES, **dict.fromkeys(ALARM_WRITES, rate)}
    limiter = RateLimiter(rates, clock=clock, sleep=sleep)
    caller = Caller(clients if clients is not None else Clients(), limiter, sleep=sleep)
    try:
        if args.export:
            template = export.template(spec, Discovery(spec, caller).inventory(), caller)
            print(json.dumps(template, indent=1, sort_keys=True), file=out)
            return OK
        if args.fleet_status:
            inventory = Discovery(spec, caller).inventory()
            lines, healthy = fleet_status(spec, inventory.hosts, caller, dt.datetime.now(dt.timezone.utc))
            for line in lines:
                say(line)
            return OK if healthy else REFUSED
        # The stack's alarms first: their pages are read anyway, and they carry the account (in their ARNs) and
        # the SageMaker instance types' counts (in their labels), so a rerun asks neither STS nor EC2.
        reader = StateReader(spec.stack, caller)
        described = reader.described()
        account = Account.lookup(caller, next((alarm.arn for found in described for alarm in found.values()), ""))
        known = instance_counts(alarm.definition for alarm in described[0].values() if alarm.owned(spec.stack))
        inventory = Discovery(spec, caller, known).inventory()
        desired = desired_stack(spec, account, inventory, caller)
        problems = preflight_problems(spec, desired.topics, caller)
        problems += validate.problems(desired.alarms, desired.dashboards)
        recovery, unchecked = recovery_check(spec, inventory.hosts, caller)
        problems += recovery
        problems += policy_problems(desired.responses.replace)
        if problems:
            raise ConfigError(problems)
        if args.test_notification:
            for line in send_test_notifications(spec, desired.topics, caller):
                say(line)
            return OK
        actual = reader.read(
            account, described, dashboards=[dashboard.name for dashboard in desired.dashboards],
            subscribed=[topic.name for topic in desired.topics.values() if topic.subscriptions],
            responses=desired.responses.replace is not None, prune=args.prune,
        )
        actual = reader.with_tags(actual, stale(desired, actual))
        states = instance_states(caller, pruned_hosts(desired, actual)) if args.prune else {}
        plan = Planner(desired, actual, prune=args.prune, instance_states=states).plan()
        if any(change.action == CREATE and change.name in desired.series for change in plan.changes):
            # Only a new Metrics Insights alarm can pass the Region's quota: a rerun does not read every alarm.
            problems = account_quota_problems(
                caller, account.region, desired.series,
                [change.name for change in plan.changes if change.action == DELETE and change.kind == "alarm"],
            )
            if problems:
                raise ConfigError(problems)
        # Only an alarm being written can be fixed by this run: an unchanged one was warned about when written.
        written = {change.name for change in plan.changes
                   if change.kind == "alarm" and change.action in (CREATE, UPDATE)}
        now = datetime.fromtimestamp(wall_clock(), tz=timezone.utc)
        for warning in [*inventory.warnings, *unchecked, *validate.series_without_data(
                [alarm for alarm in desired.alarms if alarm.name in written], caller, now)]:
            print(f"warning: {warning}", file=err)
    except ConfigError as error:
        return _invalid(error, err)
    except (NoRegionError, NoCredentialsError) as error:
        print(f"AWS configuration: {error}", file=err)
        return INVALID
    except UNREACHABLE as error:
        print(unreachable_message(error, caller.clients["cloudwatch"]), file=err)
        return REFUSED
    except (ClientError, BotoCoreError) as error:
        print(f"AWS refused a call: {error_code(error)}: {error}", file=err)
        return REFUSED

    for line in desired.responses.lines():
        say(line)
    for line in detailed_lines(plan, desired.alarms) if args.detail else plan.lines():
        say(line)
    for note in desired.notes:
        say(f"note: {note}")
    for line in footer(plan, desired.alarms, len(desired.dashboards), rates, desired.series, len(desired.composites)):
        say(line)
    suspicious = [] if args.allow_mass_delete else mass_deletion(plan, actual, spec.stack, inventory.empty_groups)
    if suspicious:
        for reason in suspicious:
            say(f"Refused: {reason}; pass --allow-mass-delete if that is intended.")
        return REFUSED
    conflicts = plan.count(CONFLICT)
    if args.dry_run or not plan.writes:
        return REFUSED if conflicts else OK
    large = plan.writes > LARGE_PLAN_WRITES and not args.large_plan_ok
    if not args.yes or large:
        asker = confirm if confirm is not None else (_ask if sys.stdin.isatty() else None)
        if asker is None:
            reason = (f"the plan has {plan.writes:,} writes, more than {LARGE_PLAN_WRITES:,}: pass --large-plan-ok "
                      "with --yes to apply it" if large else "pass --yes to apply the plan")
            print(f"stdin is not a terminal: {reason}", file=err)
            return INVALID
        if not asker(f"Apply {plan.writes} writes?"):
            say("Nothing applied.")
            return OK
    outcome = Applier(caller, say).apply(plan)
    say(f"Applied {len(outcome.applied)} changes; {len(outcome.failed)} failed.")
    if outcome.unsupported:
        say(f"{len(outcome.unsupported)} composite alarms not created: the endpoint does not implement "
            "PutCompositeAlarm, so their fleets' alarms notify nothing here.")
    if conflicts:
        say(f"{conflicts} resources with this stack's names are not this stack's and were left alone.")
    return OK if outcome.ok and not conflicts else REFUSED


def _invalid(error: ConfigError, err: TextIO) -> int:
    for problem in error.problems:
        print(problem, file=err)
    return INVALID
