"""A TURN server of a test's own: coturn's ``turnserver``, checking credentials by a shared secret.

It runs as coturn's README describes the TURN REST API setup
(``use-auth-secret`` with ``static-auth-secret``), so it accepts exactly
the credentials :mod:`peers.ice` makes from the same secret; STUN and TURN
on one port, no TLS, no CLI. Two ways to run it, on the same arguments:

* :class:`TurnServer` on loopback. It relays between loopback addresses
  (``allow-loopback-peers``), which a real deployment would not, so that
  two peers on one machine can meet through it.
* :class:`NamespaceTurnServer` inside a namespace of the simulated internet
  (harness/netns.py), on that namespace's address only, at the standard
  port; it relays between the homes as a public TURN server would.

The namespaced one's relay counters come from its log: Debian's build
(4.6.1) has no Prometheus exporter (it is not linked with libmicrohttpd)
and the CLI is off. With ``--verbose``, coturn's ``turn_report_session_usage``
(src/apps/relay/ns_ioalib_engine_impl.c) logs for a TURN session ``usage:
... rp=, rb=, sp=, sb=`` (packets and bytes received from and sent to the
client) and ``peer usage: ...`` (the same from and to the peers it relays
to) each time the session's packets reach a multiple of 4096, and once more
when it closes, then sets those counters back to zero: the lines are
intervals, and :meth:`NamespaceTurnServer.sessions` adds them up. A session
closes a moment after its client deletes the allocation (a REFRESH with
lifetime 0, which aiortc sends on close);
:meth:`NamespaceTurnServer.closed_sessions` waits for that, so the totals
are whole.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass

from harness.netns import Namespace
from harness.server_process import ListeningProcess
from peers.ice import turn_credential

REALM = "binge.test"
PORT = 3478
_USAGE = re.compile(r"session (\d+): (peer )?usage: realm=<[^>]*>, username=<([^>]*)>, rp=\d+, rb=(\d+), sp=\d+, sb=(\d+)")
_CLOSED = re.compile(r"session (\d+): closed \(2nd stage\), user <([^>]*)>")


def turnserver() -> str | None:
    """The path of coturn's turnserver, if installed (scripts/setup --test installs it)."""
    return shutil.which("turnserver")


def _arguments(address: str, port: int, secret: str, folder: str) -> list[str]:
    return [
        turnserver() or "turnserver", "-n", "--listening-ip", address, "--relay-ip", address,
        "--listening-port", str(port), "--use-auth-secret", f"--static-auth-secret={secret}",
        "--realm", REALM, "--no-tls", "--no-dtls", "--no-cli",
        "--db", os.path.join(folder, "turndb"), "--pidfile", os.path.join(folder, "turnserver.pid"),
    ]


class TurnServer(ListeningProcess):
    """``turnserver`` on 127.0.0.1 with ``secret``; ready once its port takes a TCP connection."""

    def __init__(self, folder: str | os.PathLike, secret: str) -> None:
        super().__init__(folder, "turnserver", command=self._command)
        self.secret = secret

    def _command(self, port: int) -> list[str]:
        return [*_arguments("127.0.0.1", port, self.secret, self.folder), "--allow-loopback-peers",
                "--log-file", "stdout", "--simple-log"]

    def turn_url(self, transport: str = "udp") -> str:
        return f"turn:127.0.0.1:{self.port}?transport={transport}"


class TurnServerNotReady(AssertionError):
    pass


class NamespaceTurnServer:
    """``turnserver`` in ``namespace`` on its address, with a secret of its own; a context manager."""

    def __init__(self, namespace: Namespace, folder: str | os.PathLike) -> None:
        self.namespace = namespace
        self.folder = os.fspath(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.address = namespace.address
        self.secret = secrets.token_hex(16)
        self.log_path = os.path.join(self.folder, "turnserver.log")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> None:
        """Returns once its UDP port is open; TurnServerNotReady (with the log) if it does not open in ``timeout`` s."""
        command = [*_arguments(self.address, PORT, self.secret, self.folder),
                   "--log-file", self.log_path, "--simple-log", "--no-stdout-log", "--verbose"]
        self.process = self.namespace.popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise TurnServerNotReady(f"coturn did not open {self.address}:{PORT}/udp:\n{self.log_tail()}")
            time.sleep(0.05)

    def listening(self) -> bool:
        sockets = self.namespace.run(["ss", "-Hlun", "src", f"{self.address}:{PORT}"], check=False).stdout
        return bool(sockets.strip())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> NamespaceTurnServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stun_url(self) -> str:
        return f"stun:{self.address}:{PORT}"

    def ice_servers(self, node_id: str, ttl: int = 600) -> list[dict]:
        """STUN and TURN (UDP) on this server, with credentials for ``node_id`` good for ``ttl`` s, as RTCIceServer fields."""
        username, credential = turn_credential(self.secret, node_id, int(time.time()) + ttl)
        return [{"urls": self.stun_url()},
                {"urls": f"turn:{self.address}:{PORT}?transport=udp", "username": username, "credential": credential}]

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def sessions(self) -> dict[str, Session]:
        """Every TURN session the log tells of, by id, with its byte totals so far."""
        out: dict[str, Session] = {}
        with open(self.log_path, errors="replace") as f:
            log = f.read()
        for match in _USAGE.finditer(log):
            session_id, peer, username, rb, sb = match.groups()
            session = out.setdefault(session_id, Session(username))
            if peer:
                session.peer_received += int(rb)
                session.peer_sent += int(sb)
            else:
                session.client_received += int(rb)
                session.client_sent += int(sb)
        for match in _CLOSED.finditer(log):
            out.setdefault(match.group(1), Session(match.group(2))).closed = True
        return out

    def closed_sessions(self, node_id: str, count: int, timeout: float) -> list[Session]:
        """The sessions of ``node_id`` (its REST-API usernames), once ``count`` of them have closed and logged their last totals."""
        deadline = time.monotonic() + timeout
        while True:
            ours = [s for s in self.sessions().values() if s.username.endswith(f":{node_id}")]
            if sum(s.closed for s in ours) >= count:
                return ours
            if time.monotonic() > deadline:
                raise AssertionError(f"coturn: {count} sessions of {node_id} not closed within {timeout:g} s: {ours}\n"
                                     f"{self.log_tail()}")
            time.sleep(0.1)


@dataclass
class Session:
    """One TURN session's bytes: from and to its client, from and to the peers it relayed for it."""

    username: str
    client_received: int = 0
    client_sent: int = 0
    peer_received: int = 0
    peer_sent: int = 0
    closed: bool = False

    @property
    def relayed(self) -> int:
        return self.peer_received + self.peer_sent
