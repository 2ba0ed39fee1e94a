"""Replay with the spool's filesystem full: how many requests and datapoints go out for the real ones.

How it is measured: a tmpfs of --size-kib is mounted (root only: `mount -t tmpfs`), a spool on it takes
--datums datums of one datapoint each from an outage, and a filler file then takes all but --free-kib
of the filesystem. A Publisher and a Replayer, wired as `run_forever` wires them, replay against an
accepting recording client for --seconds of agent time in 0.2 s steps (the default 5 requests/s),
replaying whenever one is due, as the publish worker does; one live flush goes through at the end.
The spool's DELETE after each delivered request is what the full disk refuses (its COMMIT fails with
SQLITE_FULL). Reported: replay requests sent, datapoints published, and the real ones spooled.

    sudo .venv/bin/python bench/spool_full_disk.py [--seconds 20] [--datums 795] [--free-kib 32]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.aggregate import Datum  # noqa: E402
from agent.publisher import Publisher, RequestSizer  # noqa: E402
from agent.replay import Replayer  # noqa: E402
from agent.selfstats import AgentStats  # noqa: E402
from agent.spool import Spool  # noqa: E402

NAMESPACE = "InfraWatch"
STEP = 0.2  # seconds: the replay spacing at the default 5 requests/s


class Accepting:
    """CloudWatch that is up: accepts every request and counts it."""

    def __init__(self) -> None:
        self.requests = 0
        self.datapoints = 0

    def put_metric_data(self, **request: Any) -> dict[str, Any]:
        self.requests += 1
        self.datapoints += int(sum(sum(datum.get("Counts", [1])) for datum in request["MetricData"]))
        return {}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def tmpfs(size_kib: int) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="spool-full-") as directory:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", directory], check=True)
        try:
            yield Path(directory)
        finally:
            subprocess.run(["umount", directory], check=True)


def fill(directory: Path, leave_kib: int) -> None:
    """Write a filler file until the filesystem is full, then give back `leave_kib`."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as file, contextlib.suppress(OSError):  # ENOSPC: full
        while True:
            file.write(b"\0" * 4096)
    with open(filler, "r+b") as file:
        file.truncate(max(0, filler.stat().st_size - leave_kib * 1024))


def run(seconds: float, datums: int, size_kib: int, free_kib: int) -> dict[str, int]:
    now = time.time()
    with tmpfs(size_kib) as directory:
        stats = AgentStats()
        spool = Spool(directory / "spool.db", namespace=NAMESPACE, stats=stats)
        spool.put([Datum("GPUUtilization", (("InstanceId", "i-0123456789abcdef0"), ("GPU", str(n % 8))),
                         now - 60 * (datums - n), "Percent", (float(n % 100),), (1.0,)) for n in range(datums)],
                  "EndpointConnectionError")
        fill(directory, free_kib)
        client, clock = Accepting(), Clock()
        publisher = Publisher(client, NAMESPACE, stats=stats, sizer=RequestSizer(), on_undeliverable=spool.put,
                              monotonic=clock)
        replayer = Replayer(spool, publisher, monotonic=clock)
        for _ in range(round(seconds / STEP)):
            if replayer.due_in() == 0.0:
                replayer.replay_one()
            clock.now += STEP
        replay_requests = client.requests
        publisher.publish([Datum("Heartbeat", (("InstanceId", "i-0123456789abcdef0"),), now, "Count", (1.0,),
                                 (1.0,))])
        spool.close()
        return {"spooled": datums, "replay_requests": replay_requests, "requests": client.requests,
                "published": client.datapoints, "live_published": client.requests - replay_requests}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--datums", type=int, default=795)
    parser.add_argument("--size-kib", type=int, default=1024)
    parser.add_argument("--free-kib", type=int, default=32)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root, to mount a tmpfs", file=sys.stderr)
        return 2
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings and up
    result = run(args.seconds, args.datums, args.size_kib, args.free_kib)
    print(f"{args.seconds:g} s of replay, {args.free_kib} KiB free on a {args.size_kib} KiB tmpfs: "
          f"{result['replay_requests']} replay requests, {result['published']} datapoints published "
          f"for {result['spooled']} spooled (+1 live flush: {result['live_published']} request)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
