"""systemd's side of the notify protocol: a real AF_UNIX datagram socket that records what it is told."""

from __future__ import annotations

import socket
from pathlib import Path


class NotifySocket:
    """Bound at `path` (or in the abstract namespace when `path` starts with "@"), like $NOTIFY_SOCKET."""

    def __init__(self, path: str | Path) -> None:
        self.address = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.address[1:] if self.address.startswith("@") else self.address)
        self.messages: list[str] = []

    def receive(self, timeout: float = 10.0) -> str:
        self._sock.settimeout(timeout)
        message = self._sock.recv(4096).decode()
        self.messages.append(message)
        return message

    def wait_for(self, line: str, timeout: float = 10.0) -> list[str]:
        """Every message up to and including the first containing `line`."""
        seen = []
        while True:
            message = self.receive(timeout)
            seen.append(message)
            if line in message.splitlines():
                return seen

    def pending(self) -> list[str]:
        """Messages already queued, without waiting."""
        self._sock.setblocking(False)
        try:
            while True:
                self.messages.append(self._sock.recv(4096).decode())
        except BlockingIOError:
            return self.messages
        finally:
            self._sock.setblocking(True)

    def close(self) -> None:
        self._sock.close()
