"""An HTTP proxy on loopback, in front of a moto server, that fails requests the way CloudWatch and networks do.

It is also the strict CloudWatch moto is not: a PutMetricData request CloudWatch would refuse (see
`tests.fakes.cloudwatch.refusal`) is answered HTTP 400 `InvalidParameterValue` naming `MetricData.member.N`,
in the protocol the request came in, and never reaches moto; a body over 1 MB is answered HTTP 413.

Faults apply to a ratio of requests (drawn from a seeded generator, so a run repeats exactly) and, when
given, only inside a window of the proxy's clock, which tests set to their simulated wall clock. Rules
can be switched while the proxy runs. Everything not failed is forwarded to the upstream unchanged.

The Throttling answer is what CloudWatch sends in the JSON protocol botocore speaks to it: HTTP 400, a
body `{"__type": "Throttling", ...}` and the `x-amzn-query-error: Throttling;Sender` header, from which
botocore's JSON parser takes the query-protocol error code `Throttling`.
"""

from __future__ import annotations

import enum
import gzip
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
from typing import Any
from urllib.parse import urlsplit

from moto.core import cbor

from tests.fakes.cloudwatch import MOST_BYTES, decode, refusal

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Fault(enum.Enum):
    UNAVAILABLE = "unavailable"  # HTTP 503 with an empty body, as a load balancer in trouble answers
    THROTTLE = "throttle"  # HTTP 400 Throttling, as CloudWatch answers past its request quota
    RESET = "reset"  # the connection is reset before any answer
    DELAY = "delay"  # no answer for `delay` seconds (past the client's read timeout), then a reset
    LOST_ANSWER = "lost_answer"  # forwarded and stored upstream, but the answer never comes: delay, then reset


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
        self,
        upstream: str,
        *,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        delay: float = 1.0,
        check_timestamps: bool = True,
    ) -> None:
        """`clock` also dates the timestamp check; `check_timestamps=False` leaves that check out, for tests
        whose datums carry simulated times and that do not move the proxy's clock with them."""
        target = urlsplit(upstream)
        self._upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self._clock = clock
        self._random = random.Random(seed)
        self._delay = delay
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._released = threading.Event()
        self._check_timestamps = check_timestamps
        self.outcomes: Counter[str] = Counter()  # "forwarded", "refused" or a Fault's value, per request
        self.refused: list[str] = []  # CloudWatch's message for each refused request
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        # A short poll interval: shutdown() waits for the serving loop to look, 0.5 s by default, in every test.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="faultproxy", daemon=True)

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
            return None

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def _refusal(self, path: str, headers: Any, body: bytes) -> tuple[int, str] | None:
        """(status, message) CloudWatch would refuse this request with, or None. The operation is named by
        the X-Amz-Target header (JSON protocol) or the URL path (RPC v2 CBOR)."""
        if not (headers.get("X-Amz-Target", "").endswith(".PutMetricData") or path.endswith("/PutMetricData")):
            return None
        if headers.get("Content-Encoding", "") == "gzip":
            body = gzip.decompress(body)
        if len(body) > MOST_BYTES:
            return 413, f"Request size {len(body)} exceeded {MOST_BYTES} bytes"
        now = self._clock() if self._check_timestamps else None
        message = refusal(decode(body, headers.get("Content-Type", "")), now)
        if message is None:
            return None
        with self._lock:
            self.refused.append(message)
        return 400, message

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
            # The headers and the body leave in two writes; with Nagle's algorithm on, the body waits for the
            # client's delayed ACK of the headers (40 ms on Linux), on every request a test makes.
            disable_nagle_algorithm = True

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
                elif fault is Fault.LOST_ANSWER:
                    self._forward(body, answer=False)
                    proxy._released.wait(proxy._delay)
                    self._reset()
                elif (refused := proxy._refusal(self.path, self.headers, body)) is not None:
                    proxy._count("refused")
                    self._refuse(*refused)
                else:
                    proxy._count("forwarded")
                    self._forward(body)

            def do_GET(self) -> None:
                self._forward(b"")  # moto's own API (state resets, inspection) passes straight through

            def do_PUT(self) -> None:  # S3 uploads and the like: other services pass straight through
                self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            do_DELETE = do_PUT

            def do_HEAD(self) -> None:
                self._forward(b"", head=True)

            def _refuse(self, status: int, message: str) -> None:
                """CloudWatch's answer, in the request's protocol: the code botocore reports comes from the
                query-compatible `x-amzn-query-error` header, as the real service sends it."""
                error = {"__type": "com.amazonaws.cloudwatch#InvalidParameterValueException", "message": message}
                code = "InvalidParameterValue" if status == 400 else "RequestEntityTooLarge"
                if "cbor" in self.headers.get("Content-Type", ""):
                    payload, kind = cbor.dumps(error), {"Content-Type": "application/cbor",
                                                        "smithy-protocol": "rpc-v2-cbor"}
                else:
                    payload, kind = json.dumps(error).encode(), {"Content-Type": "application/x-amz-json-1.0"}
                self._answer(status, payload, {**kind, "x-amzn-query-error": f"{code};Sender"})

            def _forward(self, body: bytes, *, answer: bool = True, head: bool = False) -> None:
                upstream = http.client.HTTPConnection(*proxy._upstream, timeout=30)
                try:
                    headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    kept = {name: value for name, value in response.getheaders()
                            if name.lower() not in HOP_BY_HOP and (head or name.lower() != "content-length")}
                    if head:  # the length of what a GET would return, and no body
                        self.send_response(response.status)
                        for name, value in kept.items():
                            self.send_header(name, value)
                        self.end_headers()
                    elif answer:
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
