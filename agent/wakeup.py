"""A stop flag that a signal handler may set.

`threading.Event.set` takes the lock that `Event.wait` holds for a moment on entry and exit. A signal
handler runs on the main thread between two bytecodes, possibly inside that moment, and would then wait
forever on a lock its own thread holds. `set` here only writes one byte to a pipe, which takes no lock.
"""

from __future__ import annotations

import contextlib
import os
import select


class WakeupFlag:
    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._set = False

    def set(self) -> None:
        self._set = True
        with contextlib.suppress(BlockingIOError):  # a full pipe already holds a wake-up
            os.write(self._write, b"!")

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """True as soon as the flag is set, False when `timeout` seconds pass first."""
        if not self._set:
            select.select([self._read], [], [], timeout)
        return self._set

    def clear(self) -> None:
        self._set = False
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)
