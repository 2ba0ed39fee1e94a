"""The StatsD UDP socket and the one thread that reads it.

The thread hands every datagram to a callback (the collector's `receive`) and carries on whatever the
callback or the socket does. It queues nothing itself: the kernel's receive buffer, set large, absorbs
bursts, and what overflows it is dropped by the kernel and counted there (`netstat -su`, "receive
buffer errors").
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import structlog

from agent.logs import LogOnce

log = structlog.get_logger()

DEFAULT_RECEIVE_BUFFER = 8 * 1024 * 1024
MAX_DATAGRAM = 65535  # larger than any UDP payload, so no datagram is ever truncated
ERROR_PAUSE = 0.1  # seconds between retries of a failing recv, so a broken socket does not spin a core
_SO_RCVBUFFORCE = 33  # Linux's <asm-generic/socket.h>; Python does not export it


class StatsdListener:
    """Binds on construction (so a taken port fails where the caller can decide); reads after `start`.

    `on_error()` is called for each datagram whose callback raised, to count it (CollectorErrors).
    """

    def __init__(
        self,
        on_packet: Callable[[bytes], None],
        *,
        address: tuple[str, int] = ("127.0.0.1", 8125),
        receive_buffer: int = DEFAULT_RECEIVE_BUFFER,
        error_pause: float = ERROR_PAUSE,
        on_error: Callable[[], None] = lambda: None,
        socket_factory: Callable[[int, int], Any] = socket.socket,
    ) -> None:
        self._on_packet = on_packet
        self._error_pause = error_pause
        self._on_error = on_error
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._socket = socket_factory(family, socket.SOCK_DGRAM)
        try:
            self.receive_buffer = _set_receive_buffer(self._socket, receive_buffer)
            self._socket.bind(address)
        except OSError:
            self._socket.close()
            raise
        host, port = self._socket.getsockname()[:2]
        self.address: tuple[str, int] = (host, port)
        self.packets = 0  # datagrams handed to on_packet so far
        self.callback_errors = 0
        self._processed = threading.Condition()
        self._waiters = 0
        self._closing = False  # drain what is queued, then stop
        self._stopping = False  # stop now; read per datagram, cheaper than Event.is_set
        self._stop = threading.Event()  # to pause on errors without delaying close
        self._warn = LogOnce(log)
        self._thread = threading.Thread(target=self._run, name="statsd-listener", daemon=True)

    def start(self) -> None:
        log.info("statsd_listening", address=f"{self.address[0]}:{self.address[1]}",
                 receive_buffer=self.receive_buffer)
        self._thread.start()

    def wait_for_packets(self, count: int, timeout: float) -> bool:
        """Block until `count` datagrams have been handled in total; False if `timeout` passed first."""
        with self._processed:
            self._waiters += 1
            try:
                return self._processed.wait_for(lambda: self.packets >= count, timeout)
            finally:
                self._waiters -= 1

    def close(self, timeout: float = 2.0) -> None:
        """Stop reading and release the port; safe to call more than once, or before `start`.

        Datagrams the kernel already holds are still handed to the callback first (for at most `timeout`
        seconds), so the agent's last collection on stop or reload includes every line sent before it."""
        self._closing = True
        # On Linux this makes recv return what is queued, then b"" once the queue is empty, even though an
        # unconnected UDP socket answers ENOTCONN.
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():  # a flood keeps the queue from emptying: stop at the next datagram
            self._stopping = True
            self._stop.set()
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("statsd_listener_did_not_stop", timeout_s=timeout)
        self._socket.close()

    def _run(self) -> None:
        while not self._stopping:
            try:
                packet = self._socket.recv(MAX_DATAGRAM)
            except OSError as error:
                if self._closing:
                    break
                self._warn.warning("recv", "statsd_receive_failed", error=str(error))
                self._stop.wait(self._error_pause)
                continue
            self._warn.reset("recv")
            if not packet and self._closing:
                break  # the queue is drained (a zero-length datagram sent while closing ends it too)
            try:
                self._on_packet(packet)
            except Exception:  # a bad packet must never stop the listener
                self.callback_errors += 1
                self._on_error()
                self._warn.warning("callback", "statsd_packet_failed", exc_info=True)
            self.packets += 1
            if self._waiters:
                with self._processed:
                    self._processed.notify_all()


def _set_receive_buffer(sock: Any, size: int) -> int:
    """Ask for `size` bytes; as root past net.core.rmem_max. Returns what the kernel granted."""
    if sys.platform == "linux":
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
            return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        except OSError:
            pass  # not root: the plain option, capped at net.core.rmem_max
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
