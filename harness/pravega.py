"""A standalone Pravega of one's own (scripts/pravega) on free loopback ports: started, paused, stopped.

The tests use it to stop Pravega under a running server; the benchmarks,
to measure against a Pravega nothing else shares.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess

from harness.loopback import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "pravega")


class PravegaNotStarted(RuntimeError):
    pass


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_script(command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, command], env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=600)


class StandalonePravega:
    """A Pravega whose state lives in ``home``; ``env`` is more of scripts/pravega's environment (PRAVEGA_HEAP...)."""

    def __init__(self, home: str | os.PathLike, **env: str) -> None:
        controller, segmentstore, zk, rest = free_ports(4)
        self.env = {
            "PRAVEGA_HOME": str(home), "PRAVEGA_CONTROLLER_PORT": str(controller),
            "PRAVEGA_SEGMENTSTORE_PORT": str(segmentstore), "PRAVEGA_ZK_PORT": str(zk),
            "PRAVEGA_REST_PORT": str(rest), "PRAVEGA_HEAP": "512m", **env,
        }
        self.home = pathlib.Path(home)
        self.uri = f"tcp://127.0.0.1:{controller}"

    def start(self) -> None:
        """Returns once it serves; ``PravegaNotStarted`` (with the script's output) if it does not."""
        result = run_script("start", self.env)
        if result.returncode != 0:
            raise PravegaNotStarted(f"scripts/pravega start failed:\n{result.stdout}{result.stderr}")

    def stop(self) -> None:
        result = run_script("stop", self.env)
        assert result.returncode == 0, result.stderr

    def signal(self, sig: int) -> None:
        os.kill(int((self.home / "pravega.pid").read_text()), sig)
