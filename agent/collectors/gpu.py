"""NVIDIA GPUs through NVML, in-process: utilization, memory, power, throttling, errors, Xid events, health.

A sweep costs nine NVML calls per GPU: one nvmlDeviceGetFieldValues covers memory temperature, energy,
ECC, PCIe replays and bytes, remapped rows and NVLink errors. A GPU that fell off the bus publishes
GPUHealthy 0 and nothing else read from it. A reading a GPU does not have is absent, not zero, and said
once per GPU and reading.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from statistics import fmean
from typing import Literal, TypeVar

import structlog

from agent.catalogue import CATALOGUE, METRICS, Series
from agent.config import GpuConfig
from agent.logs import LogOnce
from agent.nvml import ClocksEvent, Field, FieldValues, GpuLost, Nvml, NvmlError, NvmlUnavailable, XidEvent
from agent.rates import CounterTracker
from agent.samples import Sample
from agent.schema import ConfigError

log = structlog.get_logger()

T = TypeVar("T")

XID_WAIT_MS = 500  # how long one event wait blocks; close() waits at most twice this for the thread
# How often GPUs without PCIe byte counters are sampled with the blocking throughput call, off the loop.
PCIE_THROUGHPUT_INTERVAL_S = 60.0

# Plain ints: `&` on two IntFlags builds a flag through the enum machinery, three times per GPU per sweep.
_THROTTLES = (
    ("GPUThrottleThermal", int(ClocksEvent.SW_THERMAL_SLOWDOWN | ClocksEvent.HW_THERMAL_SLOWDOWN)),
    ("GPUThrottlePowerCap", int(ClocksEvent.SW_POWER_CAP)),
    ("GPUThrottleHardwareSlowdown", int(ClocksEvent.HW_SLOWDOWN | ClocksEvent.HW_POWER_BRAKE_SLOWDOWN)),
)
_READINGS = {field: field.name.lower() for field in Field}  # each field's name in logs and LogOnce keys
_COUNTERS = ((Field.ECC_UNCORRECTED_VOLATILE, "GPUECCUncorrectableErrors"), (Field.PCIE_REPLAYS, "GPUPCIeReplays"))
_FLAGS = (
    (Field.REMAPPED_ROWS_PENDING, "GPURemappedRowsPending"),
    (Field.REMAPPED_ROWS_FAILED, "GPURemappedRowsFailed"),
)
_NVLINK_ERRORS = (
    Field.NVLINK_REPLAY_ERRORS,
    Field.NVLINK_RECOVERY_ERRORS,
    Field.NVLINK_CRC_FLIT_ERRORS,
    Field.NVLINK_CRC_DATA_ERRORS,
)
_PCIE: tuple[tuple[Literal["rx", "tx"], Field, str], ...] = (
    ("rx", Field.PCIE_RX_BYTES, "GPUPCIeRxBytesPerSecond"),
    ("tx", Field.PCIE_TX_BYTES, "GPUPCIeTxBytesPerSecond"),
)
_PER_GPU = tuple(metric for metric in CATALOGUE if metric.dimensions == ("GPU",))


def _gpu_series(dimensions: dict[str, str]) -> dict[str, Series]:
    """Each per-GPU metric's series on one GPU, by metric name: its dimensions are read once, so a sweep
    samples these instead of checking and sorting the same dimensions for every reading."""
    return {metric.name: metric.series(**dimensions) for metric in _PER_GPU}


class _XidWatcher:
    """Counts critical Xid events per GPU.

    NVML hands events only to a caller blocked in nvmlEventSetWait, so a thread of its own waits, with a
    timeout so that `close` can stop it.
    """

    def __init__(self, nvml: Nvml, wait_ms: int) -> None:
        self._nvml = nvml
        self._wait_ms = wait_ms
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._thread: threading.Thread | None = None
        self._once = LogOnce(log)

    def watch(self, gpu: int) -> bool:
        """Count this GPU's Xid events from now on; False where it cannot report them."""
        if not self._nvml.watch_xid(gpu):
            return False
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gpu-xid-events", daemon=True)
            self._thread.start()
        return True

    def drain(self) -> dict[int, tuple[int, int | None]]:
        """(events, last Xid code) per GPU since the previous drain."""
        with self._lock:
            counts, last = self._counts, self._last
            self._counts, self._last = {}, {}
        return {gpu: (count, last.get(gpu)) for gpu, count in counts.items()}

    def close(self) -> bool:
        """Stop the thread; False if it is still inside NVML after twice the wait timeout."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(2 * self._wait_ms / 1000)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._nvml.wait_xid(self._wait_ms)
            except Exception as error:  # a thread that dies is silent: log once, pause, keep waiting
                self._once.warning(("wait", type(error).__name__), "gpu_xid_wait_failed", error=str(error))
                self._stop.wait(self._wait_ms / 1000)
                continue
            if event is not None:
                self._record(event)

    def _record(self, event: XidEvent) -> None:
        self._once.warning((event.gpu, event.xid), "gpu_xid", gpu=event.gpu, xid=event.xid)
        with self._lock:
            self._counts[event.gpu] = self._counts.get(event.gpu, 0) + 1
            self._last[event.gpu] = event.xid


class _PcieThroughputSampler:
    """PCIe throughput of GPUs without byte counters (drivers before R560), read on a thread of its own.

    nvmlDeviceGetPcieThroughput blocks for its 20 ms sampling window, twice per GPU (rx, tx): 320 ms a sweep
    on 8 GPUs if it ran on the collection loop. Here the loop only asks (`due`), at most once per
    `interval`; the thread reads every GPU that needs it, and each reading is published once (`take`).
    The thread starts on the first GPU that needs it, so hosts with the counters never have it.
    """

    def __init__(self, nvml: Nvml, interval: float) -> None:
        self._nvml = nvml
        self._interval = interval
        self._lock = threading.Lock()
        self._gpus: set[int] = set()  # GPUs without counters, sampled on each pass
        self._ready: dict[int, dict[str, float]] = {}  # readings not yet published: GPU → direction → B/s
        self._next: float | None = None
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._once = LogOnce(log)

    def need(self, gpu: int, needed: bool) -> None:
        """Sample this GPU on each pass, or no longer (its counters answer again after a failed sweep)."""
        if (gpu in self._gpus) == needed:  # the common case, without the lock
            return
        with self._lock:
            if needed:
                self._gpus.add(gpu)
            else:
                self._gpus.discard(gpu)
                self._ready.pop(gpu, None)

    def take(self, gpu: int) -> dict[str, float]:
        with self._lock:
            return self._ready.pop(gpu, {})

    def due(self, now: float) -> None:
        """Start a pass if one is due and the previous one has finished; called once per sweep."""
        if not self._gpus or not self._idle.is_set() or (self._next is not None and now < self._next):
            return
        self._next = now + self._interval
        self._idle.clear()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gpu-pcie-throughput", daemon=True)
            self._thread.start()
        self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """Block until the pass in progress has finished; for tests and benches."""
        return self._idle.wait(timeout)

    def close(self, timeout: float) -> bool:
        """Stop the thread; False if it is still inside NVML after `timeout`."""
        self._stop = True
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            with self._lock:
                gpus = sorted(self._gpus)
            for gpu in gpus:
                if self._stop:  # close() waits for one 20 ms call at most, not a whole pass
                    break
                readings = self._read(gpu)
                with self._lock:
                    self._ready[gpu] = readings
            self._idle.set()

    def _read(self, gpu: int) -> dict[str, float]:
        readings: dict[str, float] = {}
        for direction, _, _ in _PCIE:
            try:
                kilobytes = self._nvml.pcie_throughput(gpu, direction)
            except GpuLost:
                return readings  # the sweep publishes GPUHealthy 0 and logs it
            except NvmlError as error:
                self._once.warning((gpu, direction), "gpu_reading_failed", variant=error.reason, gpu=gpu,
                                   reading=f"pcie_throughput_{direction}", error=error.reason)
                continue
            if kilobytes is None:
                self._once.info((gpu, direction), "gpu_reading_not_supported", gpu=gpu,
                                reading=f"pcie_throughput_{direction}")
                continue
            self._once.reset((gpu, direction))
            readings[direction] = kilobytes * 1024
        return readings


class GpuCollector:
    name = "gpu"

    def __init__(
        self,
        nvml: Nvml | None = None,
        *,
        uuid_dimension: bool = False,
        name_dimension: bool = False,
        arch_dimension: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
        xid_wait_ms: int = XID_WAIT_MS,
        pcie_throughput_interval: float = PCIE_THROUGHPUT_INTERVAL_S,
    ) -> None:
        self._nvml = nvml if nvml is not None else Nvml()
        self._uuid_dimension = uuid_dimension
        self._name_dimension = name_dimension
        self._arch_dimension = arch_dimension
        self._monotonic = monotonic
        self._xid = _XidWatcher(self._nvml, xid_wait_ms)
        self._xid_wait_ms = xid_wait_ms
        self._pcie = _PcieThroughputSampler(self._nvml, pcie_throughput_interval)
        self._series: dict[int, dict[str, Series]] = {}  # per GPU, from its dimensions read once
        self._xid_watched: set[int] = set()
        self._counters = CounterTracker()
        self._once = LogOnce(log)

    def collect(self) -> list[Sample]:
        now = self._monotonic()
        count = self._nvml.device_count()
        xids = self._xid.drain()
        samples = [METRICS["GPUCount"].sample(count)]
        for gpu in range(count):
            samples += self._collect_gpu(gpu, now, xids.get(gpu, (0, None)))
        self._pcie.due(now)
        self._counters.forget_unseen()
        for host_metric, per_gpu in (("HostGPUUtilization", "GPUUtilization"),
                                     ("HostGPUMemoryUtilization", "GPUMemoryUtilization")):
            values = [sample.value for sample in samples if sample.name == per_gpu]
            if values:
                samples.append(METRICS[host_metric].sample(fmean(values)))
        return samples

    def wait_pcie_throughput(self, timeout: float) -> bool:
        """Block until the PCIe throughput pass in progress has finished; for tests and benches."""
        return self._pcie.wait_idle(timeout)

    def close(self) -> None:
        """Stop the Xid and PCIe threads, then shut NVML down. Call once at exit."""
        xid_stopped = self._xid.close()
        pcie_stopped = self._pcie.close(2 * self._xid_wait_ms / 1000)
        if xid_stopped and pcie_stopped:
            self._nvml.shutdown()
        else:
            # Freeing the event set under a thread still waiting on it is undefined; the process is ending.
            log.warning("gpu_xid_thread_stuck" if not xid_stopped else "gpu_pcie_thread_stuck",
                        action="nvml_left_initialized")

    def _collect_gpu(self, gpu: int, now: float, xid: tuple[int, int | None]) -> list[Sample]:
        try:
            series = self._discover(gpu)
            samples = self._read(gpu, series, now)
        except GpuLost:
            self._once.warning(("lost", gpu), "gpu_lost", gpu=gpu)
            series = self._series.get(gpu) or _gpu_series({"GPU": str(gpu)})
            samples = [series["GPUHealthy"].sample(0)]
        else:
            self._once.reset(("lost", gpu))
            samples.append(series["GPUHealthy"].sample(1))
        # Published for a lost GPU too: Xid 79 is how a GPU says it fell off the bus.
        if gpu in self._xid_watched:
            count, last = xid
            samples.append(series["GPUXidErrors"].sample(count))
            if last is not None:
                samples.append(series["GPULastXid"].sample(last))
        return samples

    def _discover(self, gpu: int) -> dict[str, Series]:
        """The GPU's series, from its dimensions, and its Xid registration, the first time it answers."""
        known = self._series.get(gpu)
        if known is not None:
            return known
        dimensions = {"GPU": str(gpu)}
        if self._uuid_dimension and (uuid := self._value(gpu, "uuid", self._nvml.uuid)):
            dimensions["GPUUUID"] = uuid
        if self._name_dimension and (name := self._value(gpu, "name", self._nvml.name)):
            dimensions["GPUName"] = name
        if self._arch_dimension and (arch := self._value(gpu, "architecture", self._nvml.architecture)):
            dimensions["GPUArch"] = arch
        watched = self._value(gpu, "xid_events", self._xid.watch)
        if watched:
            self._xid_watched.add(gpu)
        elif watched is False:
            self._absent(gpu, "xid_events", None)
        series = self._series[gpu] = _gpu_series(dimensions)
        return series

    def _read(self, gpu: int, series: dict[str, Series], now: float) -> list[Sample]:
        samples: list[Sample] = []

        def add(metric: str, value: float) -> None:
            samples.append(series[metric].sample(value))

        if self._value(gpu, "mig_mode", self._nvml.mig_enabled):
            self._once.info((gpu, "mig"), "gpu_mig_enabled", gpu=gpu, unpublished="GPUUtilization",
                            reason="NVML reports no utilization for a MIG-enabled GPU")
        elif (utilization := self._value(gpu, "utilization", self._nvml.utilization)) is not None:
            add("GPUUtilization", utilization.gpu)
            add("GPUMemoryControllerUtilization", utilization.memory)
        if (memory := self._value(gpu, "memory", self._nvml.memory)) is not None and memory.total > 0:
            add("GPUMemoryUtilization", memory.used / memory.total * 100)
            add("GPUMemoryUsed", memory.used)
            add("GPUMemoryTotal", memory.total)
        if (temperature := self._value(gpu, "temperature", self._nvml.temperature)) is not None:
            add("GPUTemperature", temperature)

        fields = self._field_values(gpu)
        if (memory_temperature := self._field(gpu, fields, Field.MEMORY_TEMPERATURE)) is not None:
            add("GPUMemoryTemperature", memory_temperature)
        power = self._value(gpu, "power_usage", self._nvml.power_usage)
        limit = self._value(gpu, "power_limit", self._nvml.power_limit)
        if power is not None:
            add("GPUPowerDraw", power / 1000)
        if limit is not None:
            add("GPUPowerLimit", limit / 1000)
        if power is not None and limit:
            add("GPUPowerUtilization", power / limit * 100)
        if (energy := self._field(gpu, fields, Field.ENERGY)) is not None:
            increase = self._increase(gpu, Field.ENERGY, energy, now)
            if increase is not None:
                add("GPUEnergyConsumed", increase / 1000)
        if (clock := self._value(gpu, "sm_clock", self._nvml.sm_clock)) is not None:
            add("GPUSMClock", clock)
        if (reasons := self._value(gpu, "clocks_event_reasons", self._nvml.clocks_event_reasons)) is not None:
            for metric, bits in _THROTTLES:
                add(metric, 1 if int(reasons) & bits else 0)

        for field, metric in _COUNTERS:
            if (value := self._field(gpu, fields, field)) is not None:
                increase = self._increase(gpu, field, value, now)
                if increase is not None:
                    add(metric, increase)
        for field, metric in _FLAGS:
            if (value := self._field(gpu, fields, field)) is not None:
                add(metric, 1 if value else 0)
        counted = all(field in fields.values for _, field, _ in _PCIE)
        self._pcie.need(gpu, not counted)
        if counted:
            for _, field, metric in _PCIE:
                if (rate := self._counters.rate((gpu, field), fields.values[field], now)) is not None:
                    add(metric, rate)
        else:  # no byte counters: the slow throughput call, sampled off the loop
            fresh = self._pcie.take(gpu)
            for direction, _, metric in _PCIE:
                if direction in fresh:
                    add(metric, fresh[direction])
        if (nvlink_errors := self._nvlink_errors(gpu, fields, now)) is not None:
            add("GPUNVLinkErrors", nvlink_errors)
        return samples

    # --- readings ----------------------------------------------------------------------------------

    def _value(self, gpu: int, reading: str, read: Callable[[int], T | None]) -> T | None:
        """One NVML reading, or None (logged once per GPU and reading) when absent or failed."""
        try:
            value = read(gpu)
        except NvmlError as error:
            self._absent(gpu, reading, error.reason)
            return None
        if value is None:
            self._absent(gpu, reading, None)
        else:
            self._once.reset((gpu, reading))
        return value

    def _field_values(self, gpu: int) -> FieldValues:
        try:
            return self._nvml.field_values(gpu)
        except NvmlError as error:
            return FieldValues({}, dict.fromkeys(Field, error.reason))

    def _field(self, gpu: int, fields: FieldValues, field: Field) -> float | None:
        value = fields.values.get(field)
        if value is None:
            self._absent(gpu, _READINGS[field], fields.errors.get(field))
        else:
            self._once.reset((gpu, _READINGS[field]))
        return value

    def _absent(self, gpu: int, reading: str, error: str | None) -> None:
        if error is None:
            self._once.info((gpu, reading), "gpu_reading_not_supported", gpu=gpu, reading=reading)
        else:
            self._once.warning((gpu, reading), "gpu_reading_failed", variant=error, gpu=gpu, reading=reading,
                               error=error)

    def _increase(self, gpu: int, field: Field, value: float, now: float) -> float | None:
        change = self._counters.delta((gpu, field), value, now)
        return None if change is None else change[0]

    def _nvlink_errors(self, gpu: int, fields: FieldValues, now: float) -> float | None:
        """Σ of the increases of every error counter the GPU reports; None until each has a previous reading."""
        if not fields.values.get(Field.NVLINK_LINKS):
            self._absent(gpu, "nvlink", fields.errors.get(Field.NVLINK_LINKS))
            return None
        self._once.reset((gpu, "nvlink"))
        counters = [(field, fields.values[field]) for field in _NVLINK_ERRORS if field in fields.values]
        increases = [self._increase(gpu, field, value, now) for field, value in counters]
        if not increases or None in increases:
            return None
        return sum(increase for increase in increases if increase is not None)


def build_gpu_collector(
    config: GpuConfig, nvml: Nvml | None = None, *, arch_dimension: bool = False
) -> GpuCollector | None:
    """The GPU collector that `gpu.enabled` asks for, or None; `arch_dimension` where the naming profile
    publishes the architecture (cwagent).

    "auto" on a host without NVML logs one line and returns None; `true` raises ConfigError saying what
    is missing (the CLI exits 2); `false` never touches NVML.
    """
    if config.enabled is False:
        return None
    nvml = nvml if nvml is not None else Nvml()
    try:
        count = nvml.device_count()
    except (NvmlUnavailable, NvmlError) as error:
        if config.enabled is True:
            raise ConfigError([
                f'gpu.enabled: is true, but NVML cannot be used: {error}; set "auto" to run without GPU metrics'
            ]) from error
        log.info("gpu_collector_off", reason=str(error))
        return None
    log.info("gpu_collector_on", gpus=count)
    return GpuCollector(nvml, uuid_dimension=config.uuid_dimension, name_dimension=config.name_dimension,
                        arch_dimension=arch_dimension)
