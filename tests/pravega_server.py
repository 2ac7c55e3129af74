"""Starting and stopping the project's standalone Pravega (scripts/pravega) from tests.

Without Java or Maven the Pravega tests are skipped, except under CI (env
``CI`` set), where that is a failure: CI must run them.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.loopback import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "pravega")
def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_script(command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, command], env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=600)


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Pravega is needed under CI: {reason}")
    pytest.skip(reason)


def shared_controller():
    """The shared Pravega, started here unless something already listens on its port."""
    port = int(os.environ.get("PRAVEGA_CONTROLLER_PORT", "9090"))
    started = False
    if not port_open(port):
        result = run_script("start")
        if result.returncode != 0:
            unavailable(f"scripts/pravega start failed:\n{result.stdout}{result.stderr}")
        started = True
    yield f"tcp://127.0.0.1:{port}"
    if started:
        run_script("stop")


class PrivatePravega:
    """A Pravega of this test's own, to pause, stop and start at will."""

    def __init__(self, home) -> None:
        controller, segmentstore, zk, rest = free_ports(4)
        self.env = {
            "PRAVEGA_HOME": str(home), "PRAVEGA_CONTROLLER_PORT": str(controller),
            "PRAVEGA_SEGMENTSTORE_PORT": str(segmentstore), "PRAVEGA_ZK_PORT": str(zk),
            "PRAVEGA_REST_PORT": str(rest), "PRAVEGA_HEAP": "512m",
        }
        self.home = home
        self.uri = f"tcp://127.0.0.1:{controller}"

    def start(self) -> None:
        result = run_script("start", self.env)
        if result.returncode != 0:
            unavailable(f"scripts/pravega start failed:\n{result.stdout}{result.stderr}")

    def stop(self) -> None:
        result = run_script("stop", self.env)
        assert result.returncode == 0, result.stderr

    def signal(self, sig: int) -> None:
        os.kill(int((self.home / "pravega.pid").read_text()), sig)
