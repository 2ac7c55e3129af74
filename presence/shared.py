"""Presence shared between server instances: the records they exchange, and the picture of the others' sockets.

Every instance appends records to one stream that all of them follow, in
one order for everybody (the transport is :mod:`presence.pravega_link`;
nothing here knows Pravega). A record is one UTF-8 JSON object::

    {"v": 1, "type": "change", "instance": ID, "at": T, "socket": SID, "state": STATE | null}
    {"v": 1, "type": "snapshot", "instance": ID, "at": T, "sockets": {SID: STATE, ...}}
    {"v": 1, "type": "gone", "instance": ID, "at": T}
    {"v": 1, "type": "signal", "instance": ID, "at": T, "to": SID, "from": SID, "video": VIDEO_ID, "data": ANY}

with ``STATE`` = ``{"ipaddress": IP, "video": VIDEO_ID | null, "peer": URL | null}``
and ``T`` the writer's wall clock. A change is one socket's whole new state
(null: disconnected); a snapshot is all of an instance's sockets (any other
it had are gone), sent every few seconds as its heartbeat, which is what
lets a newcomer learn the picture from the last moments of the stream
alone; ``gone`` is an instance shutting down; ``signal`` is a WebRTC signal
(:mod:`presence.signalling`) from a socket of the writer for a socket of
another instance, which that one delivers if the socket is still its own
and watches ``video``; a replay skips signals, which are only for the
moment. Every record is a sign of
life, and an instance not heard from for ``timeout`` seconds is taken for
dead: its sockets are dropped.

Records of another ``v``, or malformed, are skipped with a warning, so a
newer writer cannot confuse an older reader.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import ujson

from presence.state import Change, Presence, SocketState

log = logging.getLogger("binge.presence")

RECORD_VERSION = 1


def change_record(instance: str, change: Change, at: float) -> bytes:
    state = None if change.state is None else _state_json(change.state)
    return _encode({"type": "change", "instance": instance, "at": at, "socket": change.socket_id, "state": state})


def snapshot_record(instance: str, sockets: dict[str, SocketState], at: float) -> bytes:
    states = {socket_id: _state_json(state) for socket_id, state in sockets.items()}
    return _encode({"type": "snapshot", "instance": instance, "at": at, "sockets": states})


def gone_record(instance: str, at: float) -> bytes:
    return _encode({"type": "gone", "instance": instance, "at": at})


def signal_record(instance: str, signal: RemoteSignal, at: float) -> bytes:
    return _encode({"type": "signal", "instance": instance, "at": at, "to": signal.to, "from": signal.sender,
                    "video": signal.video_id, "data": signal.data})


@dataclass(frozen=True)
class RemoteSignal:
    """A signal from ``sender`` for ``to`` (both socket addresses), between two watchers of ``video_id``."""

    to: str
    sender: str
    video_id: str
    data: Any


@dataclass(frozen=True)
class Record:
    """A decoded record; ``sockets`` holds what it says of the instance's sockets (None: removed)."""

    type: str
    instance: str
    at: float
    sockets: dict[str, SocketState | None]
    signal: RemoteSignal | None = None


def decode_record(data: bytes) -> Record | None:
    """The record ``data`` holds; None, with a warning, for one this version cannot use."""
    try:
        raw = ujson.loads(data)
        if not isinstance(raw, dict) or raw.get("v") != RECORD_VERSION:
            log.warning("skipping a presence record of an unknown version: %.200r", data)
            return None
        kind, instance, at = raw["type"], raw["instance"], raw["at"]
        if not isinstance(instance, str) or not isinstance(at, (int, float)) or isinstance(at, bool):
            raise ValueError("instance or at missing")
        if kind == "change":
            if not isinstance(raw["socket"], str):
                raise ValueError("socket missing")
            sockets = {raw["socket"]: None if raw["state"] is None else _state(raw["state"])}
        elif kind == "snapshot":
            if not isinstance(raw["sockets"], dict):
                raise ValueError("sockets missing")
            sockets = {str(socket_id): _state(state) for socket_id, state in raw["sockets"].items()}
        elif kind == "gone":
            sockets = {}
        elif kind == "signal":
            to, sender, video = raw["to"], raw["from"], raw["video"]
            if not all(isinstance(x, str) for x in (to, sender, video)) or "data" not in raw:
                raise ValueError("to, from, video or data missing")
            return Record(kind, instance, float(at), {}, RemoteSignal(to, sender, video, raw["data"]))
        else:
            raise ValueError(f"unknown type {kind!r}")
        return Record(kind, instance, float(at), sockets)
    except (ValueError, KeyError, TypeError) as e:
        log.warning("skipping a malformed presence record (%s): %.200r", e, data)
        return None


@dataclass
class _Instance:
    sockets: dict[str, SocketState]
    # When its last record came, on the monotonic clock.
    heard_at: float


class RemoteInstances:
    """The other instances' sockets as their records say, kept in ``presence`` with :meth:`Presence.put_remote`.

    Records are fed in stream order to :meth:`receive`. A replay of the
    stream (after a start, or after the transport failed) goes between
    :meth:`begin_replay` and :meth:`end_replay`: it is gathered aside and
    then replaces the picture in one go, so remote sockets do not blink out
    while it runs. A replayed record's age is taken from its ``at``, capped
    at ``timeout``, so a dead instance found in a replay lasts no longer
    than it would have live (one long dead does not show at all); live records count as heard on arrival, so
    clocks that disagree do not matter there. Records of ``own`` (this
    instance) are ignored: its sockets are in ``presence`` already. A live
    signal record for this instance goes to ``on_signal``.
    """

    def __init__(
        self,
        presence: Presence,
        own: str,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_signal: Callable[[RemoteSignal], None] = lambda signal: None,
    ) -> None:
        self.presence = presence
        self.on_signal = on_signal
        self.own = own
        self.timeout = timeout
        self._clock = clock
        self._wall_clock = wall_clock
        self._live: dict[str, _Instance] = {}
        self._staging: dict[str, _Instance] | None = None

    def begin_replay(self) -> None:
        self._staging = {}

    def end_replay(self) -> bool:
        """Makes a finished replay the picture; False, doing nothing, when no replay was under way.

        Instances the replay found silent for ``timeout`` already are left out.
        """
        if self._staging is None:
            return False
        now = self._clock()
        old = self._live
        self._live = {i: inst for i, inst in self._staging.items() if now - inst.heard_at < self.timeout}
        self._staging = None
        for instance in old.keys() | self._live.keys():
            self._show(instance, _socket_ids(old, instance) | _socket_ids(self._live, instance))
        return True

    def receive(self, data: bytes) -> None:
        record = decode_record(data)
        if record is None or record.instance == self.own:
            return
        now = self._clock()
        if record.signal is not None:
            if self._staging is None:  # a replayed signal is long answered or given up
                if (live := self._live.get(record.instance)) is not None:
                    live.heard_at = max(live.heard_at, now)
                self.on_signal(record.signal)
            return
        if self._staging is not None:
            age = min(max(self._wall_clock() - record.at, 0.0), self.timeout)
            _apply(self._staging, record, now - age)
            return
        if record.type == "change":
            _apply(self._live, record, now)
            self._show(record.instance, record.sockets.keys())
        else:
            before = _socket_ids(self._live, record.instance)
            _apply(self._live, record, now)
            self._show(record.instance, before | _socket_ids(self._live, record.instance))

    def expire(self) -> list[str]:
        """Drops the instances not heard from for ``timeout`` seconds; returns their ids."""
        now = self._clock()
        dead = [i for i, inst in self._live.items() if now - inst.heard_at > self.timeout]
        for instance in dead:
            socket_ids = set(self._live.pop(instance).sockets)
            self._show(instance, socket_ids)
        return dead

    def _show(self, instance: str, socket_ids: Iterable[str]) -> None:
        """Brings ``socket_ids`` of ``instance`` in presence to what the live picture says."""
        current = self._live.get(instance)
        for socket_id in socket_ids:
            state = current.sockets.get(socket_id) if current else None
            self.presence.put_remote(instance, socket_id, state)


def _apply(picture: dict[str, _Instance], record: Record, heard_at: float) -> None:
    if record.type == "gone":
        picture.pop(record.instance, None)
        return
    instance = picture.setdefault(record.instance, _Instance({}, heard_at))
    instance.heard_at = max(instance.heard_at, heard_at)
    if record.type == "snapshot":
        instance.sockets = dict(record.sockets)
        return
    for socket_id, state in record.sockets.items():
        if state is None:
            instance.sockets.pop(socket_id, None)
        else:
            instance.sockets[socket_id] = state


def _socket_ids(picture: dict[str, _Instance], instance: str) -> set[str]:
    current = picture.get(instance)
    return set(current.sockets) if current else set()


def _encode(record: dict) -> bytes:
    return ujson.dumps({"v": RECORD_VERSION, **record}, ensure_ascii=False, escape_forward_slashes=False).encode()


def _state_json(state: SocketState) -> dict:
    return {"ipaddress": state.ipaddress, "video": state.video_id, "peer": state.peer}


def _state(raw: dict) -> SocketState:
    ip, video, peer = raw["ipaddress"], raw["video"], raw["peer"]
    if not isinstance(ip, str) or not isinstance(video, (str, type(None))) or not isinstance(peer, (str, type(None))):
        raise ValueError(f"bad socket state {raw!r}")
    return SocketState(ip, video, peer)
