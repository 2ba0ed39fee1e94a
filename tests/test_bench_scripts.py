"""Every bench script still imports against the current code (a renamed function must not break make bench)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", sorted(path.name for path in BENCH.glob("*.py")))
def test_bench_script_imports_and_has_a_main(script: str) -> None:
    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", BENCH / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    assert callable(module.main)


def _load(script: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", BENCH / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_prometheus_bench_measures_whole_minutes_and_names_where_the_cpu_goes() -> None:
    """A 30 s window held one flush or none (the flush is a fifth of the agent's CPU there); the breakdown
    runs the agent's own parts in process and names each."""
    bench = _load("prometheus_scrape.py")
    assert [bench.measured_seconds(s) for s in (15, 30, 60, 61, 150)] == [60, 60, 60, 120, 180]
    parts = bench.components(1)  # no moto server given: the dry-run sink
    assert sorted(parts) == sorted([
        bench.OPENMETRICS, bench.GZIP, bench.ASIDE, bench.DRY_RUN_SINK, bench.GPU_SWEEP, "host collectors",
        bench.STATSD_DRAIN,
        "StatsD parsing (1,000 lines)", "Prometheus snapshot update", "naming and aggregation",
        "flush: draining the minute's datums",
        bench.PACKING,
    ])
    assert min(parts.values()) > 0


def test_the_prometheus_bench_sends_to_its_own_moto_server_and_times_the_send() -> None:
    """The default sink is production's: every request goes over HTTP to moto, and the send is its own part."""
    bench = _load("prometheus_scrape.py")
    moto = bench.MotoServer()
    try:
        parts = bench.components(1, moto)
        client = moto.client()
        sent = [client.list_metrics(Namespace="InfraWatch", MetricName=name)["Metrics"]  # filtered: moto lists slowly
                for name in ("bench.series0", "GPUCount")]
    finally:
        moto.close()
    assert bench.SEND in parts and bench.DRY_RUN_SINK not in parts
    assert parts[bench.SEND] > 0
    host = [{"Name": "Host", "Value": "bench"}]
    assert sent == [[{"Namespace": "InfraWatch", "MetricName": name, "Dimensions": host}]
                    for name in ("bench.series0", "GPUCount")]
