"""Building the StatsD listener from the config: on, off, a taken port, and a clean close."""

from __future__ import annotations

import socket
import threading

from structlog.testing import capture_logs

from agent.config import parse
from agent.statsd.service import start_statsd
from tests.conftest import free_port

WAIT = 10.0  # seconds; only reached when a test is failing


def test_listens_on_the_configured_address_and_close_stops_it() -> None:
    port = free_port()
    drops: list[tuple[str, int]] = []
    service = start_statsd(
        parse({"dimensions": {"Team": "ml"}, "statsd": {"address": f"127.0.0.1:{port}", "dimension_keys": ["model"]}}),
        on_drop=lambda reason, count: drops.append((reason, count)),
    )
    assert service is not None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"Rows:3|c|#model:llama", ("127.0.0.1", port))
        assert service.listener.wait_for_packets(1, WAIT)
        rows = [s for s in service.collect() if s.name == "Rows"]
        assert [(s.value, s.unit, s.dimensions) for s in rows] == [(3.0, "Count", (("model", "llama"),))]
    finally:
        service.close()
    assert not any(thread.name == "statsd-listener" and thread.is_alive() for thread in threading.enumerate())
    assert drops == []


def test_room_left_for_tag_dimensions_is_30_less_instance_id_and_static_dimensions() -> None:
    port = free_port()
    keys = [f"k{index:02d}" for index in range(30)]
    static = {f"Static{index}": "x" for index in range(3)}
    config = parse({"dimensions": static, "statsd": {"address": f"127.0.0.1:{port}", "dimension_keys": keys}})
    service = start_statsd(config)
    assert service is not None
    try:
        service.collector.receive(("Rows:1|c|#" + ",".join(f"{key}:v" for key in keys)).encode())
        rows = [s for s in service.collect() if s.name == "Rows"]
        assert len(rows[0].dimensions) == 30 - 1 - 3
    finally:
        service.close()


def test_disabled_builds_nothing() -> None:
    assert start_statsd(parse({"statsd": {"enabled": False}})) is None


def test_a_taken_port_is_a_warning_and_the_agent_runs_on() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with capture_logs() as logs:
            assert start_statsd(parse({"statsd": {"address": address}})) is None
    assert [(log["event"], log["address"], log["error"]) for log in logs] == [
        ("statsd_unavailable", address, "[Errno 98] Address already in use")
    ]
