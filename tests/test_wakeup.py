"""The stop flag signal handlers set: it must wake a waiter at once and never take a lock."""

from __future__ import annotations

import signal
import time
from types import FrameType

from agent.wakeup import WakeupFlag


def test_a_signal_handler_setting_the_flag_wakes_the_waiting_main_thread() -> None:
    flag = WakeupFlag()

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        flag.set()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        started = time.monotonic()
        assert flag.wait(30) is True
        assert time.monotonic() - started < 5  # woken by the handler, not by the 30 s timeout
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        flag.close()


def test_wait_times_out_and_clear_resets_after_many_sets() -> None:
    flag = WakeupFlag()
    assert flag.wait(0) is False
    for _ in range(100_000):  # more wake-ups than the pipe holds: set never blocks
        flag.set()
    assert (flag.is_set(), flag.wait(0)) == (True, True)
    flag.clear()
    assert (flag.is_set(), flag.wait(0)) == (False, False)
    flag.close()
