"""Small helpers for tests and benchmarks that run real processes on loopback."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now (held together, so none repeats)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def child_pids(pid: int) -> list[int]:
    """The pids of a process's children (of all its threads)."""
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            children += [int(c) for c in f.read().split()]
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a server's workers, and theirs)."""
    tree, i = [pid], 0
    while i < len(tree):
        try:
            tree += child_pids(tree[i])
        except FileNotFoundError:
            pass  # exited meanwhile
        i += 1
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time used so far by those of ``pids`` still alive, from ``/proc/PID/stat``."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # exited meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages: benchmarks print them beside their figures on a shared machine."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def reference_loop() -> float:
    """Seconds of the 10-million-addition loop bench/RESULTS.md times every machine with."""
    began = time.monotonic()
    subprocess.run([sys.executable, "-c", "s=0\nfor i in range(10_000_000): s+=i"], check=True)
    return time.monotonic() - began


def cpu_placement(processes: int) -> tuple[list[str], list[str]]:
    """``taskset`` prefixes for a server of ``processes`` processes and for its load generator.

    With fewer processes than CPUs the server gets CPUs 0..processes-1 and
    the generator the rest, so that it takes no server's core; with as many
    as there are CPUs (or more) nothing is pinned, and the generator shares
    every core with the server.
    """
    cpus = os.cpu_count()
    if processes >= cpus:
        return [], []
    return (["taskset", "-c", ",".join(map(str, range(processes)))],
            ["taskset", "-c", ",".join(map(str, range(processes, cpus)))])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class PeakRss(threading.Thread):
    """Samples a process's RSS every 50 ms until ``running`` is set False."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.05)


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def until(condition, timeout: float = 10.0, what: str = "condition", step: float = 0.05):
    """Polls ``condition()``, a plain or an async function, until it gives something true; returns that.

    Fails (AssertionError) once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        await asyncio.sleep(step)
