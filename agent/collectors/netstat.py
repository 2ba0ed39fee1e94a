"""TCP connection states from /proc/net/tcp and /proc/net/tcp6, for the CloudWatch agent's netstat series.

The agent's netstat input counts the state of every TCP socket gopsutil lists (net.Connections("all"):
/proc/net/tcp and tcp6, plus a walk of every process's file descriptors to name owners, which is what
makes it expensive). Counting the state column of the two tables gives the same counts without the walk.
An IPv4 socket on a dual-stack listener appears once, in tcp6, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.catalogue import METRICS
from agent.samples import Sample

TABLES = ("net/tcp", "net/tcp6")
# The kernel's TCP state numbers as the `st` column writes them (include/net/tcp_states.h).
STATES = (("01", "TCPEstablished"), ("06", "TCPTimeWait"))


def count_states(table: str, counts: dict[str, int]) -> None:
    """Add the sockets of one /proc/net/tcp* table to `counts`, keyed by the hex state."""
    for line in table.splitlines()[1:]:  # the first line is the header
        fields = line.split(None, 4)
        if len(fields) > 3:
            counts[fields[3]] = counts.get(fields[3], 0) + 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:  # no IPv6 in this kernel: that family has no sockets
        return None


class NetstatCollector:
    name = "netstat"

    def __init__(self, *, read: Callable[[Path], str | None] = _read, proc: Path = Path("/proc")) -> None:
        self._read = read
        self._proc = proc

    def collect(self) -> list[Sample]:
        counts: dict[str, int] = {}
        tables = [self._read(self._proc / table) for table in TABLES]
        if all(table is None for table in tables):
            raise FileNotFoundError(f"none of {', '.join(TABLES)} under {self._proc}")
        for table in tables:
            if table is not None:
                count_states(table, counts)
        return [METRICS[metric].sample(counts.get(state, 0)) for state, metric in STATES]
