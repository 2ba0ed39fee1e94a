"""The GPU collector and the NVML wrapper against the fake NVML's named scenarios, with exact values."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest
from structlog.testing import capture_logs

from agent.catalogue import CATALOGUE, METRICS
from agent.collectors.gpu import GpuCollector, build_gpu_collector
from agent.config import GpuConfig, parse
from agent.fake_nvml import (
    GIB,
    PCIE_THROUGHPUT_WINDOW_S,
    FakeNvml,
    a10g_partial,
    before_r560_h100,
    driver_not_loaded,
    gpu_lost_midrun,
    h100,
    healthy_h100,
    mig_enabled,
    no_library,
    xid_79,
)
from agent.nvml import Field, GpuLost, Memory, Nvml, NvmlError, NvmlUnavailable, Utilization
from agent.samples import Sample
from agent.schema import ConfigError
from tests.fakes.host import FakeClock

XID_WAIT_MS = 20  # keeps close() at about 20 ms; the fake's settle() makes event delivery deterministic
XID_THREAD = "gpu-xid-events"
COUNTERS = {"GPUEnergyConsumed", "GPUECCUncorrectableErrors", "GPUPCIeReplays", "GPUPCIeRxBytesPerSecond",
            "GPUPCIeTxBytesPerSecond", "GPUNVLinkErrors"}
NO_LIBRARY = "the NVML library libnvidia-ml.so.1 was not found (is the NVIDIA driver installed?)"

MakeCollector = Callable[..., GpuCollector]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_collector(clock: FakeClock) -> Iterator[MakeCollector]:
    """Collectors on the fake, each closed at the end so no Xid thread outlives its test."""
    made: list[GpuCollector] = []

    def make(fake: FakeNvml, **options: Any) -> GpuCollector:
        collector = GpuCollector(Nvml(fake), monotonic=clock, xid_wait_ms=XID_WAIT_MS, **options)
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.close()


def per_gpu(samples: list[Sample], gpu: int) -> dict[str, float]:
    return {s.name: s.value for s in samples if dict(s.dimensions).get("GPU") == str(gpu)}


def per_host(samples: list[Sample]) -> dict[str, float]:
    return {s.name: s.value for s in samples if not s.dimensions}


def h100_expected(i: int) -> dict[str, float]:
    """fake_nvml.h100(i) after a 10 s interval: hand-computed from its readings."""
    return {
        "GPUUtilization": 70 + i,
        "GPUMemoryControllerUtilization": 40 + i,
        "GPUMemoryUtilization": (10 + i) / 80 * 100,
        "GPUMemoryUsed": (10 + i) * GIB,
        "GPUMemoryTotal": 80 * GIB,
        "GPUTemperature": 45 + i,
        "GPUMemoryTemperature": 55 + i,
        "GPUPowerDraw": 350 + 10 * i,
        "GPUPowerLimit": 700,
        "GPUPowerUtilization": (350 + 10 * i) / 700 * 100,
        "GPUEnergyConsumed": (350 + 10 * i) * 10,  # W × 10 s = J
        "GPUSMClock": 1980,
        "GPUThrottleThermal": 0,
        "GPUThrottlePowerCap": 0,
        "GPUThrottleHardwareSlowdown": 0,
        "GPUECCUncorrectableErrors": 0,
        "GPUPCIeReplays": 0,
        "GPURemappedRowsPending": 0,
        "GPURemappedRowsFailed": 0,
        "GPUPCIeRxBytesPerSecond": 2_000_000_000,
        "GPUPCIeTxBytesPerSecond": 1_000_000_000,
        "GPUNVLinkErrors": 0,
        "GPUHealthy": 1,
        "GPUXidErrors": 0,
    }


def without(expected: dict[str, float], names: set[str]) -> dict[str, float]:
    return {name: value for name, value in expected.items() if name not in names}


def xid_thread() -> threading.Thread:
    (thread,) = [t for t in threading.enumerate() if t.name == XID_THREAD]
    return thread


# --- Healthy H100 host ------------------------------------------------------------------------------


def test_healthy_h100_first_sweep_primes_counters(clock: FakeClock, make_collector: MakeCollector) -> None:
    samples = make_collector(healthy_h100(8, clock=clock)).collect()
    for i in range(8):
        assert per_gpu(samples, i) == pytest.approx(without(h100_expected(i), COUNTERS))
    assert per_host(samples) == pytest.approx({"GPUCount": 8, "HostGPUUtilization": 73.5,
                                               "HostGPUMemoryUtilization": 16.875})
    assert len(samples) == 8 * 18 + 3


def test_healthy_h100_second_sweep_publishes_every_field(clock: FakeClock, make_collector: MakeCollector) -> None:
    collector = make_collector(healthy_h100(8, clock=clock))
    collector.collect()
    clock.advance(10)
    samples = collector.collect()
    for i in range(8):
        assert per_gpu(samples, i) == pytest.approx(h100_expected(i))
    assert per_host(samples) == pytest.approx({"GPUCount": 8, "HostGPUUtilization": 73.5,
                                               "HostGPUMemoryUtilization": 16.875})
    assert len(samples) == len({(s.name, s.dimensions) for s in samples}) == 8 * 24 + 3


def test_dimensions_are_the_index_unless_uuid_and_name_are_configured(
    clock: FakeClock, make_collector: MakeCollector
) -> None:
    plain = make_collector(healthy_h100(2, clock=clock)).collect()
    assert {s.dimensions for s in plain if s.dimensions} == {(("GPU", "0"),), (("GPU", "1"),)}
    named = make_collector(healthy_h100(2, clock=clock), uuid_dimension=True, name_dimension=True).collect()
    assert {s.dimensions for s in named if s.dimensions} == {
        (("GPU", "0"), ("GPUName", "NVIDIA H100 80GB HBM3"), ("GPUUUID", "GPU-8f3b0000-6c1e-4a7d-9b25-0d4e1f2a3c5b")),
        (("GPU", "1"), ("GPUName", "NVIDIA H100 80GB HBM3"), ("GPUUUID", "GPU-8f3b0001-6c1e-4a7d-9b25-0d4e1f2a3c5b")),
    }


# --- Absent is not zero -----------------------------------------------------------------------------


def test_a10g_unsupported_fields_publish_no_series_and_are_logged_once(
    clock: FakeClock, make_collector: MakeCollector
) -> None:
    sleeps: list[float] = []
    collector = make_collector(a10g_partial(clock=clock, sleep=sleeps.append))
    with capture_logs() as logs:
        first = collector.collect()
        assert collector.wait_pcie_throughput(5.0)
        clock.advance(10)
        second = collector.collect()
    expected = {
        "GPUUtilization": 30, "GPUMemoryControllerUtilization": 20, "GPUMemoryUtilization": 25.0,
        "GPUMemoryUsed": 6 * GIB, "GPUMemoryTotal": 24 * GIB, "GPUTemperature": 40, "GPUPowerDraw": 150,
        "GPUPowerLimit": 300,
        "GPUPowerUtilization": 50.0, "GPUEnergyConsumed": 1500, "GPUSMClock": 1710, "GPUThrottleThermal": 0,
        "GPUThrottlePowerCap": 0, "GPUThrottleHardwareSlowdown": 0, "GPUECCUncorrectableErrors": 0,
        "GPUPCIeReplays": 0, "GPURemappedRowsPending": 0, "GPURemappedRowsFailed": 0,
        # No byte counters: the throughput call's KB/s, read off the loop once the first sweep asked.
        "GPUPCIeRxBytesPerSecond": 256_000 * 1024, "GPUPCIeTxBytesPerSecond": 128_000 * 1024,
        "GPUHealthy": 1, "GPUXidErrors": 0,
    }
    assert per_gpu(first, 0) == without(expected, {"GPUEnergyConsumed", "GPUECCUncorrectableErrors", "GPUPCIeReplays",
                                                   "GPUPCIeRxBytesPerSecond", "GPUPCIeTxBytesPerSecond"})
    assert per_gpu(second, 0) == expected  # no GPUMemoryTemperature, no GPUNVLinkErrors
    assert sleeps == [PCIE_THROUGHPUT_WINDOW_S] * 2
    assert logs == [
        {"event": "gpu_reading_not_supported", "gpu": 0, "reading": "memory_temperature", "log_level": "info"},
        {"event": "gpu_reading_not_supported", "gpu": 0, "reading": "nvlink", "log_level": "info"},
    ]


def test_pcie_throughput_without_byte_counters_is_sampled_once_a_minute_off_the_loop(
    clock: FakeClock, make_collector: MakeCollector
) -> None:
    # Drivers before R560 have no PCIe byte counters; each throughput call blocks for 20 ms (modelled).
    spent: list[tuple[str, float]] = []
    fake = before_r560_h100(8, clock=clock, sleep=lambda s: spent.append((threading.current_thread().name, s)))
    collector = make_collector(fake)
    pcie = {"GPUPCIeRxBytesPerSecond", "GPUPCIeTxBytesPerSecond"}

    def sweep() -> dict[str, float]:
        samples = collector.collect()
        assert collector.wait_pcie_throughput(5.0)
        clock.advance(10)
        return {f"{s.name}/{dict(s.dimensions)['GPU']}": s.value for s in samples if s.name in pcie}

    assert sweep() == {}  # t=0: the sweep only asks; the thread reads
    readings = {**{f"GPUPCIeRxBytesPerSecond/{gpu}": 2_000_000_000 // 1024 * 1024 for gpu in range(8)},
                **{f"GPUPCIeTxBytesPerSecond/{gpu}": 1_000_000_000 // 1024 * 1024 for gpu in range(8)}}
    assert sweep() == readings  # t=10: each reading published once
    assert [sweep() for _ in range(4)] == [{}] * 4  # t=20..50: not due again
    assert sweep() == {}  # t=60: due, asked again
    assert sweep() == readings
    assert spent == [("gpu-pcie-throughput", PCIE_THROUGHPUT_WINDOW_S)] * (2 * 8 * 2)  # 2 passes, never the loop
    for gpu in fake.gpus:  # the counters answer (they had failed for a while): no more throughput calls
        gpu.field_errors = {}
    assert sweep() == {}  # the counters' first reading only primes them
    counted = {name: 2e9 if "Rx" in name else 1e9 for name in readings}
    assert [sweep() for _ in range(6)] == [counted] * 6  # past t=120, when a pass would have been due
    assert len(spent) == 2 * 8 * 2


def test_pcie_throughput_failures_are_logged_once_and_a_lost_gpu_left_to_the_sweep(
    clock: FakeClock, make_collector: MakeCollector
) -> None:
    fake = before_r560_h100(3, clock=clock, sleep=lambda s: None)
    fake.gpus[1].errors = {"nvmlDeviceGetPcieThroughput": pynvml.NVML_ERROR_GPU_IS_LOST}
    fake.gpus[2].errors = {"nvmlDeviceGetPcieThroughput": pynvml.NVML_ERROR_UNKNOWN}
    collector = make_collector(fake, pcie_throughput_interval=10.0)
    with capture_logs() as logs:
        for _ in range(3):
            samples = collector.collect()
            assert collector.wait_pcie_throughput(5.0)
            clock.advance(10)
    assert sorted((s.name, dict(s.dimensions)["GPU"]) for s in samples if s.name.endswith("BytesPerSecond")) == [
        ("GPUPCIeRxBytesPerSecond", "0"), ("GPUPCIeTxBytesPerSecond", "0")]
    assert [(line["event"], line["gpu"], line["reading"]) for line in logs] == [
        ("gpu_reading_failed", 2, "pcie_throughput_rx"), ("gpu_reading_failed", 2, "pcie_throughput_tx")]


def test_a_reading_that_fails_recovers_and_fails_again_is_logged_again(
    clock: FakeClock, make_collector: MakeCollector
) -> None:
    fake = healthy_h100(1, clock=clock)
    collector = make_collector(fake)
    failing = {"nvmlDeviceGetPowerUsage": pynvml.NVML_ERROR_UNKNOWN}
    with capture_logs() as logs:
        for errors in (failing, failing, {}, failing):
            fake.gpus[0].errors = errors
            collector.collect()
    assert [(line["event"], line["reading"]) for line in logs] == [("gpu_reading_failed", "power_usage")] * 2


def test_function_not_found_on_an_older_driver_is_absent(clock: FakeClock, make_collector: MakeCollector) -> None:
    fake = FakeNvml([h100(0)], clock=clock, missing_functions=frozenset({"nvmlDeviceGetCurrentClocksEventReasons"}))
    with capture_logs() as logs:
        samples = make_collector(fake).collect()
    assert not {"GPUThrottleThermal", "GPUThrottlePowerCap", "GPUThrottleHardwareSlowdown"} & per_gpu(samples, 0).keys()
    assert logs == [{"event": "gpu_reading_not_supported", "gpu": 0, "reading": "clocks_event_reasons",
                     "log_level": "info"}]


def test_a_failing_reading_is_skipped_and_warned_once(clock: FakeClock, make_collector: MakeCollector) -> None:
    fake = healthy_h100(1, clock=clock)
    fake.gpus[0].errors["nvmlDeviceGetPowerUsage"] = pynvml.NVML_ERROR_UNKNOWN
    fake.gpus[0].field_errors[pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL] = pynvml.NVML_ERROR_NO_PERMISSION
    collector = make_collector(fake)
    with capture_logs() as logs:
        collector.collect()
        clock.advance(10)
        samples = per_gpu(collector.collect(), 0)
    assert samples == pytest.approx(without(h100_expected(0), {
        "GPUPowerDraw", "GPUPowerUtilization", "GPUECCUncorrectableErrors"}))
    assert logs == [
        {"event": "gpu_reading_failed", "gpu": 0, "reading": "power_usage", "error": "Unknown Error",
         "log_level": "warning"},
        {"event": "gpu_reading_failed", "gpu": 0, "reading": "ecc_uncorrected_volatile",
         "error": "Insufficient Permissions", "log_level": "warning"},
    ]


def test_mig_enabled_gpu_publishes_memory_but_no_utilization(clock: FakeClock, make_collector: MakeCollector) -> None:
    collector = make_collector(mig_enabled(clock=clock))
    with capture_logs() as logs:
        collector.collect()
        clock.advance(10)
        samples = collector.collect()
    assert per_gpu(samples, 0) == pytest.approx(without(h100_expected(0), {
        "GPUUtilization", "GPUMemoryControllerUtilization"}))
    assert per_gpu(samples, 1) == pytest.approx(h100_expected(1))
    # The host means take what each GPU reports: utilization from GPU 1 only, memory from both.
    assert per_host(samples) == pytest.approx({"GPUCount": 2, "HostGPUUtilization": 71,
                                               "HostGPUMemoryUtilization": (12.5 + 13.75) / 2})
    assert logs == [{"event": "gpu_mig_enabled", "gpu": 0, "unpublished": "GPUUtilization",
                     "reason": "NVML reports no utilization for a MIG-enabled GPU", "log_level": "info"}]


# --- Health -----------------------------------------------------------------------------------------


def test_lost_gpu_reports_unhealthy_while_the_other_seven_keep_publishing(
    clock: FakeClock, make_collector: MakeCollector
) -> None:
    collector = make_collector(gpu_lost_midrun(lost_gpu=3, lost_at=15.0, clock=clock))
    collector.collect()
    clock.advance(10)
    assert per_gpu(collector.collect(), 3) == pytest.approx(h100_expected(3))
    with capture_logs() as logs:
        clock.advance(10)
        samples = collector.collect()
        clock.advance(10)
        collector.collect()
    assert per_gpu(samples, 3) == {"GPUHealthy": 0, "GPUXidErrors": 0}
    for i in (0, 1, 2, 4, 5, 6, 7):
        assert per_gpu(samples, i) == pytest.approx(h100_expected(i))
    healthy = [i for i in range(8) if i != 3]
    assert per_host(samples) == pytest.approx({
        "GPUCount": 8,
        "HostGPUUtilization": sum(70 + i for i in healthy) / 7,
        "HostGPUMemoryUtilization": sum((10 + i) / 80 * 100 for i in healthy) / 7,
    })
    assert logs == [{"event": "gpu_lost", "gpu": 3, "log_level": "warning"}]


def test_gpu_lost_before_the_first_sweep_has_only_its_index(clock: FakeClock, make_collector: MakeCollector) -> None:
    samples = make_collector(gpu_lost_midrun(lost_gpu=3, lost_at=0.0, clock=clock), uuid_dimension=True).collect()
    assert [s for s in samples if dict(s.dimensions).get("GPU") == "3"] == [
        METRICS["GPUHealthy"].sample(0, GPU="3")]


def test_a_gpu_lost_after_its_first_sweep_keeps_the_dimensions_read_then(
    clock: FakeClock, make_collector: MakeCollector
) -> None:
    # Its series are made once, when it first answers; a lost GPU can no longer say its UUID or name.
    collector = make_collector(gpu_lost_midrun(lost_gpu=3, lost_at=15.0, clock=clock), uuid_dimension=True,
                               name_dimension=True)
    collector.collect()
    clock.advance(20)
    dims = {"GPU": "3", "GPUUUID": "GPU-8f3b0003-6c1e-4a7d-9b25-0d4e1f2a3c5b", "GPUName": "NVIDIA H100 80GB HBM3"}
    assert [s for s in collector.collect() if dict(s.dimensions).get("GPU") == "3"] == [
        METRICS["GPUHealthy"].sample(0, **dims), METRICS["GPUXidErrors"].sample(0, **dims)]


def test_xid_79_is_counted_with_its_code_for_one_interval(clock: FakeClock, make_collector: MakeCollector) -> None:
    fake = xid_79(gpu=5, at=5.0, clock=clock)
    collector = make_collector(fake)
    assert per_gpu(collector.collect(), 5)["GPUXidErrors"] == 0
    with capture_logs() as logs:
        clock.advance(10)
        fake.settle()
        samples = collector.collect()
    assert per_gpu(samples, 5) == {"GPUHealthy": 0, "GPUXidErrors": 1, "GPULastXid": 79}
    for i in (0, 1, 2, 3, 4, 6, 7):
        assert per_gpu(samples, i) == pytest.approx(h100_expected(i))
    assert logs == [{"event": "gpu_xid", "gpu": 5, "xid": 79, "log_level": "warning"},
                    {"event": "gpu_lost", "gpu": 5, "log_level": "warning"}]
    clock.advance(10)
    fake.settle()
    assert per_gpu(collector.collect(), 5) == {"GPUHealthy": 0, "GPUXidErrors": 0}


# --- Counters ---------------------------------------------------------------------------------------


def test_counters_publish_increases_and_nothing_when_they_go_backwards(
    clock: FakeClock, make_collector: MakeCollector
) -> None:
    fake = healthy_h100(1, clock=clock)
    gpu = fake.gpus[0]
    collector = make_collector(fake)

    def counters() -> dict[str, float]:
        clock.advance(10)
        return {name: value for name, value in per_gpu(collector.collect(), 0).items() if name in COUNTERS}

    collector.collect()
    gpu.ecc_uncorrected += 2
    gpu.pcie_replays += 5
    gpu.nvlink_replay_errors += 1
    gpu.nvlink_crc_flit_errors += 3
    assert counters() == {"GPUEnergyConsumed": 3500, "GPUECCUncorrectableErrors": 2, "GPUPCIeReplays": 5,
                          "GPUNVLinkErrors": 4, "GPUPCIeRxBytesPerSecond": 2e9, "GPUPCIeTxBytesPerSecond": 1e9}
    # A driver reload resets the energy and volatile ECC counters; one NVLink counter is cleared.
    gpu.energy_mj = 0
    gpu.ecc_uncorrected = 0
    gpu.nvlink_replay_errors = 0
    assert counters() == {"GPUPCIeReplays": 0, "GPUPCIeRxBytesPerSecond": 2e9, "GPUPCIeTxBytesPerSecond": 1e9}
    gpu.ecc_uncorrected += 1
    gpu.nvlink_crc_data_errors += 7
    assert counters() == {"GPUEnergyConsumed": 3500, "GPUECCUncorrectableErrors": 1, "GPUPCIeReplays": 0,
                          "GPUNVLinkErrors": 7, "GPUPCIeRxBytesPerSecond": 2e9, "GPUPCIeTxBytesPerSecond": 1e9}


def test_throttle_reasons_and_remapped_rows_are_0_or_1(clock: FakeClock, make_collector: MakeCollector) -> None:
    fake = healthy_h100(1, clock=clock)
    gpu = fake.gpus[0]
    collector = make_collector(fake)
    flags = ("GPUThrottleThermal", "GPUThrottlePowerCap", "GPUThrottleHardwareSlowdown",
             "GPURemappedRowsPending", "GPURemappedRowsFailed")

    def read() -> tuple[float, ...]:
        samples = per_gpu(collector.collect(), 0)
        return tuple(samples[name] for name in flags)

    gpu.clocks_event_reasons = pynvml.nvmlClocksEventReasonHwThermalSlowdown | pynvml.nvmlClocksEventReasonSwPowerCap
    gpu.remapped_pending = 1
    assert read() == (1, 1, 0, 1, 0)
    gpu.clocks_event_reasons = pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown | pynvml.nvmlClocksEventReasonGpuIdle
    gpu.remapped_failed = 1
    assert read() == (0, 0, 1, 1, 1)
    gpu.clocks_event_reasons = pynvml.nvmlClocksEventReasonGpuIdle | pynvml.nvmlClocksEventReasonSwThermalSlowdown
    assert read() == (1, 0, 0, 1, 1)


# --- The Xid thread and shutdown --------------------------------------------------------------------


def test_close_stops_the_xid_thread_and_shuts_nvml_down_once(clock: FakeClock) -> None:
    fake = healthy_h100(8, clock=clock)
    collector = GpuCollector(Nvml(fake), monotonic=clock, xid_wait_ms=XID_WAIT_MS)
    collector.collect()
    thread = xid_thread()
    assert thread.is_alive()
    started = time.monotonic()
    collector.close()
    assert time.monotonic() - started < 1.0  # one wait timeout (20 ms) plus scheduling, never a hang
    assert not thread.is_alive()
    assert (fake.init_count, fake.shutdowns) == (0, 1)
    collector.close()
    assert (fake.init_count, fake.shutdowns) == (0, 1)


def test_close_without_a_sweep_touches_nothing(clock: FakeClock) -> None:
    fake = healthy_h100(8, clock=clock)
    GpuCollector(Nvml(fake), monotonic=clock, xid_wait_ms=XID_WAIT_MS).close()
    assert (fake.init_count, fake.shutdowns) == (0, 0)
    assert [t for t in threading.enumerate() if t.name == XID_THREAD] == []


class StuckWait(FakeNvml):
    """A driver whose event wait ignores its timeout."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__([h100(0)], clock=clock)
        self.release = threading.Event()

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:
        self.release.wait(10)
        raise pynvml.NVMLError_Timeout()


def test_a_stuck_xid_wait_does_not_hang_close_and_nvml_stays_up(clock: FakeClock) -> None:
    fake = StuckWait(clock)
    collector = GpuCollector(Nvml(fake), monotonic=clock, xid_wait_ms=XID_WAIT_MS)
    collector.collect()
    thread = xid_thread()
    with capture_logs() as logs:
        collector.close()
    assert logs == [{"event": "gpu_xid_thread_stuck", "action": "nvml_left_initialized", "log_level": "warning"}]
    assert (fake.init_count, fake.shutdowns) == (1, 0)  # freeing the event set under the waiter is unsafe
    fake.release.set()
    thread.join(5)
    assert not thread.is_alive()


def test_a_failing_xid_wait_is_logged_once_and_the_sweep_goes_on(clock: FakeClock) -> None:
    fake = FakeNvml([h100(0)], clock=clock, missing_functions=frozenset({"nvmlEventSetWait_v2"}))
    collector = GpuCollector(Nvml(fake), monotonic=clock, xid_wait_ms=XID_WAIT_MS)
    with capture_logs() as logs:
        assert per_gpu(collector.collect(), 0)["GPUXidErrors"] == 0
        deadline = time.monotonic() + 5
        while not logs and time.monotonic() < deadline:  # the thread's first failed wait
            time.sleep(0.005)
        collector.close()
    assert logs == [{"event": "gpu_xid_wait_failed", "error": "nvmlEventSetWait_v2: Function Not Found",
                     "log_level": "warning"}]
    assert [t for t in threading.enumerate() if t.name == XID_THREAD] == []


# --- gpu.enabled: auto / true / false ---------------------------------------------------------------


@pytest.mark.parametrize(("scenario", "reason"), [
    (no_library, NO_LIBRARY),
    (driver_not_loaded, "the NVIDIA kernel driver is not loaded"),
])
def test_auto_without_nvml_logs_one_line_and_goes_on(scenario: Callable[[], FakeNvml], reason: str) -> None:
    with capture_logs() as logs:
        assert build_gpu_collector(GpuConfig(enabled="auto"), Nvml(scenario())) is None
    assert logs == [{"event": "gpu_collector_off", "reason": reason, "log_level": "info"}]


@pytest.mark.parametrize(("scenario", "reason"), [
    (no_library, NO_LIBRARY),
    (driver_not_loaded, "the NVIDIA kernel driver is not loaded"),
])
def test_true_without_nvml_is_a_startup_error_saying_what_is_missing(
    scenario: Callable[[], FakeNvml], reason: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        build_gpu_collector(GpuConfig(enabled=True), Nvml(scenario()))
    assert raised.value.problems == [
        f'gpu.enabled: is true, but NVML cannot be used: {reason}; set "auto" to run without GPU metrics']


def test_false_never_touches_nvml(clock: FakeClock) -> None:
    fake = healthy_h100(8, clock=clock)
    with capture_logs() as logs:
        assert build_gpu_collector(GpuConfig(enabled=False), Nvml(fake)) is None
    assert (logs, fake.init_count) == ([], 0)


@pytest.mark.parametrize("enabled", ["auto", True])
def test_auto_and_true_with_gpus_build_the_configured_collector(clock: FakeClock, enabled: str | bool) -> None:
    fake = healthy_h100(2, clock=clock)
    for gpu in fake.gpus:  # no Xid thread: close() would wait out the default 500 ms event timeout
        gpu.errors["nvmlDeviceRegisterEvents"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    with capture_logs() as logs:
        collector = build_gpu_collector(GpuConfig(enabled=enabled, uuid_dimension=True), Nvml(fake))
        assert collector is not None
        samples = collector.collect()
        collector.close()
    assert logs == [{"event": "gpu_collector_on", "gpus": 2, "log_level": "info"}] + [
        {"event": "gpu_reading_not_supported", "gpu": gpu, "reading": "xid_events", "log_level": "info"}
        for gpu in (0, 1)]
    assert {dict(s.dimensions)["GPUUUID"] for s in samples if s.dimensions} == {
        "GPU-8f3b0000-6c1e-4a7d-9b25-0d4e1f2a3c5b", "GPU-8f3b0001-6c1e-4a7d-9b25-0d4e1f2a3c5b"}


def test_gpu_config_defaults_and_rejections() -> None:
    assert parse({}).gpu == GpuConfig(enabled="auto", uuid_dimension=False, name_dimension=False)
    assert parse({"gpu": {"enabled": False}}).gpu.enabled is False
    with pytest.raises(ConfigError) as raised:
        parse({"gpu": {"enabled": 1, "name_dimension": "yes", "uuid_dimensions": True}})
    assert raised.value.problems == [
        'gpu.uuid_dimensions: unknown key, did you mean "uuid_dimension"?',
        'gpu.enabled: must be "auto" or true or false, got 1',
        'gpu.name_dimension: must be true or false, got "yes"',
    ]
    with pytest.raises(ConfigError) as raised:
        parse({"dimensions": {"GPUName": "x"}})
    assert raised.value.problems == [
        'dimensions: dimension "GPUName" is set by the agent and cannot be overridden, got {GPUName = "x"}']


# --- The catalogue ----------------------------------------------------------------------------------


def test_every_gpu_sample_is_in_the_catalogue_with_its_unit_and_every_gpu_metric_is_produced(
    clock: FakeClock, make_collector: MakeCollector
) -> None:
    xid = xid_79(clock=clock)
    scenarios = [healthy_h100(8, clock=clock), a10g_partial(clock=clock), gpu_lost_midrun(lost_at=5.0, clock=clock),
                 xid, mig_enabled(clock=clock)]
    collectors = [make_collector(fake, uuid_dimension=True, name_dimension=True) for fake in scenarios]
    emitted = [sample for collector in collectors for sample in collector.collect()]
    clock.advance(10)
    xid.settle()
    emitted += [sample for collector in collectors for sample in collector.collect()]
    for sample in emitted:
        metric = METRICS[sample.name]
        names = {name for name, _ in sample.dimensions}
        assert sample.unit == metric.unit, sample
        assert set(metric.dimensions) <= names <= set(metric.dimensions + metric.optional_dimensions), sample
    gpu_metrics = {m.name for m in CATALOGUE if "GPU" in m.dimensions} | {
        "GPUCount", "HostGPUUtilization", "HostGPUMemoryUtilization"}
    assert {sample.name for sample in emitted} == gpu_metrics


# --- The NVML wrapper -------------------------------------------------------------------------------


def test_nvml_initializes_lazily_once_and_shuts_down_once(clock: FakeClock) -> None:
    fake = healthy_h100(2, clock=clock)
    nvml = Nvml(fake)
    assert fake.init_count == 0
    assert (nvml.device_count(), nvml.device_count(), fake.init_count) == (2, 2, 1)
    nvml.shutdown()
    nvml.shutdown()
    assert (fake.init_count, fake.shutdowns) == (0, 1)
    with pytest.raises(NvmlUnavailable, match=r"^NVML was shut down$"):
        nvml.device_count()


def test_nvml_without_a_library_raises_unavailable_on_every_call() -> None:
    fake = no_library()
    nvml = Nvml(fake)
    for _ in range(2):
        with pytest.raises(NvmlUnavailable) as raised:
            nvml.device_count()
        assert str(raised.value) == NO_LIBRARY
    nvml.shutdown()
    assert fake.shutdowns == 0


def test_nvml_translates_errors_into_absent_lost_and_failed(clock: FakeClock) -> None:
    fake = gpu_lost_midrun(lost_gpu=1, lost_at=0.0, clock=clock)
    fake.gpus[0].errors = {"nvmlDeviceGetTemperature": pynvml.NVML_ERROR_NOT_SUPPORTED,
                           "nvmlDeviceGetClockInfo": pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
                           "nvmlDeviceGetPowerUsage": pynvml.NVML_ERROR_UNKNOWN}
    nvml = Nvml(fake)
    assert nvml.temperature(0) is None
    assert nvml.sm_clock(0) is None
    with pytest.raises(NvmlError, match=r"^nvmlDeviceGetPowerUsage: Unknown Error$"):
        nvml.power_usage(0)
    with pytest.raises(GpuLost) as lost:
        nvml.memory(1)
    assert lost.value.gpu == 1
    assert nvml.utilization(0) == Utilization(gpu=70, memory=40)
    assert nvml.memory(0) == Memory(used=10 * GIB, total=80 * GIB)


def test_nvml_memory_leaves_reserved_memory_out_and_falls_back_on_drivers_before_r510(clock: FakeClock) -> None:
    assert Nvml(healthy_h100(1, clock=clock)).memory(0) == Memory(used=10 * GIB, total=80 * GIB)
    old = FakeNvml([h100(0), h100(1)], clock=clock, missing_functions=frozenset({"nvmlDeviceGetMemoryInfo_v2"}))
    nvml = Nvml(old)
    assert [nvml.memory(0), nvml.memory(1)] == [Memory(used=10 * GIB + 512 * 2**20, total=80 * GIB),
                                                Memory(used=11 * GIB + 512 * 2**20, total=80 * GIB)]


def test_nvml_reads_all_fields_in_one_call_and_leaves_out_unsupported_ones(clock: FakeClock) -> None:
    nvml = Nvml(a10g_partial(clock=clock))
    fields = nvml.field_values(0)
    assert fields.values == {
        Field.ENERGY: 1_000_000_000, Field.ECC_UNCORRECTED_VOLATILE: 0, Field.PCIE_REPLAYS: 0,
        Field.REMAPPED_ROWS_PENDING: 0, Field.REMAPPED_ROWS_FAILED: 0,
    }
    assert fields.errors == {}


# --- bench/gpu_vs_nvidia_smi.py ---------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU host prints the comparison instead")
def test_the_nvidia_smi_comparison_says_no_gpu_on_a_host_without_one() -> None:
    script = Path(__file__).parent.parent / "bench" / "gpu_vs_nvidia_smi.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "no GPU: nvidia-smi is not installed\n", "")


def test_a_metric_series_checks_its_dimensions_once_and_samples_as_the_metric_does() -> None:
    series = METRICS["GPUUtilization"].series(GPUName="NVIDIA H100 80GB HBM3", GPU="3")
    expected = Sample("GPUUtilization", 7.0, "Percent", (("GPU", "3"), ("GPUName", "NVIDIA H100 80GB HBM3")))
    assert series.sample(7) == METRICS["GPUUtilization"].sample(7, GPU="3", GPUName="NVIDIA H100 80GB HBM3") == expected
    assert type(series.sample(7).value) is float
    with pytest.raises(ValueError, match=r"^GPUUtilization takes dimensions \('GPU',\), got \('Core',\)$"):
        METRICS["GPUUtilization"].series(Core="0")
