"""A fake NVML for demos and tests: the pynvml functions `agent.nvml` calls, answered by simulated GPUs.

It is not a driver and reads no hardware. It raises pynvml's own NVMLError subclasses and returns
pynvml's own ctypes structures, so `agent.nvml`'s error handling runs as it does on a real host; it
insists on nvmlInit before use and on valid handles and arguments, as the library does.

Readings are exact and constant, except that counters (energy, PCIe bytes) grow with the injected
clock. With `vary=True` utilization, memory, power and temperature also move along a slow per-GPU wave,
deterministic for a seed, so a demo dashboard has something to show.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pynvml

GIB = 2**30
WAVE_PERIOD = 600.0  # seconds; slow enough to look like a training job's phases on a 1-minute graph
# nvmlDeviceGetPcieThroughput "is querying a byte counter over a 20ms interval" (NVML API reference): each
# call blocks that long, which is what the fake's injectable `sleep` spends.
PCIE_THROUGHPUT_WINDOW_S = 0.020

_UINT = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
_ULL = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
_VALUE_MEMBER = {_UINT: "uiVal", _ULL: "ullVal"}


@dataclass(eq=False)
class FakeGpu:
    """One simulated GPU. Tests change its attributes between sweeps (an ECC error, a counter reset)."""

    name: str
    uuid: str
    memory_total: int  # bytes
    memory_used: int  # bytes, without the driver's reservation (nvidia-smi memory.used)
    utilization: int  # %
    memory_utilization: int  # % of time the memory controller was busy
    temperature: int  # °C
    memory_temperature: int  # °C
    power_mw: int
    power_limit_mw: int
    sm_clock_mhz: int
    energy_mj: int  # at time 0; grows by power_mw every second
    pcie_rx_bytes_per_s: int  # the byte counters grow at these rates from 0
    pcie_tx_bytes_per_s: int
    memory_reserved: int = 0  # bytes the driver keeps; NVML's version 1 memory call counts them as used
    architecture: int = pynvml.NVML_DEVICE_ARCH_HOPPER  # nvmlDeviceGetArchitecture's NVML_DEVICE_ARCH_*
    clocks_event_reasons: int = 0
    ecc_uncorrected: int = 0
    pcie_replays: int = 0
    remapped_pending: int = 0
    remapped_failed: int = 0
    nvlink_links: int = 0
    nvlink_replay_errors: int = 0
    nvlink_recovery_errors: int = 0
    nvlink_crc_flit_errors: int = 0
    nvlink_crc_data_errors: int = 0
    mig: bool = False
    lost_at: float | None = None  # seconds after start when the GPU falls off the bus
    errors: dict[str, int] = field(default_factory=dict)  # pynvml function → the NVML_ERROR_* it answers
    field_errors: dict[int, int] = field(default_factory=dict)  # NVML_FI_* id → the NVML_ERROR_* it answers


@dataclass(frozen=True)
class FakeEventData:
    """The fields of pynvml.c_nvmlEventData_t that a waiter reads; `device` is the fake's handle."""

    device: FakeGpu
    eventType: int
    eventData: int


class _EventSet:
    """The opaque value nvmlEventSetCreate returns."""


class FakeNvml:
    """Implements the subset of the pynvml module that `agent.nvml.Nvml` uses."""

    def __init__(
        self,
        gpus: Sequence[FakeGpu],
        *,
        clock: Callable[[], float] = time.monotonic,
        init_error: int | None = None,
        missing_functions: frozenset[str] = frozenset(),
        xid_events: Sequence[tuple[float, int, int]] = (),
        vary: bool = False,
        seed: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`xid_events`: (seconds after start, GPU index, Xid code), delivered once due and registered.
        `sleep` spends the time a blocking call takes (nvmlDeviceGetPcieThroughput); tests record it instead."""
        self.gpus = list(gpus)
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self._init_error = init_error
        self._missing = missing_functions
        self._vary = vary
        rng = random.Random(seed)
        self._phases = [rng.uniform(0, 2 * math.pi) for _ in self.gpus]
        self.init_count = 0  # nvmlInit calls not yet matched by nvmlShutdown, as NVML counts them
        self.shutdowns = 0
        self._event_set: _EventSet | None = None
        self._registered: set[int] = set()
        self._pending = sorted(xid_events)
        self._events = threading.Condition()
        self._waiting = False

    # --- helpers (not pynvml API) -------------------------------------------------------------------

    def elapsed(self) -> float:
        return self._clock() - self._start

    def _wave(self, index: int) -> float:
        """-1..1 along this GPU's wave, 0 when not varying."""
        if not self._vary:
            return 0.0
        return math.sin(2 * math.pi * self.elapsed() / WAVE_PERIOD + self._phases[index])

    def _check(self, function: str) -> None:
        if function in self._missing:
            raise pynvml.NVMLError_FunctionNotFound()
        if self.init_count == 0:
            raise pynvml.NVMLError_Uninitialized()

    def _gpu(self, function: str, handle: Any) -> tuple[int, FakeGpu]:
        self._check(function)
        for index, gpu in enumerate(self.gpus):
            if gpu is handle:
                if gpu.lost_at is not None and self.elapsed() >= gpu.lost_at:
                    raise pynvml.NVMLError_GpuIsLost()
                if function in gpu.errors:
                    raise pynvml.NVMLError(gpu.errors[function])
                return index, gpu
        raise pynvml.NVMLError_InvalidArgument()

    def _due_event(self) -> tuple[float, int, int] | None:
        elapsed = self.elapsed()
        for event in self._pending:
            if event[0] <= elapsed and event[1] in self._registered:
                return event
        return None

    def settle(self, timeout: float = 5.0) -> None:
        """Block until every due Xid event was taken and the waiter is back waiting for the next one.

        Tests call it after moving the clock, so a collect() that follows sees the events deterministically.
        """
        with self._events:
            self._events.notify_all()
            if not self._events.wait_for(lambda: self._waiting and self._due_event() is None, timeout):
                raise TimeoutError("no Xid waiter came back for the next event")

    # --- pynvml API --------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        if self._init_error is not None:
            raise pynvml.NVMLError(self._init_error)
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")
        self.init_count -= 1
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._check("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError_InvalidArgument()
        gpu = self.gpus[index]
        if gpu.lost_at is not None and self.elapsed() >= gpu.lost_at:
            raise pynvml.NVMLError_GpuIsLost()
        return gpu

    def nvmlDeviceGetIndex(self, handle: FakeGpu) -> int:
        self._check("nvmlDeviceGetIndex")
        # Answered from the handle, without the GPU: a lost GPU's Xid 79 still names its index.
        return next(index for index, gpu in enumerate(self.gpus) if gpu is handle)

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        return self._gpu("nvmlDeviceGetUUID", handle)[1].uuid

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str:
        return self._gpu("nvmlDeviceGetName", handle)[1].name

    def nvmlDeviceGetArchitecture(self, handle: FakeGpu) -> int:
        return self._gpu("nvmlDeviceGetArchitecture", handle)[1].architecture

    def nvmlDeviceGetMigMode(self, handle: FakeGpu) -> list[int]:
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if self._gpu("nvmlDeviceGetMigMode", handle)[1].mig else 0
        return [mode, mode]

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> pynvml.c_nvmlUtilization_t:
        index, gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        if gpu.mig:
            raise pynvml.NVMLError_NotSupported()  # NVML gives no utilization for a MIG-enabled GPU
        wave = self._wave(index)
        return pynvml.c_nvmlUtilization_t(
            gpu=_clamp(gpu.utilization + 25 * wave, 0, 100),
            memory=_clamp(gpu.memory_utilization + 15 * wave, 0, 100),
        )

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu, version: int | None = None) -> Any:
        # pynvml calls the C function nvmlDeviceGetMemoryInfo_v2 when a version is given.
        index, gpu = self._gpu("nvmlDeviceGetMemoryInfo_v2" if version else "nvmlDeviceGetMemoryInfo", handle)
        total, reserved = gpu.memory_total, gpu.memory_reserved
        used = _clamp(gpu.memory_used + 0.05 * total * self._wave(index), 0, total - reserved)
        free = total - reserved - used
        if version is None:
            return pynvml.c_nvmlMemory_t(total=total, free=free, used=used + reserved)
        if version != pynvml.nvmlMemory_v2:
            raise pynvml.NVMLError_InvalidArgument()
        return pynvml.c_nvmlMemory_v2_t(version=version, total=total, reserved=reserved, free=free, used=used)

    def nvmlDeviceGetTemperature(self, handle: FakeGpu, sensor: int) -> int:
        index, gpu = self._gpu("nvmlDeviceGetTemperature", handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError_InvalidArgument()
        return round(gpu.temperature + 6 * self._wave(index))

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        index, gpu = self._gpu("nvmlDeviceGetPowerUsage", handle)
        return _clamp(gpu.power_mw * (1 + 0.25 * self._wave(index)), 0, gpu.power_limit_mw)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeGpu) -> int:
        return self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle)[1].power_limit_mw

    def nvmlDeviceGetClockInfo(self, handle: FakeGpu, clock_type: int) -> int:
        gpu = self._gpu("nvmlDeviceGetClockInfo", handle)[1]
        if clock_type != pynvml.NVML_CLOCK_SM:
            raise pynvml.NVMLError_InvalidArgument()
        return gpu.sm_clock_mhz

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeGpu) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksEventReasons", handle)[1].clocks_event_reasons

    def nvmlDeviceGetPcieThroughput(self, handle: FakeGpu, counter: int) -> int:
        gpu = self._gpu("nvmlDeviceGetPcieThroughput", handle)[1]
        self._sleep(PCIE_THROUGHPUT_WINDOW_S)
        if counter == pynvml.NVML_PCIE_UTIL_RX_BYTES:
            return gpu.pcie_rx_bytes_per_s // 1024
        if counter == pynvml.NVML_PCIE_UTIL_TX_BYTES:
            return gpu.pcie_tx_bytes_per_s // 1024
        raise pynvml.NVMLError_InvalidArgument()

    def nvmlDeviceGetFieldValues(self, handle: FakeGpu, field_ids: Sequence[int]) -> Any:
        index, gpu = self._gpu("nvmlDeviceGetFieldValues", handle)
        elapsed = self.elapsed()
        known: dict[int, tuple[int, float]] = {
            pynvml.NVML_FI_DEV_MEMORY_TEMP: (_UINT, round(gpu.memory_temperature + 5 * self._wave(index))),
            pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: (_ULL, gpu.energy_mj + gpu.power_mw * elapsed),
            pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL: (_ULL, gpu.ecc_uncorrected),
            pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER: (_UINT, gpu.pcie_replays),
            pynvml.NVML_FI_DEV_REMAPPED_PENDING: (_UINT, gpu.remapped_pending),
            pynvml.NVML_FI_DEV_REMAPPED_FAILURE: (_UINT, gpu.remapped_failed),
            pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT: (_UINT, gpu.nvlink_links),
            pynvml.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL: (_ULL, gpu.nvlink_replay_errors),
            pynvml.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL: (_ULL, gpu.nvlink_recovery_errors),
            pynvml.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL: (_ULL, gpu.nvlink_crc_flit_errors),
            pynvml.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL: (_ULL, gpu.nvlink_crc_data_errors),
            pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES: (_ULL, gpu.pcie_tx_bytes_per_s * elapsed),
            pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES: (_ULL, gpu.pcie_rx_bytes_per_s * elapsed),
        }
        answers = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for answer, field_id in zip(answers, field_ids, strict=True):
            answer.fieldId = field_id
            answer.timestamp = int(elapsed * 1_000_000)
            if field_id in gpu.field_errors or field_id not in known:
                answer.nvmlReturn = gpu.field_errors.get(field_id, pynvml.NVML_ERROR_NOT_SUPPORTED)
                continue
            value_type, value = known[field_id]
            answer.nvmlReturn = pynvml.NVML_SUCCESS
            answer.valueType = value_type
            setattr(answer.value, _VALUE_MEMBER[value_type], int(value))
        return answers

    def nvmlEventSetCreate(self) -> _EventSet:
        self._check("nvmlEventSetCreate")
        self._event_set = _EventSet()
        return self._event_set

    def nvmlDeviceRegisterEvents(self, handle: FakeGpu, event_types: int, event_set: _EventSet) -> None:
        index, _ = self._gpu("nvmlDeviceRegisterEvents", handle)
        if event_set is not self._event_set or event_types != pynvml.nvmlEventTypeXidCriticalError:
            raise pynvml.NVMLError_InvalidArgument()
        with self._events:
            self._registered.add(index)

    def nvmlEventSetWait_v2(self, event_set: _EventSet, timeout_ms: int) -> FakeEventData:
        self._check("nvmlEventSetWait_v2")
        if event_set is None or event_set is not self._event_set:
            raise pynvml.NVMLError_InvalidArgument()
        with self._events:
            self._waiting = True
            self._events.notify_all()
            try:
                if not self._events.wait_for(lambda: self._due_event() is not None, timeout_ms / 1000):
                    raise pynvml.NVMLError_Timeout()
                event = self._due_event()
                assert event is not None
                self._pending.remove(event)
            finally:
                self._waiting = False
        _, index, xid = event
        return FakeEventData(self.gpus[index], pynvml.nvmlEventTypeXidCriticalError, xid)

    def nvmlEventSetFree(self, event_set: _EventSet) -> None:
        self._check("nvmlEventSetFree")
        with self._events:
            if event_set is not self._event_set:
                raise pynvml.NVMLError_InvalidArgument()
            if self._waiting:
                raise AssertionError("event set freed while a thread waits on it")
            self._event_set = None


def _clamp(value: float, low: int, high: int) -> int:
    return int(min(max(round(value), low), high))


# --- GPUs -----------------------------------------------------------------------------------------


def h100(index: int) -> FakeGpu:
    """An H100 SXM 80 GB under steady training load; readings differ by index so GPUs can be told apart."""
    return FakeGpu(
        name="NVIDIA H100 80GB HBM3",
        uuid=f"GPU-8f3b{index:04d}-6c1e-4a7d-9b25-0d4e1f2a3c5b",
        memory_total=80 * GIB,
        memory_used=(10 + index) * GIB,
        memory_reserved=512 * 2**20,
        utilization=70 + index,
        memory_utilization=40 + index,
        temperature=45 + index,
        memory_temperature=55 + index,
        power_mw=350_000 + 10_000 * index,
        power_limit_mw=700_000,
        sm_clock_mhz=1980,
        energy_mj=5_000_000_000,
        pcie_rx_bytes_per_s=2_000_000_000,
        pcie_tx_bytes_per_s=1_000_000_000,
        nvlink_links=18,
    )


def a10g(index: int) -> FakeGpu:
    """An A10G (g5): no HBM temperature sensor, no NVLink, no MIG, no PCIe byte counters."""
    return FakeGpu(
        name="NVIDIA A10G",
        uuid=f"GPU-2a7c{index:04d}-93d0-4f18-b6e2-7c9a1d5e3f40",
        memory_total=24 * GIB,
        memory_used=6 * GIB,
        memory_reserved=384 * 2**20,
        architecture=pynvml.NVML_DEVICE_ARCH_AMPERE,
        utilization=30,
        memory_utilization=20,
        temperature=40,
        memory_temperature=0,
        power_mw=150_000,
        power_limit_mw=300_000,
        sm_clock_mhz=1710,
        energy_mj=1_000_000_000,
        pcie_rx_bytes_per_s=256_000 * 1024,
        pcie_tx_bytes_per_s=128_000 * 1024,
        errors={"nvmlDeviceGetMigMode": pynvml.NVML_ERROR_NOT_SUPPORTED},
        field_errors=dict.fromkeys((
            pynvml.NVML_FI_DEV_MEMORY_TEMP,
            pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT,
            pynvml.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL,
            pynvml.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL,
            pynvml.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL,
            pynvml.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL,
            pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES,
            pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES,
        ), pynvml.NVML_ERROR_NOT_SUPPORTED),
    )


# --- Scenarios ------------------------------------------------------------------------------------


def healthy_h100(
    count: int = 8, *, clock: Callable[[], float] = time.monotonic, vary: bool = False, seed: int = 0
) -> FakeNvml:
    """A p5.48xlarge-like host: `count` healthy H100s."""
    return FakeNvml([h100(index) for index in range(count)], clock=clock, vary=vary, seed=seed)


def a10g_partial(
    count: int = 1, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
) -> FakeNvml:
    """A g5-like host: memory temperature, NVLink, MIG and PCIe byte counters are NotSupported.

    Its fan is NotSupported too on a real A10G (passively cooled, as every EC2 GPU); the agent does not
    read fans, so the fake has no fan function to answer.
    """
    return FakeNvml([a10g(index) for index in range(count)], clock=clock, sleep=sleep)


def before_r560_h100(
    count: int = 8, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
) -> FakeNvml:
    """H100s on a driver before R560: no PCIe byte counter fields (NVML_FI_DEV_PCIE_COUNT_* came with R560),
    so PCIe throughput is only to be had from the 20 ms nvmlDeviceGetPcieThroughput call."""
    gpus = [h100(index) for index in range(count)]
    for gpu in gpus:
        gpu.field_errors = dict.fromkeys(
            (pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES, pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES),
            pynvml.NVML_ERROR_NOT_SUPPORTED,
        )
    return FakeNvml(gpus, clock=clock, sleep=sleep)


def gpu_lost_midrun(
    *, lost_gpu: int = 3, lost_at: float = 15.0, clock: Callable[[], float] = time.monotonic
) -> FakeNvml:
    """Eight H100s; `lost_gpu` falls off the bus `lost_at` seconds after start."""
    gpus = [h100(index) for index in range(8)]
    gpus[lost_gpu].lost_at = lost_at
    return FakeNvml(gpus, clock=clock)


def xid_79(*, gpu: int = 5, at: float = 5.0, clock: Callable[[], float] = time.monotonic) -> FakeNvml:
    """Eight H100s; `gpu` reports Xid 79 (fallen off the bus) `at` seconds after start and is lost from then."""
    gpus = [h100(index) for index in range(8)]
    gpus[gpu].lost_at = at
    return FakeNvml(gpus, clock=clock, xid_events=[(at, gpu, 79)])


def mig_enabled(*, clock: Callable[[], float] = time.monotonic) -> FakeNvml:
    """Two H100s: GPU 0 is partitioned with MIG (no utilization from NVML), GPU 1 is whole."""
    gpus = [h100(0), h100(1)]
    gpus[0].mig = True
    return FakeNvml(gpus, clock=clock)


def no_library() -> FakeNvml:
    """A host without the NVIDIA driver: libnvidia-ml.so.1 cannot be loaded."""
    return FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)


def driver_not_loaded() -> FakeNvml:
    """The driver's user-space library is installed but the kernel module is not loaded."""
    return FakeNvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
