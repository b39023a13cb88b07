"""Run one benchmark worker in a fresh process and collect its result and peak memory.

Shared by the benchmark scripts in this folder.  A worker is a child Python process
that prints one line ``RESULT {json}`` on stdout.  The parent reaps it with
``os.wait4``, whose rusage gives that child's own peak resident set size
(``ru_maxrss``), and samples ``/proc/<pid>/status`` meanwhile so that a child above
``rss_limit_gb`` (or past ``timeout`` seconds) is stopped and reported as such.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

RESULT = "RESULT "


def emit(result: dict) -> None:
    """Print a worker's result (the last line the parent reads)."""
    print(RESULT + json.dumps(result), flush=True)


def _rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return 0.0


def run_child(cmd: list[str], *, env: dict | None = None, timeout: float = 1800.0,
              rss_limit_gb: float | None = None, poll: float = 0.2) -> dict:
    """Run ``cmd``; return the worker's result dict plus ``wall_s`` and ``peak_rss_gb``.

    On failure the dict has ``error`` (the last stderr line, or why it was stopped)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        stopped, seen_gb = None, 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            seen_gb = max(seen_gb, _rss_gb(proc.pid))
            elapsed = time.perf_counter() - t0
            if stopped is None and rss_limit_gb is not None and seen_gb > rss_limit_gb:
                stopped = f"stopped above {rss_limit_gb:g} GB RSS after {elapsed:.0f} s"
                os.kill(proc.pid, signal.SIGKILL)
            elif stopped is None and elapsed > timeout:
                stopped = f"stopped after the {timeout:.0f} s timeout"
                os.kill(proc.pid, signal.SIGKILL)
            time.sleep(poll)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    peak = max(usage.ru_maxrss / 1024 ** 2, seen_gb)
    result = None
    for line in stdout.splitlines():
        if line.startswith(RESULT):
            result = json.loads(line[len(RESULT):])
    if result is None:
        last = (stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        result = {"error": stopped or last[:200]}
    result.update(wall_s=wall, peak_rss_gb=peak)
    return result


def load_line() -> str:
    """The machine's load and size, for a table's header (the machine may be shared)."""
    la = os.getloadavg()
    return (f"{os.cpu_count()} cores, load average {la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} "
            f"(1/5/15 min; the machine may be shared), python {sys.version.split()[0]}")
