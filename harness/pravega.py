"""Pravega of one's own: a standalone (scripts/pravega) on free loopback ports, started, paused, stopped; or
the durable cluster (scripts/pravega cluster), started, stopped, its nodes killed and revived.

The tests use the standalone to stop Pravega under a running server, and the
cluster for what only a cluster does (failover, surviving a restart); the
benchmarks use either to measure against a Pravega nothing else shares.
"""

from __future__ import annotations

import os
import pathlib
import re
import socket
import subprocess
import time

from harness.loopback import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "pravega")


class PravegaNotStarted(RuntimeError):
    pass


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], env={**os.environ, **(env or {})}, capture_output=True, text=True,
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
        result = run_script("start", env=self.env)
        if result.returncode != 0:
            raise PravegaNotStarted(f"scripts/pravega start failed:\n{result.stdout}{result.stderr}")

    def stop(self) -> None:
        result = run_script("stop", env=self.env)
        assert result.returncode == 0, result.stderr

    def signal(self, sig: int) -> None:
        os.kill(int((self.home / "pravega.pid").read_text()), sig)


class PravegaCluster:
    """scripts/pravega cluster with its data, logs and pids in ``data``, on the 32 ports from ``base``.

    Every call waits for the script and raises ``PravegaNotStarted`` (or
    AssertionError for a stop, kill or revive) with its output when it fails.
    """

    SEGMENT_STORES = ("segmentstore1", "segmentstore2")

    def __init__(self, data: str | os.PathLike, base: int) -> None:
        self.data = pathlib.Path(data)
        self.env = {"PRAVEGA_DATA": str(self.data), "PRAVEGA_CLUSTER_PORT_BASE": str(base)}
        self.uri = f"tcp://127.0.0.1:{base + 20}"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return run_script("cluster", *args, env=self.env)

    def start(self) -> None:
        """Returns once the cluster serves (a stream written and read back)."""
        result = self._run("start")
        if result.returncode != 0:
            raise PravegaNotStarted(f"scripts/pravega cluster start failed:\n{result.stdout}{result.stderr}")

    def stop(self) -> None:
        result = self._run("stop")
        assert result.returncode == 0, result.stdout + result.stderr

    def kill(self, node: str) -> None:
        """SIGKILLs ``node``; returns once it is gone."""
        result = self._run("kill", node)
        assert result.returncode == 0, result.stdout + result.stderr

    def revive(self, node: str, timeout: float = 180) -> None:
        """Starts ``node`` again and waits until the whole cluster serves once more.

        A revived segment store is waited for until it runs the containers the
        controller handed back to it, so that no container is still moving
        when the next client comes.
        """
        result = self._run("revive", node)
        assert result.returncode == 0, result.stdout + result.stderr
        deadline = time.monotonic() + timeout
        while not (self.serving() and (node not in self.SEGMENT_STORES or self._runs_containers(node))):
            assert time.monotonic() < deadline, f"the cluster did not serve {timeout:g} s after {node} came back"
            time.sleep(0.5)

    def serving(self) -> bool:
        """``scripts/pravega cluster status``: every node runs and a stream can be written and read."""
        return self._run("status").returncode == 0

    def _runs_containers(self, store: str) -> bool:
        log = self.log(store)
        started = set(re.findall(r"Starting Container (\d+)\.", log))
        return bool(started) and started <= set(re.findall(r"Container (\d+) has been registered\.", log))

    def log(self, node: str) -> str:
        """The log of ``node`` since it last started."""
        try:
            return (self.data / "logs" / f"{node}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def owner(self, scope: str, stream: str) -> str:
        """The segment store that created ``stream``'s (first) segment, and so ran its container then."""
        line = "Creating stream segment WireCommands.CreateSegment(type=CREATE_SEGMENT"
        segment = f"segment={scope}/{stream}/0.#epoch.0,"
        for store in self.SEGMENT_STORES:
            if any(line in entry and segment in entry for entry in self.log(store).splitlines()):
                return store
        raise AssertionError(f"no segment store's log shows the creation of {scope}/{stream}")
