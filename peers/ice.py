"""The ICE servers a peer connection is given: STUN as configured, TURN with short-lived credentials.

TURN credentials follow the TURN REST API draft (draft-uberti-behave-turn-rest-00),
which coturn checks under ``use-auth-secret`` with ``static-auth-secret``
set to ``peer.turn_secret``: the username is ``EXPIRY:USER`` (``EXPIRY`` a
Unix time in whole seconds, after which the TURN server refuses it) and the
credential is ``base64(HMAC-SHA1(secret, username))``. Nothing is stored:
the TURN server recomputes the credential from the username.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from settings import PeerSettings


def turn_credential(secret: str, user: str, expiry: int) -> tuple[str, str]:
    """The ``(username, credential)`` pair a TURN server with ``secret`` accepts for ``user`` until ``expiry``."""
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers(peer: PeerSettings, user: str, now: float) -> dict:
    """``{"iceServers": [RTCIceServer, ...], "ttl"}``, as ``GET /ice-servers`` answers it at time ``now``.

    STUN URLs go in one entry without credentials, TURN URLs in another
    with credentials for ``user`` good for ``peer.turn_ttl`` seconds (``ttl``).
    """
    stun = [url for url in peer.ice_servers if url.startswith("stun")]
    turn = [url for url in peer.ice_servers if url.startswith("turn")]
    servers: list[dict] = [{"urls": stun}] if stun else []
    ttl = int(peer.turn_ttl)
    if turn:
        username, credential = turn_credential(peer.turn_secret, user, int(now) + ttl)
        servers.append({"urls": turn, "username": username, "credential": credential})
    return {"iceServers": servers, **({"ttl": ttl} if turn else {})}
