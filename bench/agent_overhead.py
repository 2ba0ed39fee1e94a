"""Agent overhead at collect.interval = 1 s, side by side with prometheus-node-exporter in one run.

Runs the real `infrawatch-agent` in a subprocess with the dry-run sink (requests are printed to
/dev/null instead of sent) on this machine's real host metrics. In the same minutes it runs Debian's
prometheus-node-exporter on a loopback port with only its cpu, meminfo, filesystem, diskstats and
netdev collectors, scraped every second by this script. CPU seconds come from /proc (utime + stime)
between `--warmup` and the end, so start-up imports are not counted; peak RSS is VmHWM.

    .venv/bin/python bench/agent_overhead.py --seconds 150
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
NODE_EXPORTER = "prometheus-node-exporter"
NODE_EXPORTER_COLLECTORS = ("cpu", "meminfo", "filesystem", "diskstats", "netdev")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def node_exporter_binary() -> str | None:
    """The Debian package's binary; installed on the spot when apt-get can (root, registry reachable)."""
    found = shutil.which(NODE_EXPORTER)
    if found or shutil.which("apt-get") is None:
        return found
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", NODE_EXPORTER],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which(NODE_EXPORTER)


def scrape_every_second(url: str, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
        except OSError:
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args()

    processes: dict[str, subprocess.Popen[bytes]] = {}
    stop_scraping = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "agent.toml"
        config.write_text("[collect]\ninterval = 1\n[publish]\ninterval = 60\n")
        processes["infrawatch-agent"] = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(config), "--dry-run"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )
        binary = node_exporter_binary()
        if binary:
            port = free_port()
            flags = ["--collector.disable-defaults", *(f"--collector.{c}" for c in NODE_EXPORTER_COLLECTORS),
                     f"--web.listen-address=127.0.0.1:{port}"]
            processes["node_exporter"] = subprocess.Popen([binary, *flags], stdout=subprocess.DEVNULL,
                                                          stderr=subprocess.DEVNULL)
            threading.Thread(target=scrape_every_second, args=(f"http://127.0.0.1:{port}/metrics", stop_scraping),
                             daemon=True).start()
        try:
            time.sleep(args.warmup)
            start_cpu = {name: cpu_seconds(p.pid) for name, p in processes.items()}
            start = time.monotonic()
            time.sleep(args.seconds)
            wall = time.monotonic() - start
            cpu = {name: cpu_seconds(p.pid) - start_cpu[name] for name, p in processes.items()}
            rss = {name: peak_rss_mb(p.pid) for name, p in processes.items()}
        finally:
            stop_scraping.set()
            for process in processes.values():
                process.terminate()
                process.wait(timeout=30)

    print(f"## Agent overhead at 1 s collection ({wall:.0f} s measured, {os.cpu_count()} cores)")
    print()
    print("| Process | CPU seconds | CPU, % of one core | Peak RSS |")
    print("|---|---|---|---|")
    for name in processes:
        print(f"| {name} | {cpu[name]:.2f} | {cpu[name] / wall * 100:.3f} % | {rss[name]:.1f} MB |")
    print()
    if "node_exporter" in processes:
        ratio = cpu["infrawatch-agent"] / cpu["node_exporter"] if cpu["node_exporter"] else float("inf")
        print(f"infrawatch CPU / node_exporter CPU = {ratio:.2f} (target ≤ 1); "
              f"RSS ratio = {rss['infrawatch-agent'] / rss['node_exporter']:.2f}")
    else:
        print(f"{NODE_EXPORTER} could not be installed here: infrawatch's own figures only.")
    print("Targets: agent CPU ≤ 0.5 % of one core, peak RSS ≤ 60 MB "
          "(the CloudWatch agent's own stress bound at 1 s: 16–35 % of a core, ~110 MB).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
