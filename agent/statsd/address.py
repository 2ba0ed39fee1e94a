"""`host:port` strings, as `statsd.address` and the meter's INFRAWATCH_STATSD_ADDRESS spell them."""

from __future__ import annotations


def split_host_port(text: str) -> tuple[str, int]:
    """("127.0.0.1", 8125) from "127.0.0.1:8125"; IPv6 hosts go in brackets: "[::1]:8125"."""
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise ValueError('must be "host:port"')
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ValueError('must be "[ipv6]:port" for an IPv6 host')
        host = host[1:-1]
    elif ":" in host:
        raise ValueError('must put an IPv6 host in brackets, as "[::1]:8125"')
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("port must be 1..65535")
    return host, int(port)
