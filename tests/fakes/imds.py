"""An IMDSv2-only instance metadata service on loopback, with named scenarios.

PUT /latest/api/token hands out a session token; every GET must carry a valid one, else 401, as on an
instance whose metadata options require IMDSv2. Tags are served only when the instance allows them.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GPU_HOST_IDENTITY = {
    "instanceId": "i-0123456789abcdef0",
    "instanceType": "p5.48xlarge",
    "imageId": "ami-0fedcba9876543210",
    "availabilityZone": "us-east-1a",
    "region": "us-east-1",
    "accountId": "123456789012",
}


class FakeImds:
    def __init__(self, *, tags: dict[str, str] | None = None, delay: float = 0.0,
                 document: dict[str, Any] | None = None) -> None:
        """`tags` None: the instance does not allow tags in metadata (404). `delay`: seconds before each answer."""
        self.document = document or GPU_HOST_IDENTITY
        self.tags = tags
        self.delay = delay
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, token or TTL header)
        self.tokens: set[str] = set()  # the valid ones
        self.issued = 0
        self.release = threading.Event()  # ends every pending delay at once (teardown)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # http.server would print every request to stderr

            def do_PUT(self) -> None:
                ttl = self.headers.get("x-aws-ec2-metadata-token-ttl-seconds")
                fake.requests.append(("PUT", self.path, ttl))
                fake.release.wait(fake.delay)
                if self.path != "/latest/api/token" or ttl is None:
                    self._answer(400, "")
                    return
                fake.issued += 1
                token = f"token-{fake.issued}"
                fake.tokens.add(token)
                self._answer(200, token)

            def do_GET(self) -> None:
                token = self.headers.get("x-aws-ec2-metadata-token")
                fake.requests.append(("GET", self.path, token))
                fake.release.wait(fake.delay)
                if token not in fake.tokens:
                    self._answer(401, "")
                    return
                status, body = fake.answer(self.path)
                self._answer(status, body)

            def _answer(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"

    def answer(self, path: str) -> tuple[int, str]:
        if path == "/latest/dynamic/instance-identity/document":
            return 200, json.dumps(self.document)
        if path.startswith("/latest/meta-data/tags/instance") and self.tags is not None:
            key = path.removeprefix("/latest/meta-data/tags/instance").strip("/")
            if not key:
                return 200, "\n".join(sorted(self.tags))
            if key in self.tags:
                return 200, self.tags[key]
        return 404, ""

    def revoke_tokens(self) -> None:
        """As if every token expired early: the next GET gets 401."""
        self.tokens.clear()

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.requests]

    def __enter__(self) -> FakeImds:
        threading.Thread(target=self._server.serve_forever, args=(0.02,), name="fake imds", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
