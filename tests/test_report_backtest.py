"""CloudWatch's alarm evaluation, row by row against the documented examples.

Source: CloudWatch User Guide, "How alarm state is evaluated when data is missing" (AlarmThatSendsEmail.md):
two tables, Datapoints to Alarm / Evaluation Periods 3 of 3 and 2 of 3, five datapoints retrieved (oldest
first), the state under each treat-missing-data setting. "0" good, "X" breaching, "-" missing;
"retain" is "Retain current state".
"""

from __future__ import annotations

import datetime as dt

import pytest

from provisioning.alarms import AlarmDefinition
from report.backtest import (
    ALARM,
    BREACHING,
    IGNORE,
    INSUFFICIENT,
    MISSING,
    NOT_BREACHING,
    OK,
    evaluate,
    replay,
    unsupported,
    values,
)

RETAIN = "retain"
# (M, N, datapoints, MISSING, IGNORE, BREACHING, NOT BREACHING)
DOCUMENTED = [
    (3, 3, "0 - X - X", OK, OK, OK, OK),
    (3, 3, "0 - - - -", OK, OK, OK, OK),
    (3, 3, "- - - - -", INSUFFICIENT, RETAIN, ALARM, OK),
    (3, 3, "0 X X - X", ALARM, ALARM, ALARM, ALARM),
    (3, 3, "- - - - X", INSUFFICIENT, RETAIN, ALARM, OK),
    (3, 3, "X - - - -", ALARM, RETAIN, ALARM, OK),
    (2, 3, "0 - X - X", ALARM, ALARM, ALARM, ALARM),
    (2, 3, "0 0 X 0 X", ALARM, ALARM, ALARM, ALARM),
    (2, 3, "0 - X - -", OK, OK, ALARM, OK),
    (2, 3, "- - - - 0", OK, OK, ALARM, OK),
    (2, 3, "- - - - X", INSUFFICIENT, RETAIN, ALARM, OK),
]
SYMBOLS = {"0": False, "X": True, "-": None}


@pytest.mark.parametrize(("m", "n", "points", *(f"as_{t}" for t in ("missing", "ignore", "breaching", "nb"))),
                         DOCUMENTED)
@pytest.mark.parametrize("current", [OK, ALARM, INSUFFICIENT])
def test_the_documented_missing_data_examples(m: int, n: int, points: str, as_missing: str, as_ignore: str,
                                              as_breaching: str, as_nb: str, current: str) -> None:
    parsed = [SYMBOLS[symbol] for symbol in points.split()]
    expected = {MISSING: as_missing, IGNORE: as_ignore, BREACHING: as_breaching, NOT_BREACHING: as_nb}
    for treat, state in expected.items():
        assert evaluate(parsed, n, m, treat, current) == (current if state == RETAIN else state), treat


START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def alarm(**overrides: object) -> AlarmDefinition:
    fields: dict[str, object] = dict(
        name="s/a", description="", comparison="GreaterThanThreshold", threshold=10.0, evaluation_periods=3,
        datapoints_to_alarm=2, treat_missing_data="missing", namespace="N", metric_name="M", statistic="Average",
        period=60,
    )
    fields.update(overrides)
    return AlarmDefinition(**fields)  # type: ignore[arg-type]


def at(minute: int) -> int:
    return int(START.timestamp()) + 60 * minute


def test_replay_counts_episodes_and_their_length() -> None:
    # 2 of 3 above 10: breaching minutes 3, 4 (ALARM from minute 4's evaluation, at 5) and 10 alone (no ALARM).
    points = {at(minute): 20.0 if minute in (3, 4, 10) else 0.0 for minute in range(20)}
    result = replay(alarm(), points, START, START + dt.timedelta(minutes=20))
    assert result.episodes == ((START + dt.timedelta(minutes=5), START + dt.timedelta(minutes=7)),)
    assert (result.alarms, result.alarm_seconds) == (1, 120)


def test_metric_math_is_evaluated_period_by_period_and_a_missing_input_is_a_missing_point() -> None:
    from provisioning.alarms import ERROR_RATE_EXPRESSION, MetricQuery

    # The provisioner's error-rate alarm: IF(invocations > 0, (errors5xx + modelerrors) / invocations, 0).
    queries = (MetricQuery("invocations", return_data=False), MetricQuery("errors5xx", return_data=False),
               MetricQuery("modelerrors", return_data=False), MetricQuery("rate", expression=ERROR_RATE_EXPRESSION))
    definition = alarm(queries=queries, namespace="", metric_name="", statistic="", period=0)
    assert unsupported(definition) == ""
    fetched = {"invocations": {1: 100.0, 2: 0.0, 3: 50.0}, "errors5xx": {1: 3.0, 2: 0.0, 3: 1.0},
               "modelerrors": {1: 2.0, 2: 0.0}}
    assert values(definition, fetched) == {1: 0.05, 2: 0.0}


def test_what_cannot_be_replayed_is_said() -> None:
    assert unsupported(alarm(comparison="LessThanLowerOrGreaterThanUpperThreshold")) == (
        "comparison LessThanLowerOrGreaterThanUpperThreshold (anomaly detection bands) is not replayed")
    from provisioning.alarms import MetricQuery

    odd = alarm(queries=(MetricQuery("m", return_data=False), MetricQuery("e", expression="RATE(m)")))
    assert unsupported(odd) == ("expression 'RATE(m)': RATE(m) is beyond the metric math this backtest replays "
                                "(+ - * /, comparisons, IF)")


def test_a_percentile_alarm_ignoring_low_sample_counts_keeps_its_state_while_samples_are_few() -> None:
    from report.backtest import low_sample_floor

    p99 = alarm(statistic="", extended_statistic="p99", evaluate_low_sample_count_percentile="ignore",
                datapoints_to_alarm=3, evaluation_periods=3)
    assert round(low_sample_floor(p99) or 0) == 1000 and round(low_sample_floor(alarm(
        statistic="", extended_statistic="p10", evaluate_low_sample_count_percentile="ignore")) or 0) == 100
    assert low_sample_floor(alarm(statistic="", extended_statistic="p99")) is None  # "evaluate", the default
    points = {at(minute): 20.0 for minute in range(10)}
    few = {at(minute): 300.0 for minute in range(10)}  # 900 samples over 3 periods: below 1,000
    many = {at(minute): 400.0 for minute in range(10)}
    end = START + dt.timedelta(minutes=10)
    assert replay(p99, points, START, end, few).alarms == 0
    assert replay(p99, points, START, end, many).episodes == ((START + dt.timedelta(minutes=3), end),)
