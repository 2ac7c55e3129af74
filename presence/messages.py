"""What a presence client may send, checked before it touches presence.

A client message is a JSON object of at most ``presence.max_message_bytes``:
``{"type": "watch", "video": ID[, "peer": URL]}`` for a video of the
catalog, where the peer, if named, is the client itself, or
``{"type": "leave"}``; or, of at most ``presence.max_signal_bytes``,
``{"type": "signal", "to": ADDRESS, "data": ANY[, "relayFor": ADDRESS]}``
(relayed by :mod:`presence.signalling`). Anything else is a
:class:`BadMessage`, whose text goes back to the client.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Container
from urllib.parse import urlsplit

import ujson


class BadMessage(Exception):
    """A client message we refuse; the text goes back to the client."""


@dataclass(frozen=True)
class Watch:
    video: str
    peer: str | None


@dataclass(frozen=True)
class Leave:
    pass


@dataclass(frozen=True)
class Signal:
    """Opaque ``data`` (a WebRTC offer, answer or candidate) for the socket at ``to``.

    ``relay_for`` is set by a node relaying for one of its own sockets (see
    :mod:`presence.signalling`).
    """

    to: str
    data: Any
    relay_for: str | None = None


# A socket address: socket ids joined by "/", each as secrets.token_urlsafe makes them.
ADDRESS_MAX = 256
_ADDRESS_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/")


def parse_message(
    message: str | bytes, limit: int, signal_limit: int, videos: Callable[[], Container[str]], client_ip: str,
) -> Watch | Leave | Signal:
    """The message a client at ``client_ip`` sent; BadMessage if it is not one it may send.

    A signal may be up to ``signal_limit`` bytes, any other message up to
    ``limit``. ``videos`` gives the catalog's ids; it is asked only of a watch message.
    """
    size = len(message) if isinstance(message, bytes) else len(message.encode())
    if size > max(limit, signal_limit):
        raise BadMessage(f"message too large: {size} bytes, at most {max(limit, signal_limit)}")
    try:
        msg = ujson.loads(message)
    except ValueError:
        raise BadMessage("message is not JSON") from None
    if not isinstance(msg, dict):
        raise BadMessage("a message must be a JSON object")
    kind = msg.get("type")
    if kind == "signal":
        if size > signal_limit:
            raise BadMessage(f"signal too large: {size} bytes, at most {signal_limit}")
        if "data" not in msg:
            raise BadMessage("a signal needs 'data'")
        relay_for = msg.get("relayFor")
        return Signal(check_address(msg.get("to"), "to"), msg["data"],
                      None if relay_for is None else check_address(relay_for, "relayFor"))
    if size > limit:
        raise BadMessage(f"message too large: {size} bytes, at most {limit}")
    if kind == "watch":
        video = msg.get("video")
        if not isinstance(video, str) or video not in videos():
            raise BadMessage(f"unknown video {video!r}")
        return Watch(video, check_peer(msg["peer"], client_ip) if "peer" in msg else None)
    if kind == "leave":
        return Leave()
    raise BadMessage(f"unknown message type {kind!r}")


def check_address(address: Any, key: str) -> str:
    """``address`` if it is socket ids joined by "/"; else BadMessage naming ``key``."""
    if (not isinstance(address, str) or not 0 < len(address) <= ADDRESS_MAX
            or not _ADDRESS_CHARS.issuperset(address) or "" in address.split("/")):
        raise BadMessage(f"{key!r} must be a socket id (or ids joined by '/'), at most {ADDRESS_MAX} characters")
    return address


# A node names itself in every change it sends: the same pair each time, parsed once.
@functools.lru_cache(maxsize=4096)
def _names_itself(url: str, client_ip: str) -> bool:
    try:
        parts = urlsplit(url)  # raises ValueError too, on a broken IPv6 host ("http://[::1")
        host = ipaddress.ip_address(parts.hostname or "")
        same = host == ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    # A URL is printable ASCII. Anything else goes into every presence
    # broadcast; a lone surrogate ("\ud800") would make each one fail to encode.
    return parts.scheme in ("http", "https") and same and url.isascii() and url.isprintable()


def check_peer(url: Any, client_ip: str) -> str:
    """``url`` if it is an http(s) URL whose host is the client's own address; else BadMessage.

    A client may only name itself as a peer: otherwise anyone could send other
    viewers to a host of their choosing.
    """
    if not isinstance(url, str):
        raise BadMessage("'peer' must be a URL")
    if not _names_itself(url, client_ip):
        raise BadMessage(f"'peer' must be an http(s) URL whose host is your address {client_ip}")
    return url
