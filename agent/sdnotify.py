"""The systemd notify protocol: READY, RELOADING, STOPPING and WATCHDOG datagrams to $NOTIFY_SOCKET.

Outside systemd (no $NOTIFY_SOCKET) every call is a no-op. A name starting with "@" is a socket in the
abstract namespace. Failing to notify is logged once and never stops the agent.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

from agent.logs import LogOnce

log = structlog.get_logger()

UNIT_WATCHDOG_SEC = 120  # WatchdogSec in systemd/infrawatch-agent.service (tests/test_systemd.py holds them equal)


class Notifier:
    def __init__(
        self,
        environ: Mapping[str, str] = os.environ,
        *,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._monotonic_ns = monotonic_ns
        self._warn = LogOnce(log)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *assignments: str) -> bool:
        if not self._address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(assignments).encode(), self._address)
        except OSError as error:
            self._warn.warning("notify", "sd_notify_failed", error=str(error), state=list(assignments))
            return False
        self._warn.reset("notify")
        return True

    def ready(self) -> bool:
        return self.send("READY=1", "STATUS=collecting and publishing")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd ≥ 253 tell this reload from an earlier one.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={self._monotonic_ns() // 1000}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=publishing what is left")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")


class Watchdog:
    """Pings systemd's watchdog at half of WatchdogSec, only when the main loop reports progress.

    A loop stuck in a collector never calls `progress`, the pings stop, and systemd restarts the service.
    """

    def __init__(
        self,
        notifier: Notifier,
        environ: Mapping[str, str] = os.environ,
        *,
        pid: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier
        self._monotonic = monotonic
        self._last: float | None = None
        self.interval = self._interval(environ, os.getpid() if pid is None else pid)

    @staticmethod
    def _interval(environ: Mapping[str, str], pid: int) -> float | None:
        """Half of WatchdogSec, or None when the watchdog is off or meant for another process."""
        usec = environ.get("WATCHDOG_USEC", "")
        owner = environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0 or (owner and owner != str(pid)):
            return None
        return int(usec) / 2e6

    def progress(self) -> None:
        if self.interval is None:
            return
        now = self._monotonic()
        if self._last is None or now - self._last >= self.interval:
            self._notifier.watchdog()
            self._last = now


class ServiceStatus:
    """What the main loop tells systemd: READY=1 after the first collection (again after each reload),
    then a watchdog ping whenever a collection cycle completes and half of WatchdogSec has passed."""

    def __init__(self, notifier: Notifier, watchdog: Watchdog) -> None:
        self._notifier = notifier
        self._watchdog = watchdog
        self._ready = False

    def cycle_done(self) -> None:
        if not self._ready:
            self._ready = True
            self._notifier.ready()
        self._watchdog.progress()

    def reloading(self) -> None:
        self._ready = False
        self._notifier.reloading()

    def stopping(self) -> None:
        self._notifier.stopping()
