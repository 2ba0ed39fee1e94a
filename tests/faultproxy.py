"""An HTTP proxy on loopback, in front of a moto server, that fails requests the way CloudWatch and networks do.

Faults apply to a ratio of requests (drawn from a seeded generator, so a run repeats exactly) and, when
given, only inside a window of the proxy's clock, which tests set to their simulated wall clock. Rules
can be switched while the proxy runs. Everything not failed is forwarded to the upstream unchanged.

The Throttling answer is what CloudWatch sends in the JSON protocol botocore speaks to it: HTTP 400, a
body `{"__type": "Throttling", ...}` and the `x-amzn-query-error: Throttling;Sender` header, from which
botocore's JSON parser takes the query-protocol error code `Throttling`.
"""

from __future__ import annotations

import enum
import http.client
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Fault(enum.Enum):
    UNAVAILABLE = "unavailable"  # HTTP 503 with an empty body, as a load balancer in trouble answers
    THROTTLE = "throttle"  # HTTP 400 Throttling, as CloudWatch answers past its request quota
    RESET = "reset"  # the connection is reset before any answer
    DELAY = "delay"  # no answer for `delay` seconds (past the client's read timeout), then a reset


@dataclass(frozen=True)
class Rule:
    fault: Fault
    ratio: float = 1.0
    start: float | None = None  # window on the proxy's clock; None: open-ended
    end: float | None = None

    def covers(self, now: float) -> bool:
        return (self.start is None or now >= self.start) and (self.end is None or now < self.end)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that timed out and left is expected here, not an error worth a traceback."""


class FaultProxy:
    def __init__(
        self, upstream: str, *, clock: Callable[[], float] = time.time, seed: int = 0, delay: float = 1.0
    ) -> None:
        target = urlsplit(upstream)
        self._upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self._clock = clock
        self._random = random.Random(seed)
        self._delay = delay
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._released = threading.Event()
        self.outcomes: Counter[str] = Counter()  # "forwarded" or a Fault's value, per request
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()  # cut delayed requests short
        self._server.shutdown()
        self._server.server_close()

    def inject(self, fault: Fault, *, ratio: float = 1.0, start: float | None = None, end: float | None = None) -> None:
        """Fail `ratio` of the requests (inside the window, if given) with `fault`, replacing earlier rules."""
        with self._lock:
            self._rules = [Rule(fault, ratio, start, end)]

    def heal(self) -> None:
        with self._lock:
            self._rules = []

    def _decide(self) -> Fault | None:
        with self._lock:
            now = self._clock()
            for rule in self._rules:
                if rule.covers(now) and self._random.random() < rule.ratio:
                    self.outcomes[rule.fault.value] += 1
                    return rule.fault
            self.outcomes["forwarded"] += 1
            return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fault = proxy._decide()
                if fault is Fault.UNAVAILABLE:
                    self._answer(503, b"", {"Content-Type": "text/plain"})
                elif fault is Fault.THROTTLE:
                    self._answer(400, json.dumps({"__type": "Throttling", "message": "Rate exceeded"}).encode(), {
                        "Content-Type": "application/x-amz-json-1.0",
                        "x-amzn-query-error": "Throttling;Sender",
                    })
                elif fault is Fault.RESET:
                    self._reset()
                elif fault is Fault.DELAY:
                    proxy._released.wait(proxy._delay)
                    self._reset()
                else:
                    self._forward(body)

            def _forward(self, body: bytes) -> None:
                upstream = http.client.HTTPConnection(*proxy._upstream, timeout=30)
                try:
                    headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    kept = {name: value for name, value in response.getheaders()
                            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"}
                    self._answer(response.status, payload, kept)
                finally:
                    upstream.close()

            def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _reset(self) -> None:
                # Linger 0: close() sends RST instead of FIN, as a crashed or overloaded peer does.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

        return Handler
