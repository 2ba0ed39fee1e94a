"""A stand-in training job for the demo: it reports the samples it processes and its step time over StatsD
with the agent's Python meter, until it is stopped.

    INFRAWATCH_STATSD_ADDRESS=127.0.0.1:8125 python -m demo.job
"""

from __future__ import annotations

import random
import signal
import threading

from agent.meter import Meter


def main() -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop.set).start())
    samples = Meter("SamplesProcessed")
    step_time = Meter("StepTime")
    rng = random.Random(1)
    while not stop.is_set():
        with step_time.time():
            stop.wait(rng.uniform(0.02, 0.08))  # the "training step"
        samples.add(rng.choice((32, 64)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
