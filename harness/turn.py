"""A TURN server of a test's own: coturn's ``turnserver`` on loopback, checking credentials by a shared secret.

It runs as coturn's README describes the TURN REST API setup
(``use-auth-secret`` with ``static-auth-secret``), so it accepts exactly
the credentials :mod:`peers.ice` makes from the same secret. It relays
between loopback addresses (``allow-loopback-peers``), which a real
deployment would not, so that two peers on one machine can meet through it.
"""

from __future__ import annotations

import os
import shutil

from harness.server_process import ListeningProcess

REALM = "binge.test"


def turnserver() -> str | None:
    """The path of coturn's turnserver, if installed (scripts/setup --test installs it)."""
    return shutil.which("turnserver")


class TurnServer(ListeningProcess):
    """``turnserver`` on 127.0.0.1 with ``secret``; ready once its port takes a TCP connection."""

    def __init__(self, folder: str | os.PathLike, secret: str) -> None:
        super().__init__(folder, "turnserver", command=self._command)
        self.secret = secret

    def _command(self, port: int) -> list[str]:
        return [
            turnserver() or "turnserver", "-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1",
            "--listening-port", str(port), "--use-auth-secret", f"--static-auth-secret={self.secret}",
            "--realm", REALM, "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-cli",
            "--db", os.path.join(self.folder, "turndb"), "--pidfile", os.path.join(self.folder, "turnserver.pid"),
            "--log-file", "stdout", "--simple-log",
        ]

    def turn_url(self, transport: str = "udp") -> str:
        return f"turn:127.0.0.1:{self.port}?transport={transport}"
