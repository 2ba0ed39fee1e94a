"""The [statsd] config section: defaults, and one exact line per invalid key."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from agent.config import StatsdConfig, parse
from agent.schema import ConfigError


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse(data)
    return error.value.problems


def test_defaults() -> None:
    assert parse({}).statsd == StatsdConfig(
        enabled=True,
        address="127.0.0.1:8125",
        dimension_keys=(),
        max_series=1000,
        byte_counters=("*Bytes*", "*bytes*"),
        expire_after=300.0,
        flush_interval=10,
    )


def test_valid_settings() -> None:
    config = parse({"statsd": {
        "enabled": False, "address": "[::1]:9125", "dimension_keys": ["model", "rank"], "max_series": 50,
        "byte_counters": [], "expire_after": 60, "flush_interval": 60,
    }})
    assert config.statsd == StatsdConfig(False, "[::1]:9125", ("model", "rank"), 50, (), 60.0, 60)


def test_every_divisor_of_a_minute_and_nothing_else_is_a_valid_flush_interval() -> None:
    valid = []
    for seconds in range(1, 61):
        with contextlib.suppress(ConfigError):
            valid.append(parse({"statsd": {"flush_interval": seconds}}).statsd.flush_interval)
    assert valid == [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60]


@pytest.mark.parametrize(
    ("statsd", "problem"),
    [
        ({"address": "localhost"}, 'statsd.address: must be "host:port", got "localhost"'),
        ({"address": ":8125"}, 'statsd.address: must be "host:port", got ":8125"'),
        ({"address": "0.0.0.0:0"}, 'statsd.address: port must be 1..65535, got "0.0.0.0:0"'),
        ({"address": "host:http"}, 'statsd.address: port must be 1..65535, got "host:http"'),
        ({"address": "::1:8125"},
         'statsd.address: must put an IPv6 host in brackets, as "[::1]:8125", got "::1:8125"'),
        ({"address": "[::1:8125"}, 'statsd.address: must be "[ipv6]:port" for an IPv6 host, got "[::1:8125"'),
        ({"dimension_keys": ["InstanceId"]},
         'statsd.dimension_keys: "InstanceId" is set by the agent, got ["InstanceId"]'),
        # Under naming = "cwagent" the host's own series carry "host": a tag must not set it on a job's series.
        ({"dimension_keys": ["model", "host"]},
         'statsd.dimension_keys: "host" is set by the agent, got ["model", "host"]'),
        ({"dimension_keys": ["Host"]}, 'statsd.dimension_keys: "Host" is set by the agent, got ["Host"]'),
        ({"dimension_keys": ["ok", "not ok"]},
         'statsd.dimension_keys: "not ok" must be 1..255 of A-Z a-z 0-9 _ . - /, got ["ok", "not ok"]'),
        ({"max_series": 0}, "statsd.max_series: must be 1..10000, got 0"),
        # 100,000 live series reached 384 MB RSS, past the unit's MemoryMax=256M.
        ({"max_series": 100_000}, "statsd.max_series: must be 1..10000, got 100000"),
        ({"expire_after": 5}, "statsd.expire_after: must be 10..86400 seconds, got 5"),
        # A 7 s window would straddle two minutes: its counter total could not go to one minute's Sum.
        ({"flush_interval": 7}, "statsd.flush_interval: must divide a minute (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, "
                                "30 or 60) so that no flush window straddles two minutes, got 7"),
        ({"flush_interval": 0}, "statsd.flush_interval: must be 1..60 seconds, got 0"),
        ({"flush_interval": 120}, "statsd.flush_interval: must be 1..60 seconds, got 120"),
        ({"flush_interval": 10.0}, "statsd.flush_interval: must be an integer, got 10.0"),
        ({"byte_counters": "*Bytes"}, 'statsd.byte_counters: must be a list of strings, got "*Bytes"'),
        ({"max_seires": 10}, 'statsd.max_seires: unknown key, did you mean "max_series"?'),
    ],
)
def test_invalid_settings_name_the_key_and_what_is_allowed(statsd: dict[str, Any], problem: str) -> None:
    assert problems({"statsd": statsd}) == [problem]


def test_dimension_keys_cannot_shadow_static_dimensions() -> None:
    assert problems({"dimensions": {"Team": "ml"}, "statsd": {"dimension_keys": ["Team", "model"]}}) == [
        'statsd.dimension_keys: Team already set by the static dimensions, got ["Team", "model"]'
    ]
