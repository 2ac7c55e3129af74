"""Servers in processes of their own, for the tests and benchmarks that need one: started, waited for, stopped.

:class:`ServerProcess` writes the config it is given (a dict of sections)
beside its log in a folder, runs ``server.py`` on it from the repository
root, waits until it answers, and stops it by pid: SIGTERM as an operator
would, SIGKILL when it does not exit in time. :class:`ListeningProcess`
does the same for any other server program (nginx, a socket.io server) a
benchmark compares with; :class:`NginxProcess` is nginx serving a folder's
files, configured as the benchmarks compare Binge+ with it. A server that exits early or never answers fails
with the tail of its log; used as a context manager, it is stopped however
the block ends. Given a ``namespace`` (harness/netns.py), a server runs
inside that network namespace, on its address, and is checked for
readiness from inside it too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml
from tornado.httpclient import HTTPClientError

from harness.http import get_json
from harness.loopback import child_pids, free_port, stop_process
from harness.netns import Namespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ServerNotReady(AssertionError):
    pass


class ListeningProcess:
    """``command`` in a process of its own, serving HTTP on ``port`` of 127.0.0.1 (picked unless given).

    It is ready once ``ready_path`` answers a HEAD with a success, or, with
    no ``ready_path``, once the port takes a connection. ``command`` may be
    a function of the port. With ``namespace``, the process runs in that
    network namespace and serves on its address instead of 127.0.0.1.
    """

    def __init__(self, folder: str | os.PathLike, name: str, command=None, port: int | None = None,
                 ready_path: str | None = None, cwd: str = ROOT, namespace: Namespace | None = None) -> None:
        self.name = name
        self.folder = os.fspath(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.namespace = namespace
        self.host = namespace.address if namespace else "127.0.0.1"
        # A fresh namespace has every port free; one free here is as good as any there.
        self.port = port or free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.ready_path = ready_path
        self.cwd = cwd
        self.log_path = os.path.join(self.folder, f"{name}.log")
        self._command = command
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return self._command(self.port) if callable(self._command) else list(self._command)

    def start(self):
        with open(self.log_path, "ab") as log:
            if self.namespace is not None:
                self.process = self.namespace.popen(self.command(), cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT)
            else:
                self.process = subprocess.Popen(self.command(), cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT)
        return self

    def __enter__(self):
        """Started and serving; stopped when the block ends, however it ends."""
        try:
            self.start().wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_until_serving(self, timeout: float = 20.0) -> None:
        """Blocks until the server answers (see :meth:`_answers`)."""
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
        """Whether it answers yet (asked from inside its namespace, if it has one)."""
        return self.namespace.call(self._answers_here) if self.namespace else self._answers_here()

    def _answers_here(self) -> bool:
        if self.ready_path is None:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return True
            except OSError:
                return False
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url + self.ready_path, method="HEAD"), timeout=1):
                return True
        except OSError:  # refused, or an error status (HTTPError is an OSError)
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


class ServerProcess(ListeningProcess):
    """``server.py`` with ``config`` (a dict of sections); the port is picked unless the config names one.

    It runs one process (``server.workers: 1``) unless the config says otherwise.
    It is ready once ``/healthz`` answers at all (a degraded store answers
    too), or, with ``ready_path``, once that path answers a HEAD with a
    success. ``launcher`` is the command that runs ``server.py``'s main
    (a wrapper that measures it, say); the arguments follow it. :meth:`ready`
    waits further, until the catalog lists a given video.
    """

    def __init__(self, folder: str | os.PathLike, config: dict, name: str = "server",
                 log_level: str | None = None, ready_path: str | None = None,
                 launcher: list[str] | None = None, namespace: Namespace | None = None) -> None:
        server = config.setdefault("server", {})
        # One process, as the suite's tests mean, unless a test asks for workers (tests/test_workers.py).
        server.setdefault("workers", 1)
        super().__init__(folder, name, port=server.setdefault("port", free_port()), ready_path=ready_path,
                         namespace=namespace)
        server.setdefault("host", self.host)
        self.config = config
        self.config_path = os.path.join(self.folder, f"{name}.yaml")
        # $BINGE_LOG_LEVEL (DEBUG, say) shows more of what a failing test's servers did.
        self.log_level = log_level or os.environ.get("BINGE_LOG_LEVEL", "INFO")
        self.launcher = launcher or [sys.executable, os.path.join(ROOT, "server.py")]

    async def ready(self, timeout: float = 15.0, video: str | None = None) -> None:
        """Waits until the server answers ``/videos`` (listing ``video``, if given)."""
        deadline = time.monotonic() + timeout
        await self.serving(timeout)
        while True:
            try:
                videos = await self.get_json("/videos")
                if video is None or any(v["id"] == video for v in videos):
                    return
            except (OSError, HTTPClientError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    async def get_json(self, path: str) -> object:
        """The JSON at ``path`` of this server, asked from where it can be reached (inside its namespace, if any)."""
        if self.namespace is not None:
            return await self.namespace.inside(get_json(self.url + path))
        return await get_json(self.url + path)

    def command(self) -> list[str]:
        return [*self.launcher, "--config", self.config_path, "--log-level", self.log_level]

    def start(self) -> ServerProcess:
        with open(self.config_path, "w") as f:
            yaml.safe_dump(self.config, f)
        return super().start()

    def _answers_here(self) -> bool:
        if self.ready_path is not None:
            return super()._answers_here()
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False


NGINX_CONF = """
worker_processes %(workers)d;
pid %(dir)s/%(name)s.pid;
error_log %(dir)s/%(name)s-error.log;
daemon off;
events { worker_connections 65536; }
worker_rlimit_nofile 70000;
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path %(dir)s/tmp;
    proxy_temp_path %(dir)s/tmp;
    fastcgi_temp_path %(dir)s/tmp;
    uwsgi_temp_path %(dir)s/tmp;
    scgi_temp_path %(dir)s/tmp;
    server {
        listen 127.0.0.1:%(port)d;
        location / { root %(root)s; }
    }
}
"""


class NginxProcess(ListeningProcess):
    """nginx serving the files under ``root`` with sendfile, with ``workers`` worker processes.

    Started as root, nginx's workers run as an unprivileged user: ``root``
    and its parents must be readable by everyone (the folder is made so).
    ``prefix`` goes before the command (``["taskset", "-c", "0"]``, say).
    :meth:`pids` are the master's and its workers'.
    """

    def __init__(self, folder: str | os.PathLike, root: str, name: str = "nginx", port: int | None = None,
                 ready_path: str | None = None, workers: int = 1, prefix: list[str] = ()) -> None:
        super().__init__(folder, name, port=port, ready_path=ready_path)
        self.root, self.workers, self.prefix = root, workers, list(prefix)
        self.conf_path = os.path.join(self.folder, f"{name}.conf")

    def command(self) -> list[str]:
        return [*self.prefix, "nginx", "-c", self.conf_path, "-p", self.folder]

    def start(self) -> NginxProcess:
        os.chmod(self.folder, 0o755)
        os.makedirs(os.path.join(self.folder, "tmp"), exist_ok=True)
        with open(self.conf_path, "w") as f:
            f.write(NGINX_CONF % {"dir": self.folder, "name": self.name, "port": self.port, "root": self.root,
                                  "workers": self.workers})
        return super().start()

    def pids(self) -> list[int]:
        return [self.pid, *child_pids(self.pid)]

