"""Alarm backtest: replay an alarm's definition over the window's data with CloudWatch's evaluation rules.

From "Evaluating an alarm" and "How alarm state is evaluated when data is missing" (CloudWatch User Guide,
AlarmThatSendsEmail.md): at each period CloudWatch retrieves more datapoints than Evaluation Periods (N),
the evaluation range; the documented examples retrieve 5 for N = 3, so the range here is N + 2. Then:
- no datapoint missing, or at least N present: the most recent N present datapoints decide; the missing
  data setting is not used;
- fewer than N present: missing datapoints are filled by the setting, as few as possible, and every real
  datapoint in the range counts. `breaching` / `notBreaching` fill with bad / good datapoints; `missing` and
  `ignore` evaluate the real datapoints alone: M breaching -> ALARM, any good one -> OK, else `ignore`
  keeps the state and `missing` gives INSUFFICIENT_DATA, except that a breaching datapoint at the range's
  oldest edge with no good one gives ALARM (the documented table's sixth row, "X - - - -").
At least M (Datapoints to Alarm) breaching of the N evaluated -> ALARM, otherwise OK. A percentile alarm
set to ignore low sample counts keeps its state while the N evaluated periods hold fewer samples than
10 / (1 − p) ("Percentile-based alarms and low data samples").
tests/test_report_backtest.py checks every row of both documented tables under all four settings.
"""

from __future__ import annotations

import ast
import datetime as dt
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from provisioning.alarms import AlarmDefinition
from report.fetch import Points, Query

OK, ALARM, INSUFFICIENT = "OK", "ALARM", "INSUFFICIENT_DATA"
MISSING, IGNORE, BREACHING, NOT_BREACHING = "missing", "ignore", "breaching", "notBreaching"
RANGE_EXTRA = 2  # evaluation range = N + 2 datapoints, as in the documented examples (5 for N = 3)

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": operator.gt,
    "GreaterThanOrEqualToThreshold": operator.ge,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}


def evaluate(points: list[bool | None], n: int, m: int, treat: str, current: str) -> str:
    """The state after one evaluation of the range `points` (oldest first; True breaching, None missing)."""
    present = [point for point in points if point is not None]
    if len(present) >= n:
        return ALARM if sum(present[-n:]) >= m else OK
    if treat in (BREACHING, NOT_BREACHING):
        evaluated = present + [treat == BREACHING] * (n - len(present))
        return ALARM if sum(evaluated) >= m else OK
    if sum(present) >= m:
        return ALARM
    if not all(present) and present:
        return OK
    if treat == IGNORE:
        return current
    return ALARM if present and points[0] is True else INSUFFICIENT


@dataclass(frozen=True)
class Backtest:
    alarm: str
    period: int
    episodes: tuple[tuple[dt.datetime, dt.datetime], ...]  # time in ALARM
    unsupported: str = ""  # why this alarm could not be replayed

    @property
    def alarms(self) -> int:
        return len(self.episodes)

    @property
    def alarm_seconds(self) -> float:
        return sum((end - start).total_seconds() for start, end in self.episodes)


def lookback(alarm: AlarmDefinition) -> int:
    """Seconds of data before the window the first evaluation needs."""
    return (alarm.evaluation_periods + RANGE_EXTRA) * period_of(alarm)


def period_of(alarm: AlarmDefinition) -> int:
    return alarm.period or max((query.period for query in alarm.queries), default=60)


SAMPLES = "samples"  # the SampleCount query of a percentile alarm that ignores low sample counts


def low_sample_floor(alarm: AlarmDefinition) -> float | None:
    """The fewest samples over the evaluated periods for a percentile alarm set to ignore low sample counts
    (EvaluateLowSampleCountPercentile = ignore): 10 / (1 − p) for p ≥ 0.5, 10 / p below ("Percentile-based
    alarms and low data samples"); None for every other alarm."""
    if alarm.evaluate_low_sample_count_percentile != "ignore" or not alarm.extended_statistic.startswith("p"):
        return None
    share = float(alarm.extended_statistic[1:]) / 100
    return 10 / (1 - share) if share >= 0.5 else 10 / share


def alarm_queries(alarm: AlarmDefinition) -> dict[str, Query]:
    """The metric queries the alarm reads, by the id its expression uses ("" for a single-metric alarm, and
    SAMPLES for the sample counts a low-sample percentile rule needs)."""
    if not alarm.queries:
        stat = alarm.extended_statistic or alarm.statistic
        wanted = {"": Query(alarm.namespace, alarm.metric_name, alarm.dimensions, stat, alarm.period)}
        if low_sample_floor(alarm) is not None:
            wanted[SAMPLES] = Query(alarm.namespace, alarm.metric_name, alarm.dimensions, "SampleCount", alarm.period)
        return wanted
    return {
        query.id: Query(query.namespace, query.metric_name, query.dimensions, query.stat, query.period)
        for query in alarm.queries if not query.expression
    }


def unsupported(alarm: AlarmDefinition) -> str:
    if alarm.comparison not in COMPARISONS:
        return f"comparison {alarm.comparison} (anomaly detection bands) is not replayed"
    returned = [query for query in alarm.queries if query.return_data]
    if alarm.queries and (len(returned) != 1 or not returned[0].expression):
        return "only metric math alarms whose returned query is an expression are replayed"
    if returned:
        try:
            _check(ast.parse(returned[0].expression, mode="eval").body)
        except (SyntaxError, ValueError) as error:
            return f"expression {returned[0].expression!r}: {error}"
    return ""


def values(alarm: AlarmDefinition, fetched: Mapping[str, Points]) -> Points:
    """The alarm's datapoint per period: the metric's, or its expression evaluated period by period."""
    if not alarm.queries:
        return dict(fetched[""])  # SAMPLES, when fetched, is for `replay`
    expression = next(query.expression for query in alarm.queries if query.return_data)
    tree = ast.parse(expression, mode="eval").body
    slots = sorted({slot for points in fetched.values() for slot in points})
    result: Points = {}
    for slot in slots:
        value = _eval(tree, {name: points.get(slot) for name, points in fetched.items()})
        if value is not None:
            result[slot] = value
    return result


def replay(
    alarm: AlarmDefinition, points: Points, start: dt.datetime, end: dt.datetime, samples: Points | None = None
) -> Backtest:
    """Evaluate at the end of every period in [start, end); each ALARM episode from its first evaluation
    to the first evaluation that left ALARM. With `samples` (a percentile alarm ignoring low sample counts),
    an evaluation whose N evaluated periods hold fewer samples than the floor keeps the state."""
    floor = low_sample_floor(alarm) if samples is not None else None
    period = period_of(alarm)
    compare = COMPARISONS[alarm.comparison]
    size = alarm.evaluation_periods + RANGE_EXTRA
    state = INSUFFICIENT
    episodes: list[tuple[dt.datetime, dt.datetime]] = []
    first, last = int(start.timestamp()), int(end.timestamp())
    for slot in range(first - first % period, last - period + 1, period):
        evaluated_at = slot + period  # an evaluation inside the window: its period ended by `end`
        window = [points.get(slot - offset * period) for offset in range(size - 1, -1, -1)]
        breaching = [None if value is None else compare(value, alarm.threshold) for value in window]
        counted = sum((samples or {}).get(slot - offset * period, 0.0) for offset in range(alarm.evaluation_periods))
        if floor is None or counted >= floor:
            state = evaluate(breaching, alarm.evaluation_periods, alarm.datapoints_to_alarm,
                             alarm.treat_missing_data, state)
        if state == ALARM:  # in ALARM from this evaluation until the next one
            until = _time(min(evaluated_at + period, last))
            if episodes and episodes[-1][1] == _time(evaluated_at):
                episodes[-1] = (episodes[-1][0], until)
            elif evaluated_at < last:
                episodes.append((_time(evaluated_at), until))
    return Backtest(alarm.name, period, tuple(episodes))


# --- metric math: the arithmetic, comparisons and IF() the provisioner's alarms use ------------------

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}
_COMPARE: dict[type, Callable[[float, float], bool]] = {
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}


def _check(node: ast.expr) -> None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return
    if isinstance(node, ast.Name):
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left)
        _check(node.right)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        _check(node.operand)
        return
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        _check(node.left)
        _check(node.comparators[0])
        return
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "IF" and len(node.args) == 3:
        for arg in node.args:
            _check(arg)
        return
    raise ValueError(f"{ast.unparse(node)} is beyond the metric math this backtest replays (+ - * /, comparisons, IF)")


def _eval(node: ast.expr, names: Mapping[str, float | None]) -> float | None:
    """One period's value; None (no datapoint) where a metric it reads has none, or on division by zero."""
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, (int, float))  # _check admitted only numbers
        return float(node.value)
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, names)
        return None if operand is None else -operand
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, names), _eval(node.right, names)
        if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
            return None
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        left, right = _eval(node.left, names), _eval(node.comparators[0], names)
        if left is None or right is None:
            return None
        return 1.0 if _COMPARE[type(node.ops[0])](left, right) else 0.0
    assert isinstance(node, ast.Call)
    condition = _eval(node.args[0], names)
    if condition is None:
        return None
    return _eval(node.args[1] if condition else node.args[2], names)


def _time(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
