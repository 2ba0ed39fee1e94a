"""The Prometheus endpoint: names from the catalogue, a consistent snapshot, both exposition formats, the
address rules, reload, and the real tools: promtool on a scrape, a Prometheus server that scrapes the agent."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from agent.catalogue import CATALOGUE, COUNT, COUNT_PER_SECOND, METRICS, MILLISECONDS, NONE
from agent.cli import build_agent, replace_endpoint
from agent.collectors.gpu import GpuCollector
from agent.config import parse
from agent.fake_nvml import healthy_h100
from agent.fleet import DimensionPlan
from agent.nvml import Nvml
from agent.prometheus import Endpoint, EndpointError, Snapshot, address_problem, exposition, snake_case
from agent.samples import Sample, dimensions
from agent.selfstats import AgentStats
from agent.statsd.collector import StatsdCollector
from tests.conftest import free_port, tool
from tests.fakes.host import FakeClock

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def scrape(port: int, accept: str = "") -> tuple[str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


@pytest.fixture
def snapshot() -> Snapshot:
    return Snapshot(stale_after=30.0, monotonic=FakeClock())


@pytest.fixture
def endpoint(snapshot: Snapshot) -> Iterator[Endpoint]:
    served = Endpoint(f"127.0.0.1:{free_port()}", snapshot)
    yield served
    served.close()


def test_names_follow_prometheus_conventions_from_the_catalogue() -> None:
    names = {metric.name: exposition(metric.name, metric.unit) for metric in CATALOGUE}
    assert names["GPUUtilization"].name == "infrawatch_gpu_utilization_percent"
    assert names["CPUIOWait"].name == "infrawatch_cpu_io_wait_percent"
    assert names["GPUMemoryUsed"].name == "infrawatch_gpu_memory_used_bytes"
    assert (names["GPUSMClock"].name, names["GPUSMClock"].scale) == ("infrawatch_gpu_sm_clock_hertz", 1e6)
    assert names["GPUTemperature"].name == "infrawatch_gpu_temperature_celsius"
    assert names["GPUPowerDraw"].name == "infrawatch_gpu_power_draw_watts"
    assert (names["GPUEnergyConsumed"].name, names["GPUEnergyConsumed"].kind) == (
        "infrawatch_gpu_energy_consumed_joules", "counter")
    assert (names["PublishLatency"].name, names["PublishLatency"].scale) == (
        "infrawatch_publish_latency_seconds", 0.001)
    assert (names["CollectorErrors"].name, names["CollectorErrors"].kind) == ("infrawatch_collector_errors", "counter")
    assert names["GPUPCIeReplays"].name == "infrawatch_gpu_pcie_replays"
    assert names["GPUNVLinkErrors"].name == "infrawatch_gpu_nvlink_errors"
    assert names["GPUCount"].name == "infrawatch_gpus"  # `_count` is a summary's
    assert names["Heartbeat"] is None  # Prometheus's own `up` says the same
    exposed = [e.name for e in names.values() if e is not None]
    assert len(exposed) == len(set(exposed)) == len(CATALOGUE) - 1
    assert snake_case("MountPath") == "mount_path" and snake_case("GPUUUID") == "gpu_uuid"


def test_statsd_series_are_named_by_kind() -> None:
    assert exposition("SamplesProcessed", COUNT)[:3] == ("infrawatch_job_samples_processed", "counter", 1.0)
    assert exposition("ShardBytesRead", "Bytes")[:2] == ("infrawatch_job_shard_bytes_read_bytes", "counter")
    assert exposition("SamplesProcessedPerSecond", COUNT_PER_SECOND) is None  # rate() does it
    assert exposition("StepTime", MILLISECONDS)[:3] == ("infrawatch_job_step_time_seconds", "summary", 0.001)
    assert exposition("QueueDepth", NONE)[:2] == ("infrawatch_job_queue_depth", "gauge")


def test_snapshot_semantics() -> None:
    clock = FakeClock()
    snapshot = Snapshot(stale_after=30.0, monotonic=clock)
    gpu = METRICS["GPUUtilization"]
    xid = METRICS["GPUXidErrors"]
    snapshot.update([gpu.sample(70, GPU="0"), xid.sample(1, GPU="0"), Sample("StepTime", 250.0, MILLISECONDS),
                     Sample("StepTime", 750.0, MILLISECONDS)])
    clock.advance(10)
    snapshot.update([gpu.sample(75, GPU="0"), xid.sample(2, GPU="0"), Sample("StepTime", 500.0, MILLISECONDS)])
    values = {(s.exposed.name, s.labels): (s.value, s.count, s.total) for s in snapshot.series()}
    assert values == {
        ("infrawatch_gpu_utilization_percent", (("gpu", "0"),)): (75.0, 0.0, 0.0),
        ("infrawatch_gpu_xid_errors", (("gpu", "0"),)): (3.0, 0.0, 0.0),
        ("infrawatch_job_step_time_seconds", ()): (0.0, 3.0, 1.5),
    }
    clock.advance(30.5)  # the GPU stopped answering: its gauge goes, the counters stay
    assert sorted(s.exposed.name for s in snapshot.series()) == [
        "infrawatch_gpu_xid_errors", "infrawatch_job_step_time_seconds"]


def test_series_not_updated_for_an_hour_are_forgotten_whatever_their_kind() -> None:
    clock = FakeClock()
    snapshot = Snapshot(stale_after=30.0, forget_after=3600.0, monotonic=clock)
    snapshot.update([Sample("Requests", 5.0, COUNT, dimensions(route="/a")), Sample("StepTime", 1.0, MILLISECONDS)])
    clock.advance(3000)
    snapshot.update([Sample("StepTime", 2.0, MILLISECONDS)])
    clock.advance(601)  # the counter was last updated 3,601 s ago, the summary 601 s ago
    snapshot.update([Sample("StepTime", 3.0, MILLISECONDS)])
    assert [(s.exposed.name, s.count) for s in snapshot.series()] == [("infrawatch_job_step_time_seconds", 3.0)]


def test_text_format_and_openmetrics_by_content_negotiation(snapshot: Snapshot, endpoint: Endpoint) -> None:
    snapshot.update([METRICS["GPUUtilization"].sample(70, GPU="0"), METRICS["GPUXidErrors"].sample(2, GPU="0"),
                     Sample("StepTime", 500.0, MILLISECONDS, dimensions(model="bert"))])
    content_type, text = scrape(endpoint.port)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    lines = [line for line in text.splitlines() if not line.startswith("# HELP")]
    assert lines == [
        "# TYPE infrawatch_gpu_utilization_percent gauge",
        'infrawatch_gpu_utilization_percent{gpu="0"} 70.0',
        "# TYPE infrawatch_gpu_xid_errors_total counter",
        'infrawatch_gpu_xid_errors_total{gpu="0"} 2.0',
        "# TYPE infrawatch_job_step_time_seconds summary",
        'infrawatch_job_step_time_seconds_count{model="bert"} 1.0',
        'infrawatch_job_step_time_seconds_sum{model="bert"} 0.5',
    ]
    content_type, text = scrape(endpoint.port, accept="application/openmetrics-text")
    assert content_type == OPENMETRICS
    assert "# TYPE infrawatch_gpu_xid_errors counter" in text.splitlines()
    assert text.splitlines()[-1] == "# EOF"


def test_a_scrape_never_sees_half_a_batch(snapshot: Snapshot, endpoint: Endpoint) -> None:
    """Every batch sets GPU 0 and GPU 1 to the same value: a scrape must always see them equal."""
    done = threading.Event()

    def writer() -> None:
        value = 0
        while not done.is_set():
            value += 1
            snapshot.update([METRICS["GPUUtilization"].sample(value, GPU=str(gpu)) for gpu in range(2)])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(50):
            _, text = scrape(endpoint.port)
            values = [line.split()[-1] for line in text.splitlines() if line.startswith("infrawatch_gpu_util")]
            assert len(values) == 2 and values[0] == values[1]
    finally:
        done.set()
        thread.join()


def test_address_rules() -> None:
    assert address_problem("127.0.0.1:9400", False) is None
    assert address_problem("[::1]:9400", False) is None
    assert address_problem("localhost:9400", False) is None
    assert address_problem("0.0.0.0:9400", False) == (
        "listens beyond loopback: set prometheus.allow_remote = true to allow it")
    assert address_problem("0.0.0.0:9400", True) is None
    assert address_problem("node.local:9400", True) == "host must be an IP address or localhost"
    assert address_problem("127.0.0.1:80", False, can_bind_privileged=lambda: False) == (
        "port 80 is privileged: the agent lacks CAP_NET_BIND_SERVICE; use a port of 1024 or more")
    assert address_problem("127.0.0.1:80", False, can_bind_privileged=lambda: True) is None
    assert address_problem("127.0.0.1", False) == 'must be "host:port"'


def test_config_names_the_key_for_a_remote_address() -> None:
    from agent.schema import ConfigError

    with pytest.raises(ConfigError) as error:
        parse({"prometheus": {"enabled": True, "address": "10.0.0.5:9400"}})
    assert error.value.problems == [
        'prometheus.address: listens beyond loopback: set prometheus.allow_remote = true to allow it, '
        'got "10.0.0.5:9400"'
    ]
    assert parse({"prometheus": {"address": "10.0.0.5:9400"}}).prometheus.enabled is False  # off: not checked


def test_a_port_in_use_is_refused_at_start_and_a_reload_keeps_the_running_endpoint(snapshot: Snapshot) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(EndpointError) as error:
            replace_endpoint(None, parse({"prometheus": {"enabled": True, "address": busy}}), snapshot)
        assert str(error.value) == f'prometheus.address: {busy} is in use, got "{busy}"'

        free = f"127.0.0.1:{free_port()}"
        running = replace_endpoint(None, parse({"prometheus": {"enabled": True, "address": free}}), snapshot)
        assert running is not None
        kept = replace_endpoint(running, parse({"prometheus": {"enabled": True, "address": busy}}), snapshot)
        assert kept is running
        assert scrape(running.port)[0].startswith("text/plain")
    off = replace_endpoint(running, parse({}), snapshot)
    assert off is None
    with pytest.raises(OSError):
        scrape(running.port)


@pytest.fixture
def gpus() -> Iterator[GpuCollector]:
    collector = GpuCollector(Nvml(healthy_h100(8)))
    yield collector
    collector.close()  # else its Xid thread outlives the test (test_gpu checks that none is left)


def agent_with_gpus(snapshot: Snapshot, statsd: StatsdCollector, gpus: GpuCollector, enabled: bool = True) -> object:
    stats = AgentStats()
    config = parse({"prometheus": {"enabled": enabled}})
    collectors = [gpus, statsd]
    agent, _ = build_agent(config, _NoClient(), stats, collectors, DimensionPlan(identity=None, hostname="gpu-host"),
                           submit=lambda datums: None, snapshot=snapshot)
    return agent


class _NoClient:
    def put_metric_data(self, **request: object) -> None:
        raise AssertionError("nothing is published in these tests")


def test_promtool_accepts_a_scrape_with_gpus_and_statsd(snapshot: Snapshot, endpoint: Endpoint,
                                                        gpus: GpuCollector) -> None:
    promtool = tool("promtool")
    statsd = StatsdCollector(dimension_keys=("model",))
    statsd.receive(b"SamplesProcessed:128|c|#model:bert\nStepTime:412.5|ms\nQueueDepth:7|g")
    agent = agent_with_gpus(snapshot, statsd, gpus)
    agent.collect()  # type: ignore[attr-defined]
    agent.collect()  # type: ignore[attr-defined]
    agent.stats.add_collector_error("gpu")  # type: ignore[attr-defined]
    agent.flush()  # type: ignore[attr-defined]  # the self-metrics
    _, text = scrape(endpoint.port)
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    assert 'infrawatch_gpu_utilization_percent{gpu="7"} 77.0' in text.splitlines()
    assert 'infrawatch_collector_errors_total{collector="gpu",component="agent"} 1.0' in text.splitlines()
    assert 'infrawatch_job_samples_processed_total{model="bert"} 128.0' in text.splitlines()


def test_a_real_prometheus_server_scrapes_the_agent(tmp_path: Path, snapshot: Snapshot, endpoint: Endpoint,
                                                    gpus: GpuCollector) -> None:
    prometheus = tool("prometheus")
    agent = agent_with_gpus(snapshot, StatsdCollector(), gpus)
    agent.collect()  # type: ignore[attr-defined]
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        # 200 ms: two scrapes within half a second of the first (Prometheus takes durations in ms; with no
        # scrape_timeout set, the default 10 s is cut to the interval).
        "global:\n  scrape_interval: 200ms\n  evaluation_interval: 200ms\n"
        "scrape_configs:\n  - job_name: infrawatch\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{endpoint.port}']\n"
    )
    server = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )

    def query(expression: str) -> list[dict[str, object]]:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)["data"]["result"]  # type: ignore[no-any-return]

    try:
        deadline = time.monotonic() + 60
        scrapes: list[dict[str, object]] = []
        # Polls the server's API. Most of the wait (about 5 s) is Prometheus' scrape manager, which applies the
        # configured targets on a fixed 5 s ticker (scrape/manager.go, reloader) before the first scrape.
        while time.monotonic() < deadline:
            try:
                scrapes = query('count_over_time(up{job="infrawatch"}[1m])')
            except OSError:
                scrapes = []
            if scrapes and float(scrapes[0]["value"][1]) >= 2:  # type: ignore[index]
                break
            time.sleep(0.1)
        assert scrapes and float(scrapes[0]["value"][1]) >= 2, "Prometheus did not scrape twice in 60 s"
        assert [float(r["value"][1]) for r in query('up{job="infrawatch"}')] == [1.0]  # type: ignore[index]
        gpu0 = query('infrawatch_gpu_utilization_percent{gpu="0"}')
        assert [float(r["value"][1]) for r in gpu0] == [70.0]  # type: ignore[index]  # h100(0).utilization
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_startup_with_the_port_in_use_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    from agent.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        config = tmp_path / "agent.toml"
        config.write_text(f'[ec2]\nidentity = false\n[statsd]\nenabled = false\n[gpu]\nenabled = false\n'
                          f'[prometheus]\nenabled = true\naddress = "{busy}"\n')
        try:
            assert main(["--dry-run", "--config", str(config)]) == 2
        finally:
            structlog.reset_defaults()  # main() pointed the loggers at this test's captured stderr (--dry-run)
    assert capsys.readouterr().err.splitlines()[-1] == f'prometheus.address: {busy} is in use, got "{busy}"'


def test_the_agent_process_serves_its_readings_and_closes_the_port_on_sigterm(tmp_path: Path) -> None:
    import signal
    import sys

    port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(f'[ec2]\nidentity = false\n[statsd]\nenabled = false\n[spool]\nenabled = false\n'
                      f'[collect]\ninterval = 1\n[prometheus]\nenabled = true\naddress = "127.0.0.1:{port}"\n')
    agent = subprocess.Popen([sys.executable, "-m", "agent", "--dry-run", "--fake-gpus", "2", "--config", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, text = time.monotonic() + 30, ""
        while time.monotonic() < deadline and "infrawatch_gpu_utilization_percent" not in text:
            try:
                text = scrape(port)[1]
            except OSError:
                time.sleep(0.2)  # the process is still starting
        gpus = [line for line in text.splitlines() if line.startswith("infrawatch_gpus ")]
        assert gpus == ["infrawatch_gpus 2.0"]
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        with pytest.raises(OSError):
            scrape(port)
    finally:
        if agent.poll() is None:
            agent.kill()


def test_the_snapshot_holds_nothing_while_the_endpoint_is_off(snapshot: Snapshot, gpus: GpuCollector) -> None:
    """Nobody scrapes it: a copy of every series' latest reading would only cost memory (StatsD floods)."""
    statsd = StatsdCollector()
    statsd.receive(b"SamplesProcessed:128|c")
    agent = agent_with_gpus(snapshot, statsd, gpus, enabled=False)
    agent.collect()  # type: ignore[attr-defined]
    assert snapshot.series() == []
