"""`make mutation`: mutmut on the modules that decide whether data survives, each against its own tests.

Each module runs in a scratch copy of the tree under build/mutation/<module>/ (mutmut writes its mutants/
beside the pyproject it reads, so the work tree is never touched), with a [tool.mutmut] section that
mutates that one file and selects its tests; mutmut then runs, for each mutant, only the selected tests
that cover the mutated function. Results go to docs/quality.md: per module the mutants, killed, survived
and score, and every surviving mutant with its diff line and, if it is equivalent, why.

Scoring: a timeout counts as killed (the tests noticed: they hung); "no tests" counts as survived.
Documented equivalent mutants (.ci/mutation_equivalents.toml, and any that only changes the case of
an SQL string) count as killed. Surviving mutants whose only change lies inside a logging call (log.…,
self._warn.…: event names, context values, which LogOnce key) are excluded from the score, by this
script, and counted separately.

    .venv/bin/python .ci/mutation.py [--jobs 2] [--only agent/spool.py ...] [--report-only]

`--only` runs the modules named; the report keeps every other module's last results (from build/).
`--report-only` runs nothing and rewrites the report, e.g. after documenting an equivalent mutant.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"
REPORT = ROOT / "docs" / "quality.md"
EQUIVALENTS = Path(__file__).resolve().parent / "mutation_equivalents.toml"
MUTMUT = [str(Path(sys.executable).parent / "mutmut")]

# Each module against the test files whose tests call into it (measured with a profiling hook over the
# suite), less the end-to-end ones that only pass through it and cost a minute a run: test_provision_
# agent_metrics.py (a moto server and the whole agent) and test_provision_cli_http.py (the CLI over HTTP).
# test_provision_fleet.py reads systemd/ and the examples, which the scratch copy lacks; its composites
# are planned in test_provision_plan.py.
# mutmut runs, per mutant, only the selected tests that cover the mutated function, fastest first, and
# stops at the first failure. A module, or all of its test files, missing from this checkout is skipped
# and named in the report.
MODULES: dict[str, list[str]] = {
    "agent/aggregate.py": ["tests/test_aggregate.py", "tests/test_publisher.py", "tests/test_statsd_protocol.py"],
    "agent/publisher.py": ["tests/test_publisher.py", "tests/test_replay.py", "tests/test_shutdown.py",
                           "tests/test_strict_cloudwatch.py"],
    "agent/request_bound.py": ["tests/test_request_bound.py", "tests/test_publisher.py"],
    "agent/spool.py": ["tests/test_spool.py", "tests/test_replay.py"],
    "agent/statsd/parser.py": ["tests/test_statsd_parser.py", "tests/test_statsd_protocol.py",
                               "tests/test_statsd_collector.py"],
    "provisioning/plan.py": ["tests/test_provision_plan.py", "tests/test_provision_changes.py",
                             "tests/test_provision_notifications.py", "tests/test_provision_prune.py",
                             "tests/test_provision_summary.py", "tests/test_provision_regions.py",
                             "tests/test_provision_routing.py", "tests/test_responses.py"],
    "agent/cloudwatch_rules.py": ["tests/test_cloudwatch_rules.py", "tests/test_statsd_parser.py",
                                  "tests/test_statsd_protocol.py", "tests/test_config.py",
                                  "tests/test_provision_spec.py", "tests/test_publisher.py",
                                  "tests/test_aggregate.py", "tests/test_strict_cloudwatch.py"],
}
TARGET = 0.90
# The code the scratch copy holds.
PACKAGES = [package for package in ("agent", "provisioning", "report") if (ROOT / package).is_dir()]
KILLED = {"killed", "timeout", "caught by type check", "segfault"}
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}
LOGGERS = {"log", "logger", "_log", "_logger", "_warn"}  # structlog loggers and LogOnce wrappers here
_RESULT = re.compile(r"^\s+(\S+): (.+)$")
_SQL = re.compile(r"\b(SELECT|INSERT|DELETE|UPDATE|PRAGMA|CREATE|ALTER|RETURNING)\b", re.IGNORECASE)
SQL_CASE = "SQLite keywords, identifiers and pragma values are case-insensitive: only the case of the SQL changed"


@dataclass
class Mutant:
    name: str
    status: str
    function: str = ""
    removed: str = ""
    added: str = ""
    log_only: bool = False
    equivalent: str = ""  # the reason, when documented as equivalent


@dataclass
class ModuleResult:
    module: str
    tests: list[str]
    mutants: list[Mutant] = field(default_factory=list)
    seconds: float = 0.0
    missing: str = ""

    @property
    def scored(self) -> list[Mutant]:
        return [mutant for mutant in self.mutants if not mutant.log_only]

    @property
    def killed(self) -> int:
        return sum(1 for mutant in self.scored if mutant.status in KILLED or mutant.equivalent)

    @property
    def survivors(self) -> list[Mutant]:
        return [mutant for mutant in self.scored if mutant.status not in KILLED]

    @property
    def score(self) -> float:
        return self.killed / len(self.scored) if self.scored else 1.0


def function_of(name: str) -> str:
    """`agent.spool.xǁSpoolǁput__mutmut_3` → `Spool.put`; `agent.spool.x_encode__mutmut_2` → `encode`."""
    local = name.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
    if local.startswith("xǁ"):
        return ".".join(local[2:].split("ǁ"))
    return local[2:]


def logging_lines(source: str) -> set[int]:
    """Line numbers inside a logging call's arguments."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LOG_METHODS
                and _receiver(node.func.value) in LOGGERS):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def _receiver(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def function_lines(source: str, function: str) -> range:
    parts = function.split(".")
    nodes: list[ast.stmt] = ast.parse(source).body
    found: ast.stmt | None = None
    for part in parts:
        found = next((node for node in nodes if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                    ast.ClassDef)) and node.name == part), None)
        if found is None:
            return range(0)
        nodes = found.body
    assert found is not None
    return range(found.lineno, (found.end_lineno or found.lineno) + 1)


def classify(mutant: Mutant, diff: str, source_lines: list[str], log_lines: set[int], span: range,
             equivalents: list[dict[str, str]], module: str) -> None:
    removed = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    mutant.removed = " / ".join(line.strip() for line in removed)
    mutant.added = " / ".join(line.strip() for line in added)
    numbers = [number for number in span if any(source_lines[number - 1].strip() == line.strip() for line in removed)]
    mutant.log_only = bool(numbers) and all(number in log_lines for number in numbers)
    case_only = mutant.removed != mutant.added and mutant.removed.lower() == mutant.added.lower()
    if case_only and _SQL.search(mutant.removed):
        mutant.equivalent = SQL_CASE
    for entry in equivalents:
        if (entry["module"], entry["function"], entry["removed"], entry["added"]) == (
                module, mutant.function, mutant.removed, mutant.added):
            mutant.equivalent = entry["reason"]


def workdir(module: str) -> Path:
    return WORK / module.replace("/", "_").removesuffix(".py")


def run_module(module: str, tests: list[str], jobs: int) -> None:
    """Mutate `module` in a fresh scratch copy and run mutmut there; its results stay in that copy."""
    present = [test for test in tests if (ROOT / test).exists()]
    work = workdir(module)
    shutil.rmtree(work, ignore_errors=True)
    if not (ROOT / module).exists() or not present:
        return
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in (*PACKAGES, "tests"):
        shutil.copytree(ROOT / package, work / package, ignore=ignore)
    package = module.split("/", 1)[0]
    (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + f"""
[tool.mutmut]
source_paths = ["{package}/"]
only_mutate = ["{module}"]
also_copy = {[other + "/" for other in PACKAGES if other != package]!r}
pytest_add_cli_args_test_selection = {present!r}
pytest_add_cli_args = ["-p", "no:randomly", "-p", "no:cacheprovider", "-q"]
use_git_change_detection = false
""".replace("'", '"'))
    started = time.monotonic()
    with open(work / "mutmut.log", "w") as output:
        subprocess.run([*MUTMUT, "run", "--max-children", str(jobs)], cwd=work, stdout=output,
                       stderr=subprocess.STDOUT, check=False)
    (work / "run.json").write_text(json.dumps({"tests": present, "seconds": time.monotonic() - started}))


def collect(module: str, tests: list[str], equivalents: list[dict[str, str]]) -> ModuleResult:
    """The results of the module's last run, classified against today's equivalents file."""
    result = ModuleResult(module, tests)
    work = workdir(module)
    if not (ROOT / module).exists():
        result.missing = "module not in this checkout"
        return result
    if not any((ROOT / test).exists() for test in tests):
        result.missing = "none of its tests are in this checkout"
        return result
    if not (work / "run.json").exists():
        result.missing = "not run (`--only " + module + "`)"
        return result
    run = json.loads((work / "run.json").read_text())
    result.tests, result.seconds = run["tests"], run["seconds"]
    listing = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=work, capture_output=True, text=True,
                             check=False).stdout
    source = (ROOT / module).read_text()
    source_lines, log_lines = source.splitlines(), logging_lines(source)
    for line in listing.splitlines():
        match = _RESULT.match(line)
        if match is None:
            continue
        mutant = Mutant(match.group(1), match.group(2), function_of(match.group(1)))
        result.mutants.append(mutant)
        if mutant.status not in KILLED:
            diff = subprocess.run([*MUTMUT, "show", mutant.name], cwd=work, capture_output=True, text=True,
                                  check=False).stdout
            classify(mutant, diff, source_lines, log_lines, function_lines(source, mutant.function),
                     equivalents, module)
    return result


KEPT = "\n# Suite time\n"  # a hand-written section of the same page (the suite's timings), after this report


def kept_sections(path: Path) -> str:
    """What the page holds from the hand-written section on, kept as it is when the report is rewritten."""
    text = path.read_text() if path.exists() else ""
    return text[text.index(KEPT):] if KEPT in text else ""


def report(results: list[ModuleResult], jobs: int) -> str:
    lines = [
        "# Mutation testing",
        "",
        "Written by `make mutation` (.ci/mutation.py, mutmut "
        f"{_mutmut_version()}, {jobs} worker{'s' if jobs != 1 else ''}). Each module is mutated on its own and "
        "run against its tests; mutmut runs, for each mutant, only those of them that cover the mutated "
        "function. Score = (killed + documented equivalent) / mutants, where a timeout counts as killed, "
        "\"no tests\" as survived, and surviving mutants that change only a logging call's arguments (event names, "
        "context values, LogOnce keys) are left out and counted under *log only*: a log line is for the "
        "operator reading it, not data or a decision the agent makes, and the drops and errors logs report "
        "are also counted in self-metrics, which the tests assert. Equivalent mutants are documented, each with "
        "why, in .ci/mutation_equivalents.toml; a mutant that only changes the case of an SQL string counts "
        "as equivalent without an entry (SQLite keywords and identifiers are case-insensitive). Test files: "
        "those whose tests call into the module, less two end-to-end files that only pass through it at a "
        "minute a run (test_provision_agent_metrics.py, test_provision_cli_http.py), and test_provision_fleet.py, "
        "which reads files outside the packages (its composites are planned in test_provision_plan.py). "
        f"Target: ≥ {TARGET:.0%} per module.",
        "",
        "| module | tests | mutants | killed | equivalent | survived | log only | score | time |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        if result.missing:
            lines.append(f"| `{result.module}` | — | — | — | — | — | — | {result.missing} | — |")
            continue
        equivalent = sum(1 for mutant in result.scored if mutant.equivalent)
        lines.append(
            f"| `{result.module}` | {', '.join(Path(test).name for test in result.tests)} | {len(result.scored)} "
            f"| {result.killed - equivalent} | {equivalent} | {len(result.survivors) - equivalent} "
            f"| {len(result.mutants) - len(result.scored)} | {result.score:.1%} | {result.seconds / 60:.1f} min |")
    for result in results:
        survivors = result.survivors
        if not survivors:
            continue
        lines += ["", f"## Surviving mutants: `{result.module}`", ""]
        for mutant in survivors:
            why = f"equivalent: {mutant.equivalent}" if mutant.equivalent else f"**{mutant.status}**, not equivalent"
            lines.append(f"- `{mutant.name.rsplit('.', 1)[1]}` ({mutant.function}): `{mutant.removed}` → "
                         f"`{mutant.added}`: {why}")
    return "\n".join(lines) + "\n"


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (this machine has 2 cores)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="modules to run (default: all); the report keeps the others' last results")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: rewrite the report from the last results (after editing the equivalents)")
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    equivalents = tomllib.loads(EQUIVALENTS.read_text()).get("equivalent", [])
    chosen = [module for module in MODULES if args.only is None or module in args.only]
    for module in [] if args.report_only else chosen:
        print(f"mutating {module} against {', '.join(MODULES[module])}", flush=True)
        run_module(module, MODULES[module], args.jobs)
        result = collect(module, MODULES[module], equivalents)
        print(f"  {result.missing or f'{result.score:.1%} of {len(result.scored)} in {result.seconds:.0f} s'}",
              flush=True)
    results = [collect(module, tests, equivalents) for module, tests in MODULES.items()]
    args.report.write_text(report(results, args.jobs) + kept_sections(args.report))
    print(f"wrote {args.report}")
    return 0 if all(result.missing or result.score >= TARGET for result in results if result.module in chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
