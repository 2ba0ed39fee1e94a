"""Shared fixtures. No test reaches real AWS: credentials are fake and every endpoint is moto."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

REPO = Path(__file__).resolve().parent.parent

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # Keep botocore from asking a real instance metadata service for credentials or region.
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="session", autouse=True)
def strict_cloudwatch() -> Iterator[None]:
    """Every botocore session made from now on (boto3's default session, which `mock_aws` replaces, and
    any other) answers the PutMetricData requests CloudWatch would refuse as CloudWatch does, the way moto
    hooks its own `before-send` in: through botocore's builtin handlers."""
    import botocore.handlers

    from tests.fakes.cloudwatch import refuse_before_sending

    hook = ("before-call.cloudwatch.PutMetricData", refuse_before_sending)
    botocore.handlers.BUILTIN_HANDLERS.append(hook)
    yield
    botocore.handlers.BUILTIN_HANDLERS.remove(hook)


def use_fake_aws(patch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region, no profile, config file or endpoint from the developer's environment."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_CLOUDWATCH", "AWS_CONFIG_FILE"):
        patch.delenv(name, raising=False)
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    for name, value in FAKE_AWS_ENV.items():
        patch.setenv(name, value)


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fake_aws(monkeypatch)


@pytest.fixture(autouse=True)
def default_logging() -> Iterator[None]:
    """The CLIs configure structlog for the whole process (level filter, stream): put its defaults back
    after each test, so what a test's capture_logs() sees never depends on which test ran before it."""
    yield
    structlog.reset_defaults()


def tool(name: str) -> str:
    """The path of a real tool a test drives (promtool, prometheus, systemd-analyze). `make test` installs
    them from Debian's packages when it runs as root; in CI a missing one fails the test, never skips it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: `make test` installs it as root (see .ci/os-tools)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release wheel, built once per run by the real build backend (`make dist` builds the same).

    Under pytest-xdist (`make test` runs two workers) the first worker to get here builds it into the run's
    shared temporary directory while holding a lock, and the other takes that wheel: two builds at once
    would also share the checkout's build/ directory, which setuptools writes into."""
    import fcntl
    import subprocess
    import sys

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    out = tmp_path_factory.mktemp("dist") if worker is None else tmp_path_factory.getbasetemp().parent / "dist"
    out.mkdir(exist_ok=True)
    with (out / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not list(out.glob("infrawatch-*.whl")):
            subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)],
                           check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("infrawatch-*.whl")
    return wheel


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def moto_upstream() -> Iterator[str]:
    """One moto server over real HTTP on loopback for the whole run: stopping one takes half a second
    (werkzeug's poll interval), and tests that use it reset its state as they start (`serving_moto`)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def reset_moto(upstream: str) -> None:
    """Empty every moto backend: they are global to the process, shared by every server it starts and by
    mock_aws, so one test never reads another's metrics."""
    urllib.request.urlopen(urllib.request.Request(f"{upstream}/moto-api/reset", method="POST"), timeout=10).close()


@contextlib.contextmanager
def serving_moto(upstream: str) -> Iterator[str]:
    """The moto server at `upstream`, emptied, behind the strict fault proxy (no faults: it refuses what
    CloudWatch would); yields the proxy's URL."""
    from tests.faultproxy import FaultProxy

    reset_moto(upstream)
    with FaultProxy(upstream, check_timestamps=False) as strict:  # tests' datums carry simulated times
        yield strict.url


@pytest.fixture
def moto_server(moto_upstream: str) -> Iterator[str]:
    """`serving_moto`, one per test: state is per test."""
    with serving_moto(moto_upstream) as url:
        yield url


@pytest.fixture
def listener(statsd: Any) -> Iterator[Any]:
    """A StatsD listener on an ephemeral loopback port feeding the module's `statsd` collector fixture."""
    from agent.statsd.listener import StatsdListener

    listening = StatsdListener(statsd.receive, address=("127.0.0.1", 0))
    listening.start()
    yield listening
    listening.close()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The order seed on the last lines, where `-q` still shows it (pytest-randomly's own line is in the
    header, which `-q` hides): a failure that depends on order can then be rerun as it happened."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int):
        terminalreporter.write_line(f"test order: random, seed {seed} (rerun it: pytest --randomly-seed={seed})")
