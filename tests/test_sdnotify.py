"""The systemd notify protocol on a real AF_UNIX datagram socket: READY, RELOADING, STOPPING, WATCHDOG."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from structlog.testing import capture_logs

from agent.aggregate import Aggregator
from agent.catalogue import METRICS
from agent.loop import Agent
from agent.samples import Sample
from agent.sdnotify import Notifier, ServiceStatus, Watchdog
from agent.selfstats import AgentStats
from tests.fakes.host import FakeClock
from tests.fakes.systemd import NotifySocket

READY = "READY=1\nSTATUS=collecting and publishing"


def test_notifications_reach_a_socket_path(tmp_path: Path) -> None:
    systemd = NotifySocket(tmp_path / "notify")
    notifier = Notifier({"NOTIFY_SOCKET": systemd.address}, monotonic_ns=lambda: 123_456_789_000)
    assert notifier.ready() and notifier.reloading() and notifier.stopping() and notifier.watchdog()
    assert [systemd.receive() for _ in range(4)] == [
        READY, "RELOADING=1\nMONOTONIC_USEC=123456789", "STOPPING=1\nSTATUS=publishing what is left", "WATCHDOG=1",
    ]


def test_an_abstract_namespace_socket_is_named_with_an_at_sign() -> None:
    systemd = NotifySocket(f"@infrawatch-test-{uuid.uuid4().hex}")
    assert Notifier({"NOTIFY_SOCKET": systemd.address}).ready()
    assert systemd.receive() == READY


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert (notifier.enabled, notifier.ready()) == (False, False)


def test_a_vanished_socket_is_logged_once_and_never_raises(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with capture_logs() as logged:
        assert notifier.watchdog() is False
        assert notifier.watchdog() is False
    assert [(entry["event"], entry["state"]) for entry in logged] == [("sd_notify_failed", ["WATCHDOG=1"])]


def test_a_socket_that_comes_back_and_goes_again_is_logged_again(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    with capture_logs() as logged:
        assert notifier.watchdog() is False
        systemd = NotifySocket(tmp_path / "notify")  # systemd re-executed: the socket is back
        assert notifier.watchdog() is True
        systemd.close()
        (tmp_path / "notify").unlink()
        assert notifier.watchdog() is False
    assert [entry["event"] for entry in logged] == ["sd_notify_failed"] * 2


def test_the_watchdog_interval_is_half_of_watchdog_usec_and_only_for_this_process() -> None:
    notifier = Notifier({})
    assert Watchdog(notifier, {"WATCHDOG_USEC": "120000000"}, pid=42).interval == 60.0
    assert Watchdog(notifier, {"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "42"}, pid=42).interval == 60.0
    assert Watchdog(notifier, {"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "7"}, pid=42).interval is None
    assert Watchdog(notifier, {}, pid=42).interval is None
    assert Watchdog(notifier, {"WATCHDOG_USEC": "0"}, pid=42).interval is None


def test_pings_follow_progress_at_half_the_watchdog_period(tmp_path: Path) -> None:
    systemd = NotifySocket(tmp_path / "notify")
    clock = FakeClock(0.0)
    watchdog = Watchdog(Notifier({"NOTIFY_SOCKET": systemd.address}), {"WATCHDOG_USEC": "60000000"}, pid=1,
                        monotonic=clock)
    pinged_at = []
    for _ in range(8):  # a 10 s collect cycle for 80 s: pings at 0, 30 and 60 s
        before = len(systemd.pending())
        watchdog.progress()
        if len(systemd.pending()) > before:
            pinged_at.append(clock.now)
        clock.advance(10)
    assert pinged_at == [0.0, 30.0, 60.0]
    assert set(systemd.messages) == {"WATCHDOG=1"}


class StuckAfter:
    """A collector that answers `cycles` times, then hangs (a GPU fallen off the bus, a hung mount)."""

    name = "stuck"

    def __init__(self, cycles: int) -> None:
        self.cycles = cycles
        self.stuck = threading.Event()
        self.unstick = threading.Event()

    def collect(self) -> list[Sample]:
        if self.cycles == 0:
            self.stuck.set()
            self.unstick.wait(10)
            return []
        self.cycles -= 1
        return [METRICS["CPUUtilization"].sample(1.0)]


def test_ready_after_the_first_collection_then_no_ping_while_the_loop_is_stuck(tmp_path: Path) -> None:
    systemd = NotifySocket(tmp_path / "notify")
    notifier = Notifier({"NOTIFY_SOCKET": systemd.address})
    every_call_is_a_period_later = iter(range(0, 10_000, 30))
    status = ServiceStatus(notifier, Watchdog(notifier, {"WATCHDOG_USEC": "60000000"}, pid=1,
                                              monotonic=lambda: float(next(every_call_is_a_period_later))))
    collector = StuckAfter(cycles=3)
    agent = Agent(collectors=[collector], aggregator=Aggregator(), stats=AgentStats(), submit=lambda datums: None)
    stop = threading.Event()
    loop = threading.Thread(target=agent.run, args=(stop,), kwargs={
        "collect_interval": 0.001, "publish_interval": 60, "flush_phase": 0, "on_cycle": status.cycle_done})
    loop.start()
    assert collector.stuck.wait(10)
    assert systemd.pending() == [READY, "WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1"]
    stop.set()
    collector.unstick.set()
    loop.join(10)
    assert not loop.is_alive()
