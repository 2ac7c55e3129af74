"""Who watches what: the presence state machine, free of any network code.

Every socket has a client address and watches at most one video. Each
operation that changes anything bumps :attr:`Presence.version` by one and
tells every subscriber what the socket's state now is; an operation that
changes nothing (watching the video already watched, leaving when watching
nothing) is silent. Changes carry a socket's whole state rather than a diff,
so applying one twice, or out of a stream shared between server instances,
gives the same result.

When server instances share presence (see :mod:`presence.shared`), the
sockets of the others are here too, each with the id of its instance, and
go through :meth:`Presence.put_remote`; the local operations concern this
instance's own sockets only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable


@dataclass(frozen=True)
class SocketState:
    """One socket as presence knows it."""

    ipaddress: str
    video_id: str | None = None
    # URL of the peer node serving this client, when the client is one.
    peer: str | None = None
    # The server instance the socket is connected to, when that is another one.
    instance: str | None = None


@dataclass(frozen=True)
class Change:
    """What subscribers hear: ``socket_id`` is now in ``state``, or gone when ``state`` is None.

    ``instance`` is the socket's instance, None for a socket of this one.
    """

    version: int
    socket_id: str
    state: SocketState | None
    instance: str | None = None


class Presence:
    """The sockets connected, their addresses, and the video each watches.

    Operations on a socket that was never connected, or is gone, raise
    ``KeyError``: the caller owns the socket's lifetime and must know.
    """

    def __init__(self) -> None:
        # This instance's id while presence is shared, shown in its own sockets' entries.
        self.instance: str | None = None
        self._version = 0
        self._sockets: dict[str, SocketState] = {}
        # video id -> its watchers' socket ids, in the order they started
        # watching (a dict as an ordered set: removal is O(1)). Videos nobody
        # watches have no entry.
        self._watchers: dict[str, dict[str, None]] = {}
        self._subscribers: list[Callable[[Change], None]] = []

    @property
    def version(self) -> int:
        """How many changes presence has gone through; 0 when new."""
        return self._version

    def subscribe(self, callback: Callable[[Change], None]) -> None:
        """Calls ``callback(change)`` after every change, once the state already shows it."""
        self._subscribers.append(callback)

    def connect(self, socket_id: str, ip: str) -> None:
        """Adds a socket watching nothing; ``ValueError`` if the id is taken."""
        if socket_id in self._sockets:
            raise ValueError(f"socket {socket_id!r} is already connected")
        self._set(socket_id, None, SocketState(ip))

    def watch(self, socket_id: str, video_id: str, peer: str | None = None) -> None:
        """Moves the socket to ``video_id`` (from whatever it watched), with ``peer`` as its peer URL."""
        old = self._sockets[socket_id]
        self._set(socket_id, old, replace(old, video_id=video_id, peer=peer))

    def leave(self, socket_id: str) -> None:
        """The socket watches nothing now; it stays connected."""
        old = self._sockets[socket_id]
        self._set(socket_id, old, replace(old, video_id=None, peer=None))

    def disconnect(self, socket_id: str) -> None:
        """Removes the socket from the sockets and from its video's watchers."""
        self._set(socket_id, self._sockets[socket_id], None)

    def put_remote(self, instance: str, socket_id: str, state: SocketState | None) -> None:
        """Sets a socket of another instance to ``state`` (its ``instance`` is set here), or removes it.

        A socket id this instance or a third one holds is left alone: ids are
        random, so that happens only when something is broken.
        """
        old = self._sockets.get(socket_id)
        if old is not None and old.instance != instance:
            return
        self._set(socket_id, old, None if state is None else replace(state, instance=instance), instance)

    def drop_videos_not_in(self, video_ids: Iterable[str]) -> None:
        """Moves this instance's watchers of every video not in ``video_ids`` (the catalog) to no video.

        Other instances see to their own sockets.
        """
        keep = set(video_ids)
        for video_id in [v for v in self._watchers if v not in keep]:
            for socket_id in list(self._watchers[video_id]):
                if self._sockets[socket_id].instance is None:
                    self.leave(socket_id)

    def socket_count(self) -> int:
        """Every socket presence holds, other instances' included."""
        return len(self._sockets)

    def state(self, socket_id: str) -> SocketState | None:
        """The socket's state (another instance's too), None for a socket presence does not hold."""
        return self._sockets.get(socket_id)

    def local_sockets(self) -> dict[str, SocketState]:
        """This instance's own sockets and their states."""
        return {socket_id: s for socket_id, s in self._sockets.items() if s.instance is None}

    def watched_videos(self) -> set[str]:
        """The videos someone watches (a copy)."""
        return set(self._watchers)

    def watchers(self, video_id: str) -> list[dict]:
        """``[{"ipaddress", "socketId"[, "peer"][, "instance"]}]`` for the video, new dicts the caller may keep."""
        return [self._entry(s) for s in self._watchers.get(video_id, ())]

    def snapshot(self) -> dict:
        """``{"version", "sockets": {socketId: ip}, "videos": {videoId: watchers}}``, ready for JSON."""
        return {
            "version": self._version,
            "sockets": {socket_id: s.ipaddress for socket_id, s in self._sockets.items()},
            "videos": {v: [self._entry(s) for s in ids] for v, ids in self._watchers.items()},
        }

    def _entry(self, socket_id: str) -> dict:
        return watcher_entry(socket_id, self._sockets[socket_id], self.instance)

    def _set(
        self, socket_id: str, old: SocketState | None, new: SocketState | None, instance: str | None = None
    ) -> None:
        """The one place state changes: keeps the watcher lists in step and notifies."""
        if old == new:
            return
        old_video = old.video_id if old else None
        new_video = new.video_id if new else None
        if old_video != new_video:
            if old_video is not None:
                watchers = self._watchers[old_video]
                del watchers[socket_id]
                if not watchers:
                    del self._watchers[old_video]
            if new_video is not None:
                self._watchers.setdefault(new_video, {})[socket_id] = None
        if new is None:
            del self._sockets[socket_id]
        else:
            self._sockets[socket_id] = new
        self._version += 1
        change = Change(self._version, socket_id, new, instance)
        for callback in list(self._subscribers):
            callback(change)


def watcher_entry(socket_id: str, state: SocketState, own_instance: str | None) -> dict:
    """A socket as presence lists it: ``{"ipaddress", "socketId"[, "peer"][, "instance"]}``.

    ``own_instance`` names the sockets of this server (their state names none).
    """
    entry = {"ipaddress": state.ipaddress, "socketId": socket_id}
    if state.peer is not None:
        entry["peer"] = state.peer
    instance = state.instance or own_instance
    if instance is not None:
        entry["instance"] = instance
    return entry
