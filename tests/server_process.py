"""One real ``server.py`` in a process of its own, for the tests and benchmarks that need one.

:class:`ServerProcess` writes the config it is given beside its log in a
folder, runs ``server.py`` on it from the repository root, waits until it
answers, and stops it by pid: SIGTERM as an operator would, SIGKILL when it
does not exit in time. A server that exits early or never answers fails
with the tail of its log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

from tests.loopback import free_port, stop_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ServerNotReady(AssertionError):
    pass


class ServerProcess:
    """``server.py`` with ``config`` (a dict of sections); the port is picked unless the config names one."""

    def __init__(self, folder: str | os.PathLike, config: dict, name: str = "server",
                 log_level: str | None = None) -> None:
        self.name = name
        self.folder = os.fspath(folder)
        os.makedirs(self.folder, exist_ok=True)
        server = config.setdefault("server", {})
        server.setdefault("host", "127.0.0.1")
        self.port = server.setdefault("port", free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = config
        self.config_path = os.path.join(self.folder, f"{name}.yaml")
        self.log_path = os.path.join(self.folder, f"{name}.log")
        # $BINGE_LOG_LEVEL (DEBUG, say) shows more of what a failing test's servers did.
        self.log_level = log_level or os.environ.get("BINGE_LOG_LEVEL", "INFO")
        self.process: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        with open(self.config_path, "w") as f:
            yaml.safe_dump(self.config, f)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, os.path.join(ROOT, "server.py"), "--config", self.config_path,
                 "--log-level", self.log_level],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_until_serving(self, timeout: float = 20.0) -> None:
        """Blocks until ``/healthz`` answers at all (a degraded store answers too)."""
        deadline = time.monotonic() + timeout
        while not self._answers():
            self._check_running(deadline, timeout)
            time.sleep(0.05)

    async def serving(self, timeout: float = 20.0) -> None:
        """As :meth:`wait_until_serving`, without blocking the event loop."""
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self._answers):
            self._check_running(deadline, timeout)
            await asyncio.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False

    def _check_running(self, deadline: float, timeout: float) -> None:
        if self.process.poll() is not None:
            raise ServerNotReady(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
        if time.monotonic() > deadline:
            raise ServerNotReady(f"{self.name} did not answer within {timeout:g} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: the process dies at once, its connections with it."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def freeze(self) -> None:
        """SIGSTOP: the process stays, its connections stay open, and it sends nothing more."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def stop(self, timeout: float = 10) -> None:
        if self.process:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGCONT)  # in case it was frozen
            stop_process(self.process, timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except FileNotFoundError:
            return ""
