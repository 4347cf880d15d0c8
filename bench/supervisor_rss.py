"""Measure the resident memory (VmRSS) of the supervisor while it waits on the application.

Each run starts the full hand-over path. A Python process imports boto3 and hvac, as a run
with the AWS and Vault backends does, and records its own VmRSS. It then calls
``hand_over`` in init mode with ``sleep 60``, as a child subreaper, so no PID namespace is
needed. Once that process has exec'd into the supervisor and its child has exec'd
``sleep``, the script reads the supervisor's VmRSS from /proc/PID/status, then stops it
with SIGTERM. The supervisor imports its module from cached bytecode, which the first run
writes when the package directory is writable. Without that cache it stays about 1 MB
larger.

For comparison it measures idle Python processes that imported boto3, boto3 and hvac, and
nothing (``-I -S``). Prints the median, minimum and maximum of every measurement.

Usage: python bench/supervisor_rss.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

HAND_OVER = """
import os, sys
import boto3, hvac
from secret_init.handover import HandOverOptions, hand_over
with open("/proc/self/status") as status:
    rss = next(line.split()[1] for line in status if line.startswith("VmRSS:"))
print(rss, flush=True)
hand_over(["sleep", "60"], dict(os.environ), HandOverOptions(mode="init", subreaper=True))
"""

IDLE = """
import sys, time
{imports}
print("ready", flush=True)
time.sleep(60)
"""

# Bounds a hung run; not a speed target (seconds).
START_TIMEOUT = 60


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")


def child_command(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def wait_until(condition, description: str):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise RuntimeError(f"timed out after {START_TIMEOUT}s waiting for {description}")


def measure_supervisor() -> tuple[int, int]:
    """Return (VmRSS before hand-over, VmRSS of the waiting supervisor) in KiB."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-c", HAND_OVER], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        before = int(process.stdout.readline())
        cmdline = Path(f"/proc/{process.pid}/cmdline")
        wait_until(lambda: b"secret_init.supervisor" in cmdline.read_bytes(),
                   "the supervisor to start")
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        wait_until(lambda: any(child_command(pid) == "sleep"
                               for pid in children.read_text().split()),
                   "the child to exec sleep")
        time.sleep(0.2)  # let the supervisor read the start report and enter sigtimedwait
        during = vm_rss_kib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=START_TIMEOUT)
    return before, during


def measure_idle(imports: str, flags: list[str]) -> int:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, *flags, "-c", IDLE.format(imports=imports)],
                               stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        process.stdout.readline()
        return vm_rss_kib(process.pid)
    finally:
        process.kill()
        process.communicate()


def summary(values: list[int]) -> str:
    return (f"median {statistics.median(values) / 1024:5.1f} MiB  "
            f"(min {min(values) / 1024:.1f}, max {max(values) / 1024:.1f}, runs {len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per measurement (default 7)")
    args = parser.parse_args()

    before, during = [], []
    for _ in range(args.runs):
        rss_before, rss_during = measure_supervisor()
        before.append(rss_before)
        during.append(rss_during)
    boto3_only = [measure_idle("import boto3", []) for _ in range(args.runs)]
    boto3_hvac = [measure_idle("import boto3, hvac", []) for _ in range(args.runs)]
    bare = [measure_idle("", ["-I", "-S"]) for _ in range(args.runs)]

    print(f"Python {platform.python_version()} on {platform.system()} {platform.release()} "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    print(f"supervisor waiting on the child       {summary(during)}")
    print(f"same process before hand-over         {summary(before)}")
    print(f"idle python that imported boto3       {summary(boto3_only)}")
    print(f"idle python that imported boto3, hvac {summary(boto3_hvac)}")
    print(f"idle python -I -S, nothing imported   {summary(bare)}")


if __name__ == "__main__":
    main()
