"""Signalling between presence sockets: WebRTC offers, answers and ICE candidates, relayed by the server.

A socket sends ``{"type": "signal", "to": ADDRESS, "data": ANY}`` (checked by
:mod:`presence.messages`; ``data`` is never looked into) and the socket at
``ADDRESS`` gets ``{"type": "signal", "from": SENDER, "data": ANY}``, where
``SENDER`` is this server's own record of who sent it: no socket can speak
as another. A signal goes only between two sockets watching the same
video. Anything else gets the sender ``{"type": "error", "error": TEXT,
"reason": REASON, "to": ADDRESS}``, ``REASON`` one of:

- ``not-watching``: the sender watches no video;
- ``other-video``: the socket at ``ADDRESS`` watches another video;
- ``gone``: it was here and has disconnected;
- ``unknown``: no such socket here (nor, on a node, at its upstream);
- ``too-many-signals``: the sender passed ``presence.signals_per_second``;
  one that keeps on is closed with 1008, and nobody else notices.

**Instances sharing presence** (:mod:`presence.pravega_link`): a signal
for a socket of another instance goes into the shared stream as a
``signal`` record (:mod:`presence.shared`), and the instance holding that
socket delivers it, if the socket still watches the video; if it does not,
or has gone meanwhile, nothing comes back, and the sender's own timeout
tells it.

**Addresses across a chain of nodes.** An ``ADDRESS`` is socket ids joined
by ``/``: each id names a socket at one server, the rest an address further
down, behind that socket. A node (``peer.upstream`` set) that is sent a
signal for a socket it does not know passes it up on the socket its
:class:`peers.announce.Announcer` holds at the upstream for the sender's
video, as ``{"type": "signal", "to": ADDRESS, "relayFor": SENDER, "data"}``;
the upstream names the sender ``NODE_SOCKET/SENDER`` (its own record of the
node's socket, then what the node says of its own sockets, which can only
lead back to the node). An answer to that address reaches the node's socket
as ``{"type": "signal", "from": F, "to": SENDER, "data"}``, and the node
hands it to its socket ``SENDER`` as from ``F``; an error for a relayed
signal comes back with ``"for": SENDER`` and goes on the same way. What
comes down naming no ``to`` (or, an error, no ``for``) is for the node
itself: its own data channels to peers (:mod:`peers.links`).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Any, Callable

from ops.limits import TokenBucket, Verdict
from presence.messages import Signal
from presence.shared import RemoteSignal
from presence.state import Presence

log = logging.getLogger("binge.presence")

POLICY_VIOLATION = 1008
# Sockets remembered after they disconnect, so a late signal to one is told "gone", not "unknown".
GONE_REMEMBERED = 4096


@dataclass(eq=False)
class _Endpoint:
    send: Callable[[dict], None]
    close: Callable[[int, str], None]
    bucket: TokenBucket


class Signalling:
    """Relays signals between this server's presence sockets, and, on a node, to and from its upstream.

    ``upstream(video_id, message)`` (set by a node's store) sends ``message``
    up on the node's socket at the upstream for that video, and says whether
    it could; ``own(video_id, message)`` (set there too) takes what comes
    down addressed to the node itself (see :mod:`peers.links`).
    ``remote(signal)`` (set on an instance sharing presence) sends a signal
    to the instance that holds its socket.
    """

    def __init__(self, presence: Presence, signals_per_second: float) -> None:
        self.presence = presence
        self.rate = signals_per_second
        self.upstream: Callable[[str, dict], bool] | None = None
        self.own: Callable[[str, dict], None] | None = None
        self.remote: Callable[[RemoteSignal], None] | None = None
        self._endpoints: dict[str, _Endpoint] = {}
        self._gone: collections.OrderedDict[str, None] = collections.OrderedDict()

    def join(self, socket_id: str, send: Callable[[dict], None], close: Callable[[int, str], None]) -> None:
        """A local socket that may send and be sent signals: ``send(message)`` writes to it, ``close`` closes it."""
        self._endpoints[socket_id] = _Endpoint(send, close, TokenBucket(self.rate))

    def leave(self, socket_id: str) -> None:
        if self._endpoints.pop(socket_id, None) is not None:
            self._gone[socket_id] = None
            if len(self._gone) > GONE_REMEMBERED:
                self._gone.popitem(last=False)

    def signal(self, sender_id: str, signal: Signal) -> None:
        """Relays ``signal`` from the local socket ``sender_id``, or answers it with an error."""
        sender = self._endpoints[sender_id]
        verdict = sender.bucket.take()
        if verdict is Verdict.ABUSE:
            sender.close(POLICY_VIOLATION, "too many signals")
            return

        def refuse(reason: str, text: str) -> None:
            sender.send(_error(reason, text, signal.to, signal.relay_for))

        if verdict is Verdict.LIMITED:
            refuse("too-many-signals", f"too many signals: at most {self.rate:g} a second; slow down")
            return
        state = self.presence.state(sender_id)
        if state is None or state.video_id is None:
            refuse("not-watching", "watch a video before signalling")
            return
        address = sender_id if signal.relay_for is None else f"{sender_id}/{signal.relay_for}"
        self._route(state.video_id, address, signal, refuse)

    def _route(self, video_id: str, sender: str, signal: Signal, refuse: Callable[[str, str], None]) -> None:
        head, _, rest = signal.to.partition("/")
        target = self._endpoints.get(head)
        if target is not None:
            state = self.presence.state(head)
            if state is None or state.video_id != video_id:
                refuse("other-video", f"socket {head} does not watch the video you watch")
            else:
                target.send(_signal(sender, rest, signal.data))
            return
        if head in self._gone:
            refuse("gone", f"socket {head} has disconnected")
            return
        state = self.presence.state(head)
        if state is not None and self.remote is not None:  # held by presence, not joined here: another instance's
            if state.video_id != video_id:
                refuse("other-video", f"socket {head} does not watch the video you watch")
            else:
                self.remote(RemoteSignal(signal.to, sender, video_id, signal.data))
            return
        relayed = {"type": "signal", "to": signal.to, "relayFor": sender, "data": signal.data}
        if self.upstream is None or not self.upstream(video_id, relayed):
            refuse("unknown", f"no socket {head} here" + (" nor at the upstream" if self.upstream else ""))

    def from_instance(self, signal: RemoteSignal) -> None:
        """A signal another instance sharing presence passed on: delivered if its socket is here, on its video."""
        head, _, rest = signal.to.partition("/")
        target = self._endpoints.get(head)
        state = self.presence.state(head)
        if target is not None and state is not None and state.video_id == signal.video_id:
            target.send(_signal(signal.sender, rest, signal.data))

    def from_upstream(self, video_id: str, message: dict) -> None:
        """A signal, or a signal's error, that came down this node's socket at the upstream watching ``video_id``.

        It goes to the local socket its ``to`` (a signal) or ``for`` (an
        error) names, if that one watches the video; without either, to the
        node itself (``own``). Anything else is dropped with a line in the
        log (answering the upstream back could loop), and the asker's own
        timeout tells it.
        """
        is_error = message.get("type") == "error"
        address = message.get("for" if is_error else "to")
        if address is None and self.own is not None:
            self.own(video_id, message)
            return
        if not isinstance(address, str):
            log.info("signal from the upstream for this node itself, which takes none: %.200r", message)
            return
        head, _, rest = address.partition("/")
        target = self._endpoints.get(head)
        state = self.presence.state(head)
        if target is None or state is None or state.video_id != video_id:
            log.info("signal from the upstream for socket %s, which does not watch %s here", head, video_id)
            return
        if is_error:
            target.send(_error(message.get("reason"), message.get("error"), message.get("to"), rest or None))
        else:
            target.send(_signal(message.get("from"), rest, message.get("data")))


def _signal(sender: Any, rest: str, data: Any) -> dict:
    return {"type": "signal", "from": sender, **({"to": rest} if rest else {}), "data": data}


def _error(reason: Any, text: Any, to: Any, relay_for: str | None) -> dict:
    return {"type": "error", "error": text, "reason": reason, "to": to, **({"for": relay_for} if relay_for else {})}
