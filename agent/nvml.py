"""The one module that talks to NVML (nvidia-ml-py, `import pynvml`).

Callers get plain Python values. Besides a value, a reading has three outcomes:
- `None`: this GPU has no such reading (NVML answers NotSupported or FunctionNotFound). Absent, not zero.
- `GpuLost`: the GPU fell off the bus. A health signal for that GPU, never a reason to stop.
- `NvmlUnavailable`: this host has no usable NVML at all (no library, no driver), raised by every call.
Any other NVML failure raises `NvmlError` for that one reading.

The library is a constructor argument: the real `pynvml` module, or an object with the same functions
(`agent.fake_nvml.FakeNvml`). Error classes, structures and constants always come from `pynvml` itself,
so a fake raises and returns exactly what the bindings would.
"""

from __future__ import annotations

import enum
import threading
from typing import Any, Literal, NamedTuple

import pynvml
import structlog

log = structlog.get_logger()

_ABSENT = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})

# nvmlInit failures that mean "no usable NVML on this host", and what a person should check.
_UNAVAILABLE = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        "the NVML library libnvidia-ml.so.1 was not found (is the NVIDIA driver installed?)",
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded",
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        "the NVML library and the loaded kernel driver are different versions (reboot after a driver upgrade)",
    pynvml.NVML_ERROR_NO_PERMISSION: "no permission to open the NVIDIA devices (/dev/nvidia*)",
}

_VALUE_MEMBERS = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}


# nvmlDeviceGetArchitecture's value as nvidia-smi writes it (XML schema v12 `product_architecture`, the
# CloudWatch agent's `arch` tag): real dumps read "Ampere", "Turing", "Pascal", "Ada Lovelace", "Hopper".
ARCHITECTURES = {
    pynvml.NVML_DEVICE_ARCH_KEPLER: "Kepler",
    pynvml.NVML_DEVICE_ARCH_MAXWELL: "Maxwell",
    pynvml.NVML_DEVICE_ARCH_PASCAL: "Pascal",
    pynvml.NVML_DEVICE_ARCH_VOLTA: "Volta",
    pynvml.NVML_DEVICE_ARCH_TURING: "Turing",
    pynvml.NVML_DEVICE_ARCH_AMPERE: "Ampere",
    pynvml.NVML_DEVICE_ARCH_ADA: "Ada Lovelace",
    pynvml.NVML_DEVICE_ARCH_HOPPER: "Hopper",
    pynvml.NVML_DEVICE_ARCH_BLACKWELL: "Blackwell",
}


class Field(enum.IntEnum):
    """The readings taken together in one nvmlDeviceGetFieldValues call per GPU per sweep."""

    MEMORY_TEMPERATURE = pynvml.NVML_FI_DEV_MEMORY_TEMP  # °C
    ENERGY = pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION  # mJ since the driver loaded
    ECC_UNCORRECTED_VOLATILE = pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL  # since the last driver load
    PCIE_REPLAYS = pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER
    REMAPPED_ROWS_PENDING = pynvml.NVML_FI_DEV_REMAPPED_PENDING  # 0/1
    REMAPPED_ROWS_FAILED = pynvml.NVML_FI_DEV_REMAPPED_FAILURE  # 0/1
    NVLINK_LINKS = pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT
    NVLINK_REPLAY_ERRORS = pynvml.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL
    NVLINK_RECOVERY_ERRORS = pynvml.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL
    NVLINK_CRC_FLIT_ERRORS = pynvml.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL
    NVLINK_CRC_DATA_ERRORS = pynvml.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL
    # Byte counters (R550+). nvmlDeviceGetPcieThroughput instead blocks 20 ms per direction per GPU.
    PCIE_TX_BYTES = pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES
    PCIE_RX_BYTES = pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES


class ClocksEvent(enum.IntFlag):
    """Bits of nvmlDeviceGetCurrentClocksEventReasons that say why clocks are held back."""

    SW_POWER_CAP = pynvml.nvmlClocksEventReasonSwPowerCap
    HW_SLOWDOWN = pynvml.nvmlClocksEventReasonHwSlowdown
    SW_THERMAL_SLOWDOWN = pynvml.nvmlClocksEventReasonSwThermalSlowdown
    HW_THERMAL_SLOWDOWN = pynvml.nvmlClocksEventReasonHwThermalSlowdown
    HW_POWER_BRAKE_SLOWDOWN = pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown


# Built once: iterating an enum costs more than the reading it names.
_FIELDS = tuple(Field)
_FIELD_IDS = [int(field) for field in _FIELDS]
_CLOCKS_EVENTS = int(sum(ClocksEvent))  # the bits ClocksEvent names
# pynvml's structures read every attribute through a Python __getattribute__ that decodes bytes to str;
# a field value's members are numbers, so they are read through the plain lookup, at a third of the cost
# (three reads per field, 13 fields per GPU, every sweep).
_member = object.__getattribute__


class NvmlUnavailable(Exception):
    """This host has no usable NVML; the message says what is missing."""


class GpuLost(Exception):
    """The GPU fell off the bus (NVML_ERROR_GPU_IS_LOST)."""

    def __init__(self, gpu: int) -> None:
        super().__init__(f"GPU {gpu} is lost")
        self.gpu = gpu


class NvmlError(Exception):
    """One reading failed for a reason other than "not supported" or "GPU lost"."""

    def __init__(self, function: str, reason: str) -> None:
        super().__init__(f"{function}: {reason}")
        self.function = function
        self.reason = reason


class Utilization(NamedTuple):
    gpu: int  # % of the sample period a kernel ran
    memory: int  # % of the sample period device memory was read or written


class Memory(NamedTuple):
    used: int  # bytes
    total: int  # bytes


class FieldValues(NamedTuple):
    values: dict[Field, float]  # the fields this GPU answered
    errors: dict[Field, str]  # fields that failed for a reason other than "not supported"


class XidEvent(NamedTuple):
    gpu: int
    xid: int


class Nvml:
    """NVML, initialized on first use and shut down once by `shutdown`.

    Thread-safe as NVML itself is: the Xid event thread waits while the collector reads.
    """

    def __init__(self, library: Any = pynvml) -> None:
        self._library = library
        self._lock = threading.Lock()
        self._initialized = False
        self._unavailable: NvmlUnavailable | None = None
        self._handles: dict[int, Any] = {}
        self._event_set: Any = None
        self._memory_v2 = True  # until the driver says it has no nvmlDeviceGetMemoryInfo_v2

    # --- lifecycle ---------------------------------------------------------------------------------

    def _ensure_initialized(self) -> None:
        if self._initialized and self._unavailable is None:  # every call after the first: no lock to take
            return
        with self._lock:
            if self._unavailable is not None:
                raise self._unavailable
            if self._initialized:
                return
            try:
                self._library.nvmlInit()
            except pynvml.NVMLError as error:
                reason = _UNAVAILABLE.get(error.value, f"NVML failed to initialize: {error}")
                self._unavailable = NvmlUnavailable(reason)
                raise self._unavailable from error
            self._initialized = True

    def shutdown(self) -> None:
        """Free the event set and shut NVML down; later calls raise NvmlUnavailable. Safe to call twice."""
        with self._lock:
            if self._unavailable is not None:
                return
            self._unavailable = NvmlUnavailable("NVML was shut down")
            if not self._initialized:
                return
            try:
                if self._event_set is not None:
                    self._library.nvmlEventSetFree(self._event_set)
                self._library.nvmlShutdown()
            except pynvml.NVMLError as error:
                log.warning("nvml_shutdown_failed", error=str(error))

    # --- calls -------------------------------------------------------------------------------------

    def _call(self, function: str, *args: Any) -> Any:
        """The function's value; raises _Absent, NvmlError, or NvmlUnavailable."""
        self._ensure_initialized()
        try:
            return getattr(self._library, function)(*args)
        except pynvml.NVMLError as error:
            if error.value in _ABSENT:
                raise _Absent(f"{function}: {error}") from error
            raise NvmlError(function, str(error)) from error

    def _device_call(self, gpu: int, function: str, *args: Any) -> Any:
        """`function(handle of gpu, *args)`; also raises GpuLost."""
        try:
            handle = self._handles.get(gpu)
            if handle is None:
                handle = self._handles[gpu] = self._call("nvmlDeviceGetHandleByIndex", gpu)
            return self._call(function, handle, *args)
        except NvmlError as error:
            if isinstance(error.__cause__, pynvml.NVMLError_GpuIsLost):
                raise GpuLost(gpu) from error
            raise

    def _read(self, gpu: int, function: str, *args: Any) -> Any:
        """`_device_call`, with None for a reading this GPU does not have."""
        try:
            return self._device_call(gpu, function, *args)
        except _Absent:
            return None

    # --- per host ----------------------------------------------------------------------------------

    def device_count(self) -> int:
        return int(self._call("nvmlDeviceGetCount"))

    # --- per GPU -----------------------------------------------------------------------------------

    def uuid(self, gpu: int) -> str | None:
        return self._read(gpu, "nvmlDeviceGetUUID")

    def name(self, gpu: int) -> str | None:
        return self._read(gpu, "nvmlDeviceGetName")

    def architecture(self, gpu: int) -> str | None:
        """nvidia-smi's product_architecture; None where NVML does not say or names one nvidia-smi's
        strings here do not cover (NVML_DEVICE_ARCH_UNKNOWN: "presumably something newer")."""
        arch = self._read(gpu, "nvmlDeviceGetArchitecture")
        return None if arch is None else ARCHITECTURES.get(arch)

    def mig_enabled(self, gpu: int) -> bool:
        """GPUs without MIG answer NotSupported: that is "not enabled"."""
        modes = self._read(gpu, "nvmlDeviceGetMigMode")
        return modes is not None and modes[0] == pynvml.NVML_DEVICE_MIG_ENABLE

    def utilization(self, gpu: int) -> Utilization | None:
        rates = self._read(gpu, "nvmlDeviceGetUtilizationRates")
        return None if rates is None else Utilization(rates.gpu, rates.memory)

    def memory(self, gpu: int) -> Memory | None:
        """Bytes. Version 2 leaves driver-reserved memory out of `used`, as nvidia-smi does; drivers before
        R510 only have version 1, whose `used` includes it."""
        if self._memory_v2:
            try:
                info = self._device_call(gpu, "nvmlDeviceGetMemoryInfo", pynvml.nvmlMemory_v2)
            except _Absent:
                self._memory_v2 = False
            else:
                return Memory(info.used, info.total)
        info = self._read(gpu, "nvmlDeviceGetMemoryInfo")
        return None if info is None else Memory(info.used, info.total)

    def temperature(self, gpu: int) -> int | None:
        """°C, nvidia-smi temperature.gpu."""
        return self._read(gpu, "nvmlDeviceGetTemperature", pynvml.NVML_TEMPERATURE_GPU)

    def power_usage(self, gpu: int) -> int | None:
        """mW, nvidia-smi power.draw."""
        return self._read(gpu, "nvmlDeviceGetPowerUsage")

    def power_limit(self, gpu: int) -> int | None:
        """mW, nvidia-smi enforced.power.limit."""
        return self._read(gpu, "nvmlDeviceGetEnforcedPowerLimit")

    def sm_clock(self, gpu: int) -> int | None:
        """MHz, nvidia-smi clocks.sm."""
        return self._read(gpu, "nvmlDeviceGetClockInfo", pynvml.NVML_CLOCK_SM)

    def clocks_event_reasons(self, gpu: int) -> ClocksEvent | None:
        reasons = self._read(gpu, "nvmlDeviceGetCurrentClocksEventReasons")
        return None if reasons is None else ClocksEvent(reasons & _CLOCKS_EVENTS)

    def pcie_throughput(self, gpu: int, direction: Literal["rx", "tx"]) -> int | None:
        """KB/s over a 20 ms window that this call blocks for; used only where the byte counters are absent."""
        counter = pynvml.NVML_PCIE_UTIL_RX_BYTES if direction == "rx" else pynvml.NVML_PCIE_UTIL_TX_BYTES
        return self._read(gpu, "nvmlDeviceGetPcieThroughput", counter)

    def field_values(self, gpu: int) -> FieldValues:
        """Every `Field` in one call; a field the GPU does not support is left out."""
        answers = self._read(gpu, "nvmlDeviceGetFieldValues", _FIELD_IDS)
        values: dict[Field, float] = {}
        errors: dict[Field, str] = {}
        if answers is None:
            return FieldValues(values, errors)
        for field, answer in zip(_FIELDS, answers, strict=True):
            status = _member(answer, "nvmlReturn")
            if status == pynvml.NVML_SUCCESS:
                values[field] = getattr(_member(answer, "value"), _VALUE_MEMBERS[_member(answer, "valueType")])
            elif status == pynvml.NVML_ERROR_GPU_IS_LOST:
                raise GpuLost(gpu)
            elif status not in _ABSENT:
                errors[field] = str(pynvml.NVMLError(status))
        return FieldValues(values, errors)

    # --- Xid events --------------------------------------------------------------------------------

    def watch_xid(self, gpu: int) -> bool:
        """Deliver this GPU's critical Xid events to `wait_xid`; False where the GPU cannot report them."""
        try:
            if self._event_set is None:
                self._event_set = self._call("nvmlEventSetCreate")
            self._device_call(gpu, "nvmlDeviceRegisterEvents", pynvml.nvmlEventTypeXidCriticalError, self._event_set)
        except _Absent:
            return False
        return True

    def wait_xid(self, timeout_ms: int) -> XidEvent | None:
        """The next critical Xid event, or None when none arrived within `timeout_ms`."""
        try:
            data = self._call("nvmlEventSetWait_v2", self._event_set, timeout_ms)
        except NvmlError as error:
            if isinstance(error.__cause__, pynvml.NVMLError_Timeout):
                return None
            raise
        if data.eventType != pynvml.nvmlEventTypeXidCriticalError:
            return None
        return XidEvent(int(self._call("nvmlDeviceGetIndex", data.device)), int(data.eventData))


class _Absent(Exception):
    """NVML answered NotSupported or FunctionNotFound: the reading does not exist here."""

