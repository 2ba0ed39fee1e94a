"""Running provision-alarms against moto with every AWS call counted through botocore's own event hooks."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from provisioning.aws import Clients
from provisioning.cli import main
from tests.fakes.host import FakeClock

WRITE_VERBS = ("Put", "Create", "Delete", "Set", "Tag", "Untag", "Remove", "Subscribe", "Unsubscribe", "Publish")


def is_write(operation: str) -> bool:
    return operation.startswith(WRITE_VERBS)


class CallRecorder:
    """Every API call any client of `session` makes, by operation name, from the `before-call` event."""

    def __init__(self, session: boto3.Session) -> None:
        self.calls: list[str] = []
        session.events.register("before-call", self._record)

    def _record(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)

    @property
    def writes(self) -> Counter[str]:
        return Counter(call for call in self.calls if is_write(call))

    def clear(self) -> None:
        self.calls.clear()


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


class Provisioner:
    """`provision-alarms` in-process against moto (call inside `mock_aws`), never sleeping, calls recorded."""

    def __init__(self, directory: Path) -> None:
        self.session = boto3.Session(region_name="us-east-1")
        self.recorder = CallRecorder(self.session)
        self.clients = Clients(self.session)
        self.clock = FakeClock()
        self._spec = directory / "alarms.toml"

    def client(self, service: str) -> Any:
        """A client for checking state; its calls are recorded too, so clear the recorder after using it."""
        return self.clients[service]

    def run(self, spec: str, *args: str, confirm: Callable[[str], bool] | None = None) -> Run:
        self._spec.write_text(spec)
        self.recorder.clear()
        out, err = io.StringIO(), io.StringIO()
        code = main(
            ["--config", str(self._spec), *args],
            clients=self.clients, clock=self.clock, sleep=self.clock.sleep, confirm=confirm, out=out, err=err,
        )
        return Run(code, out.getvalue(), err.getvalue())
