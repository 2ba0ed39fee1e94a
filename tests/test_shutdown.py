"""Closing the publish worker: one last attempt, retries cut short, and every unsent datum spooled exactly once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import botocore.exceptions

from agent.aggregate import Datum
from agent.loop import PublishWorker
from agent.publisher import Publisher, RequestSizer
from agent.selfstats import AgentStats
from agent.spool import Spool
from tests.fakes.cloudwatch import RecordingClient, client_error

NOW = 1_790_000_040.0
HOST = (("InstanceId", "i-0abc"),)
SIZER = RequestSizer()


def datum(minute: int, name: str = "GPUUtilization") -> Datum:
    return Datum(name, HOST, NOW + 60 * minute, "Percent", (50.0, 75.0), (2.0, 3.0))


def wait_for_publisher_threads() -> None:
    deadline = time.monotonic() + 5
    while any(t.name == "publisher" and t.is_alive() for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def spooled(spool: Spool) -> list[Datum]:
    return sorted(d for _, _, d in spool.oldest(10_000))


def test_close_cuts_a_retry_backoff_short_and_spools_the_batch_once(tmp_path: Path) -> None:
    first_attempt = threading.Event()

    def throttled(n: int, request: dict[str, Any]) -> BaseException:
        first_attempt.set()
        return client_error("Throttling", 400, "Rate exceeded")

    client = RecordingClient(fail=throttled)
    stats = AgentStats()
    spool = Spool(tmp_path / "spool.db", namespace="InfraWatch", stats=stats, wall_clock=lambda: NOW)
    # The real, abortable backoff sleep; with a 30 s deadline and 8 s backoffs only abort() ends it soon.
    publisher = Publisher(client, "InfraWatch", stats=stats, sizer=SIZER, on_undeliverable=spool.put,
                          retry_deadline=30.0, backoff_base=8.0)
    worker = PublishWorker(publisher)
    worker.submit([datum(0), datum(1)])
    worker.submit([datum(2)])
    assert first_attempt.wait(5)
    started = time.monotonic()
    assert worker.close(timeout=5.0) is True
    assert time.monotonic() - started < 1.0
    assert spooled(spool) == [datum(0), datum(1), datum(2)]
    assert (spool.datapoints, stats.published, stats.dropped) == (15, 0, {})
    # Once aborted, the queued batch gets exactly one attempt before it is spooled.
    assert sum(1 for request in client.calls if len(request["MetricData"]) == 1) == 1


class StuckClient(RecordingClient):
    """Never answers until the test lets it fail, as an endpoint that accepts and stays silent."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def put_metric_data(self, **request: Any) -> dict[str, Any]:
        self.calls.append(request)
        self.entered.set()
        self.release.wait(10)
        raise botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1")


def test_a_request_stuck_past_the_timeout_is_taken_over_and_spooled_once(tmp_path: Path) -> None:
    client = StuckClient()
    stats = AgentStats()
    spool = Spool(tmp_path / "spool.db", namespace="InfraWatch", stats=stats, wall_clock=lambda: NOW)
    publisher = Publisher(client, "InfraWatch", stats=stats, sizer=SIZER, on_undeliverable=spool.put)
    worker = PublishWorker(publisher)
    worker.submit([datum(0)])
    assert client.entered.wait(5)
    worker.submit([datum(1), datum(2)])
    started = time.monotonic()
    assert worker.close(timeout=0.2) is False
    assert 0.2 <= time.monotonic() - started < 1.0
    assert spooled(spool) == [datum(0), datum(1), datum(2)]
    client.release.set()  # the stuck request fails late: the worker must not spool its batch again
    wait_for_publisher_threads()
    assert spooled(spool) == [datum(0), datum(1), datum(2)]
    assert (spool.datapoints, stats.dropped, len(client.calls)) == (15, {}, 1)


def test_without_a_spool_what_is_left_at_close_is_counted_as_dropped() -> None:
    client = StuckClient()
    stats = AgentStats()
    worker = PublishWorker(Publisher(client, "InfraWatch", stats=stats, sizer=SIZER))
    worker.submit([datum(0), datum(1)])
    assert client.entered.wait(5)
    assert worker.close(timeout=0.1) is False
    assert stats.dropped == {"undeliverable": 10}
    client.release.set()
    wait_for_publisher_threads()
    assert stats.dropped == {"undeliverable": 10}
