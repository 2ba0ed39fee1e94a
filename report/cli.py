"""`infrawatch-report`: utilization, idle GPU cost, availability and alarm backtests, read from CloudWatch.

Exit codes: 0 the report was written; 1 AWS refused a call; 2 bad input (spec, window, prices file,
namespace, or no data at all), every problem on its own line naming the value.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from agent.logs import LEVELS, configure
from agent.naming import DEFAULT_NAMESPACE, PROFILES
from agent.schema import ConfigError
from provisioning.aws import (
    DEFAULT_RATES,
    UNREACHABLE,
    Caller,
    Clients,
    RateLimiter,
    error_code,
    unreachable_message,
)
from provisioning.spec import Spec, load
from report import iam, prices, render
from report.build import Scope, build
from report.fetch import Reader
from report.hosts import DEFAULT_IDLE_THRESHOLD
from report.window import DEFAULT_SINCE, window

OK, REFUSED, INVALID = 0, 1, 2
# GetMetricData and ListMetrics quotas are far above what one report asks (50 and 25 per second by default).
READ_RATES = {**DEFAULT_RATES, "GetMetricData": 50.0, "ListMetrics": 25.0}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infrawatch-report",
        description="What the fleet used, what it wasted, how available it was: per-host and per-GPU "
        "utilization, idle GPU cost, availability and alarm backtests, read from CloudWatch. "
        "`infrawatch-report print-iam-policy` prints the read-only IAM policy it needs.",
    )
    parser.add_argument("--config", type=Path, help="the provisioner's spec (TOML): namespace, naming, stack")
    parser.add_argument("--namespace", help="without --config: the agents' namespace")
    parser.add_argument("--naming", choices=PROFILES, help="without --config: the agents' naming profile")
    parser.add_argument("--stack", default="", help="without --config: backtest this stack's alarms")
    parser.add_argument("--alarms", default="", metavar="PREFIX",
                        help="backtest only the stack's alarms whose name starts with PREFIX")
    parser.add_argument("--since", default=DEFAULT_SINCE, help='window start: "14d", "12h", "2w" or an ISO time')
    parser.add_argument("--until", help="window end, an ISO time (default: now)")
    parser.add_argument("--period", type=int, help="seconds per datapoint (default: the finest stored)")
    parser.add_argument("--heartbeat-period", type=int, metavar="SECONDS",
                        help="availability slots: at least the agents' publish.interval (they send one Heartbeat "
                        "per interval); default: the spec's heartbeat_missing alarm period, else --period")
    parser.add_argument("--idle-threshold", type=float, default=DEFAULT_IDLE_THRESHOLD, metavar="PERCENT",
                        help="a GPU period is idle when its utilization stays below this (default 5)")
    parser.add_argument("--prices", type=Path, help="CSV of on-demand prices overriding the shipped one")
    parser.add_argument("--format", default="table", choices=tuple(render.FORMATS))
    parser.add_argument("--html", type=Path, metavar="FILE", help="also write a self-contained page of charts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--log-level", default="warning", choices=tuple(LEVELS))
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    clients: Clients | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    sleep: Callable[[float], None] = time.sleep,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["print-iam-policy"]:
        return _print_policy(argv[1:], out, err)
    args = parser().parse_args(argv)
    configure(args.log_level, stream=err)
    try:
        spec = load(args.config) if args.config is not None else None
        scope_parts = _scope(args, spec)
        if args.heartbeat_period is not None and args.heartbeat_period < 1:
            raise ConfigError([f"--heartbeat-period: must be at least 1 second, got {args.heartbeat_period}"])
        beat = args.heartbeat_period or (spec.alarms["heartbeat_missing"].period if spec is not None else None)
        chosen = window(args.since, args.until, now(), args.period, beat)
        table = prices.load(args.prices)
        problems = []
        if not 0 < args.idle_threshold <= 100:
            problems.append(f"--idle-threshold: must be above 0 and at most 100 %, got {args.idle_threshold:g}")
        if args.html is not None:
            from report.html import missing_library

            problems += missing_library()
        if problems:
            raise ConfigError(problems)
    except ConfigError as error:
        return _invalid(error, err)
    caller = Caller(clients if clients is not None else Clients(), RateLimiter(READ_RATES, sleep=sleep), sleep=sleep)
    progress = None if args.no_progress or not err.isatty() else _bar(err)
    reader = Reader(caller, progress)
    namespace, naming, stack = scope_parts
    scope = Scope(namespace, naming, stack, args.idle_threshold, caller.clients["cloudwatch"].meta.region_name,
                  args.alarms)
    try:
        report = build(scope, chosen, table, reader, spec)
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
    finally:
        if progress is not None:
            err.write("\n")
    out.write(render.FORMATS[args.format](report))
    if args.html is not None:
        from report.html import page

        args.html.write_text(page(report))
        print(f"wrote {args.html.resolve()}", file=err)
    return OK


def _print_policy(argv: list[str], out: TextIO, err: TextIO) -> int:
    """`print-iam-policy [--stack NAME | --config SPEC]`: alarm reads limited to that stack's alarms."""
    options = argparse.ArgumentParser(prog="infrawatch-report print-iam-policy")
    options.add_argument("--stack", default="")
    options.add_argument("--config", type=Path)
    args = options.parse_args(argv)
    try:
        stack = load(args.config).stack if args.config is not None else args.stack
    except ConfigError as error:
        return _invalid(error, err)
    out.write(iam.render(stack))
    return OK


def _scope(args: argparse.Namespace, spec: Spec | None) -> tuple[str, str, str]:
    if spec is not None:
        given = [flag for flag, value in (("--namespace", args.namespace), ("--naming", args.naming),
                                          ("--stack", args.stack)) if value]
        if given:
            raise ConfigError([f"{', '.join(given)}: the spec names these; give either --config or them"])
        return spec.metric_namespace, spec.naming, spec.stack
    naming = args.naming or "native"
    return args.namespace or DEFAULT_NAMESPACE[naming], naming, args.stack


def _bar(err: TextIO) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        filled = int(30 * done / total) if total else 30
        err.write(f"\rGetMetricData [{'#' * filled}{'.' * (30 - filled)}] {done:,}/{total:,} queries")
        err.flush()

    return show


def _invalid(error: ConfigError, err: TextIO) -> int:
    for problem in error.problems:
        print(problem, file=err)
    return INVALID
