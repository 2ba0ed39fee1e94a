"""StatsD ingest: lines per second the listener takes from another process over loopback, without loss.

A sender process offers a ramp of paced rates (and one unpaced run: as fast as it can send), first in
single-line datagrams, then in 20-line datagrams. For each step it reports what was sent and received,
the ingest rate (lines received / time from the first send to the last line handled) and the
listener process's CPU seconds per million lines; then the collector's total is checked against the
lines received. Medians over --repeats runs of the ramp.

    .venv/bin/python bench/statsd_ingest.py [--repeats 3] [--step-seconds 1.5]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import structlog

from agent.statsd.collector import StatsdCollector
from agent.statsd.listener import StatsdListener

SINGLE = b"SamplesProcessed:32|c|#model:llama"
BATCH = b"\n".join(b"Stage%02dSamples:32|c|#model:llama" % index for index in range(20))
RAMPS = {  # offered lines per second; 0 = unpaced
    1: (50_000, 100_000, 0),
    20: (200_000, 300_000, 400_000, 500_000, 600_000, 0),
}
QUIET = 0.5  # seconds without progress after which the remaining datagrams count as lost


def sender(connection: Connection, address: tuple[str, int]) -> None:
    """Runs in its own process: for each (packet, lines per packet, rate, seconds) sends paced datagrams."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    while True:
        job = connection.recv()
        if job is None:
            return
        packet, lines_per_packet, rate, seconds = job
        interval = lines_per_packet / rate if rate else 0.0
        sent = 0
        start = time.perf_counter()
        while True:
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
            due = int(elapsed / interval) + 1 if interval else sent + 64
            while sent < due:
                try:
                    sock.sendto(packet, address)
                except BlockingIOError:
                    break
                sent += 1
        connection.send((sent, time.perf_counter() - start))


@dataclass
class Step:
    lines_per_packet: int
    offered: int
    sent_lines: int
    received_lines: int
    send_rate: float
    ingest_rate: float
    cpu_per_million: float

    @property
    def lost(self) -> int:
        return self.sent_lines - self.received_lines


def run_step(
    connection: Connection, listener: StatsdListener, statsd: StatsdCollector,
    lines_per_packet: int, rate: int, seconds: float,
) -> Step:
    packet = SINGLE if lines_per_packet == 1 else BATCH
    statsd.collect()
    before_packets = listener.packets
    cpu_start = time.process_time()
    start = time.perf_counter()
    connection.send((packet, lines_per_packet, rate, seconds))
    sent_packets, send_seconds = connection.recv()
    last, last_change = listener.packets, time.perf_counter()
    while listener.packets - before_packets < sent_packets and time.perf_counter() - last_change < QUIET:
        time.sleep(0.01)
        if listener.packets != last:
            last, last_change = listener.packets, time.perf_counter()
    done = last_change if listener.packets - before_packets < sent_packets else time.perf_counter()
    cpu = time.process_time() - cpu_start
    received_packets = listener.packets - before_packets
    received_lines = received_packets * lines_per_packet
    counted = sum(s.value for s in statsd.collect() if s.name.endswith(("Samples", "SamplesProcessed")))
    assert counted == 32 * received_lines, (counted, received_lines)
    return Step(
        lines_per_packet, rate, sent_packets * lines_per_packet, received_lines,
        sent_packets * lines_per_packet / send_seconds, received_lines / (done - start),
        cpu / received_lines * 1e6 if received_lines else float("nan"),
    )


def in_process_ns_per_line(packet: bytes, lines_per_packet: int, calls: int = 20_000, runs: int = 7) -> list[float]:
    """The listener's own work per line (parse and aggregate, no socket), one figure per run."""
    statsd = StatsdCollector()
    results = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        for _ in range(calls // lines_per_packet):
            statsd.receive(packet)
        results.append((time.perf_counter_ns() - start) / (calls // lines_per_packet * lines_per_packet))
        statsd.collect()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    # Long enough that the 16 MiB receive buffer cannot hide a rate the listener does not sustain.
    parser.add_argument("--step-seconds", type=float, default=1.5)
    args = parser.parse_args()
    structlog.configure(  # stdout is the report; the listener's logs go to stderr
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )

    load = os.getloadavg()
    statsd = StatsdCollector()
    listener = StatsdListener(statsd.receive, address=("127.0.0.1", 0))
    listener.start()
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=sender, args=(child, listener.address))
    process.start()
    steps: dict[tuple[int, int], list[Step]] = {}
    try:
        for _ in range(args.repeats):
            for lines_per_packet, ramp in RAMPS.items():
                for rate in ramp:
                    step = run_step(parent, listener, statsd, lines_per_packet, rate, args.step_seconds)
                    steps.setdefault((lines_per_packet, rate), []).append(step)
    finally:
        parent.send(None)
        process.join()
        listener.close()

    print("## StatsD ingest over loopback from a sender process\n")
    print(
        f"Receive buffer {listener.receive_buffer:,} bytes; {args.repeats} runs of {args.step_seconds} s per step; "
        f"medians. Datagrams: `{SINGLE.decode()}`, or 20 such lines of 20 series. Sender and listener share "
        f"this machine's {os.cpu_count()} cores (load average {load[0]:.2f} when the bench started).\n"
    )
    print("| lines/datagram | offered lines/s | sent lines/s | ingested lines/s | lost | runs with loss "
          "| CPU s per M lines |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for (lines_per_packet, rate), runs in steps.items():
        lost = statistics.median(step.lost / step.sent_lines for step in runs)
        print(
            f"| {lines_per_packet} | {f'{rate:,}' if rate else 'unpaced'} "
            f"| {statistics.median(s.send_rate for s in runs):,.0f} "
            f"| {statistics.median(s.ingest_rate for s in runs):,.0f} | {lost:.1%} "
            f"| {sum(1 for s in runs if s.lost)}/{len(runs)} "
            f"| {statistics.median(s.cpu_per_million for s in runs):.2f} |"
        )
    print()
    print("| lines/datagram | parse + aggregate, ns per line (no socket): median (min..max) |")
    print("|---:|---:|")
    for lines_per_packet, packet in ((1, SINGLE), (20, BATCH)):
        runs = in_process_ns_per_line(packet, lines_per_packet)
        print(f"| {lines_per_packet} | {statistics.median(runs):,.0f} ({min(runs):,.0f}..{max(runs):,.0f}) |")
    print()
    for lines_per_packet in RAMPS:
        clean = [
            statistics.median(s.ingest_rate for s in runs)
            for (size, rate), runs in steps.items()
            if size == lines_per_packet and rate and not any(s.lost for s in runs)
        ]
        lossy = [
            rate
            for (size, rate), runs in steps.items()
            if size == lines_per_packet and rate and any(s.lost for s in runs)
        ]
        saturated = statistics.median(s.cpu_per_million for s in steps[(lines_per_packet, 0)])
        loss = (
            f"loss begins at an offered {min(lossy):,} lines/s" if lossy
            else f"no loss at any paced rate up to {max(RAMPS[lines_per_packet]):,} lines/s"
        )
        print(
            f"- {lines_per_packet}-line datagrams: highest ingest rate with zero loss in every run "
            f"{max(clean, default=0):,.0f} lines/s; {loss}; saturated, the listener spends {saturated:.2f} CPU s "
            f"per million lines, so a core of its own would take {1e6 / saturated:,.0f} lines/s"
        )


if __name__ == "__main__":
    main()
