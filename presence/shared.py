"""Presence shared between server instances: the records they exchange, and the picture of the others' sockets.

Every instance hands its records to one or two transports that give every
record to all the others, each transport in one order for everybody
(:mod:`presence.link`: a Pravega stream between machines, the parent's
relay between the worker processes of one server; nothing here knows
either). A record is one UTF-8 JSON object::

    {"v": 1, "type": "change", "instance": ID, "seq": N, "at": T, "socket": SID, "state": STATE | null}
    {"v": 1, "type": "snapshot", "instance": ID, "seq": N, "at": T, "sockets": {SID: STATE, ...}}
    {"v": 1, "type": "gone", "instance": ID, "seq": N, "at": T}
    {"v": 1, "type": "signal", "instance": ID, "seq": N, "at": T, "to": SID, "from": SID, "video": VIDEO_ID,
     "data": ANY}

with ``STATE`` = ``{"ipaddress": IP, "video": VIDEO_ID | null, "peer": URL | null}``,
``N`` the writer's count of its records (1, 2, ...: it tells a copy or a
late record from news) and ``T`` the writer's wall clock. A change is one socket's whole new state
(null: disconnected); a snapshot is all of an instance's sockets (any other
it had are gone), sent every few seconds as its heartbeat, which is what
lets a newcomer learn the picture from the last moments of the stream
alone; ``gone`` is an instance shutting down; ``signal`` is a WebRTC signal
(:mod:`presence.signalling`) from a socket of the writer for a socket of
another instance, which that one delivers if the socket is still its own
and watches ``video``; a replay skips signals, which are only for the
moment. A ``gone`` may also come from the relay for a worker it lost, with
the seq of that worker's last record. Every record is a sign of
life, and an instance not heard from for ``timeout`` seconds is taken for
dead: its sockets are dropped.

Records of another ``v``, or malformed, are skipped with a warning, so a
newer writer cannot confuse an older reader.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import ujson

from presence.state import Change, Presence, SocketState

log = logging.getLogger("binge.presence")

RECORD_VERSION = 1
# The transport name of RemoteInstances' callers that have one.
DEFAULT_SOURCE = "stream"
# Goodbyes and delivered signals remembered, to ignore their late copies.
GONE_REMEMBERED = 1024
SIGNALS_REMEMBERED = 4096


def change_record(instance: str, seq: int, change: Change, at: float) -> bytes:
    state = None if change.state is None else _state_json(change.state)
    return _encode({"type": "change", "instance": instance, "seq": seq, "at": at, "socket": change.socket_id,
                    "state": state})


def snapshot_record(instance: str, seq: int, sockets: dict[str, SocketState], at: float) -> bytes:
    states = {socket_id: _state_json(state) for socket_id, state in sockets.items()}
    return _encode({"type": "snapshot", "instance": instance, "seq": seq, "at": at, "sockets": states})


def gone_record(instance: str, seq: int, at: float) -> bytes:
    return _encode({"type": "gone", "instance": instance, "seq": seq, "at": at})


def signal_record(instance: str, seq: int, signal: RemoteSignal, at: float) -> bytes:
    return _encode({"type": "signal", "instance": instance, "seq": seq, "at": at, "to": signal.to,
                    "from": signal.sender, "video": signal.video_id, "data": signal.data})


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
    seq: int
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
        kind, instance, seq, at = raw["type"], raw["instance"], raw["seq"], raw["at"]
        if (not isinstance(instance, str) or not isinstance(seq, int) or isinstance(seq, bool)
                or not isinstance(at, (int, float)) or isinstance(at, bool)):
            raise ValueError("instance, seq or at missing")
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
            return Record(kind, instance, seq, float(at), {}, RemoteSignal(to, sender, video, raw["data"]))
        else:
            raise ValueError(f"unknown type {kind!r}")
        return Record(kind, instance, seq, float(at), sockets)
    except (ValueError, KeyError, TypeError) as e:
        log.warning("skipping a malformed presence record (%s): %.200r", e, data)
        return None


@dataclass
class _Instance:
    """What one instance's records say of its sockets, each with the ``seq`` of the record that said it.

    ``entries`` maps a socket to ``(seq, state)``, state None for one a
    change removed; ``base`` is the seq of the snapshot the entries build
    on. A record older than what is known of its socket is ignored, so one
    that comes twice (by two transports) or late changes nothing.
    """

    # When its last record came, on the monotonic clock.
    heard_at: float
    base: int = 0
    entries: dict[str, tuple[int, SocketState | None]] = field(default_factory=dict)
    # The transports that told of it (see RemoteInstances.end_replay).
    via: set[str] = field(default_factory=set)

    @property
    def sockets(self) -> dict[str, SocketState]:
        return {socket_id: state for socket_id, (_, state) in self.entries.items() if state is not None}

    def state(self, socket_id: str) -> SocketState | None:
        """The socket's state, None for one removed or never told of."""
        entry = self.entries.get(socket_id)
        return None if entry is None else entry[1]

    def apply(self, record: Record) -> None:
        if record.type == "snapshot":
            if record.seq > self.base:
                newer = {s: e for s, e in self.entries.items() if e[0] > record.seq}
                self.entries = {s: (record.seq, state) for s, state in record.sockets.items()} | newer
                self.base = record.seq
            return
        for socket_id, state in record.sockets.items():
            if record.seq > max(self.base, self.entries.get(socket_id, (0, None))[0]):
                self.entries[socket_id] = (record.seq, state)

    def merge(self, other: _Instance) -> None:
        """Takes in what ``other`` (the same instance, heard another way) knows that is newer."""
        self.base = max(self.base, other.base)
        entries = dict(self.entries)
        for socket_id, entry in other.entries.items():
            if entry[0] > entries.get(socket_id, (0, None))[0]:
                entries[socket_id] = entry
        self.entries = {s: e for s, e in entries.items() if e[0] >= self.base}
        self.heard_at = max(self.heard_at, other.heard_at)
        self.via |= other.via


@dataclass
class _Replay:
    instances: dict[str, _Instance] = field(default_factory=dict)
    # Instances the replay says have gone, with the seq of their goodbye.
    gone: dict[str, int] = field(default_factory=dict)


class RemoteInstances:
    """The other instances' sockets as their records say, kept in ``presence`` with :meth:`Presence.put_remote`.

    Records come from one or more transports (``source``, a name), each in
    its own order; a record can come by two of them (a sibling worker's
    through the parent's relay and through Pravega), and only the first
    copy counts: every record carries its writer's ``seq``, and what is
    known of a socket is only ever replaced by something newer (see
    :class:`_Instance`). A replay of one transport (after a start, or
    after it failed) goes between :meth:`begin_replay` and
    :meth:`end_replay`: it is gathered aside and then merged in one go, so
    remote sockets do not blink out while it runs, and the instances that
    transport alone had told of and its replay no longer holds are dropped.
    Records of the other transports meanwhile apply as they come. A
    replayed record's age is taken from its ``at``, capped at ``timeout``,
    so a dead instance found in a replay lasts no longer than it would have
    live (one long dead does not show at all); live records count as heard
    on arrival, so clocks that disagree do not matter there. Records of
    ``own`` (this instance) are ignored: its sockets are in ``presence``
    already. A live signal record for this instance goes to ``on_signal``,
    once however many transports bring it.
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
        self._replays: dict[str, _Replay] = {}
        # The last seq of instances that said goodbye: a late copy of an older record does not bring them back.
        self._gone: collections.OrderedDict[str, int] = collections.OrderedDict()
        # (instance, seq) of the signals delivered lately, so that a second copy is not delivered again.
        self._signals: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()

    def begin_replay(self, source: str = DEFAULT_SOURCE) -> None:
        self._replays[source] = _Replay()

    def end_replay(self, source: str = DEFAULT_SOURCE) -> bool:
        """Merges a finished replay of ``source`` into the picture; False, doing nothing, when none was under way.

        Instances the replay found silent for ``timeout`` already are left out.
        """
        replay = self._replays.pop(source, None)
        if replay is None:
            return False
        now = self._clock()
        before = {i: set(inst.sockets) for i, inst in self._live.items()}
        for instance, seq in replay.gone.items():
            self._forget(instance, seq)
        for instance in list(self._live):
            live = self._live[instance]
            if instance not in replay.instances and source in live.via:
                live.via.discard(source)
                if not live.via:
                    del self._live[instance]
        for instance, staged in replay.instances.items():
            if instance in self._live:
                self._live[instance].merge(staged)
            elif now - staged.heard_at < self.timeout:
                self._live[instance] = staged
        for instance in before.keys() | self._live.keys():
            self._show(instance, before.get(instance, set()) | _socket_ids(self._live, instance))
        return True

    def receive(self, data: bytes, source: str = DEFAULT_SOURCE) -> None:
        record = decode_record(data)
        if record is None or record.instance == self.own or self._gone.get(record.instance, -1) >= record.seq:
            return
        now = self._clock()
        replay = self._replays.get(source)
        if record.signal is not None:
            key = (record.instance, record.seq)
            if replay is None and key not in self._signals:  # a replayed signal is long answered or given up
                self._signals[key] = None
                if len(self._signals) > SIGNALS_REMEMBERED:
                    self._signals.popitem(last=False)
                if (live := self._live.get(record.instance)) is not None:
                    live.heard_at = max(live.heard_at, now)
                self.on_signal(record.signal)
            return
        if replay is not None:
            if record.type == "gone":
                replay.instances.pop(record.instance, None)
                replay.gone[record.instance] = record.seq
                return
            age = min(max(self._wall_clock() - record.at, 0.0), self.timeout)
            _apply(replay.instances, record, now - age, source)
            return
        if record.type == "gone":
            before = _socket_ids(self._live, record.instance)
            self._forget(record.instance, record.seq)
            self._show(record.instance, before)
        elif record.type == "change":
            _apply(self._live, record, now, source)
            self._show(record.instance, record.sockets.keys())
        else:
            before = _socket_ids(self._live, record.instance)
            _apply(self._live, record, now, source)
            self._show(record.instance, before | _socket_ids(self._live, record.instance))

    def expire(self) -> list[str]:
        """Drops the instances not heard from for ``timeout`` seconds; returns their ids."""
        now = self._clock()
        dead = [i for i, inst in self._live.items() if now - inst.heard_at > self.timeout]
        for instance in dead:
            socket_ids = set(self._live.pop(instance).sockets)
            self._show(instance, socket_ids)
        return dead

    def _forget(self, instance: str, seq: int) -> None:
        self._live.pop(instance, None)
        self._gone[instance] = max(seq, self._gone.get(instance, -1))
        self._gone.move_to_end(instance)
        if len(self._gone) > GONE_REMEMBERED:
            self._gone.popitem(last=False)

    def _show(self, instance: str, socket_ids: Iterable[str]) -> None:
        """Brings ``socket_ids`` of ``instance`` in presence to what the live picture says.

        Each socket is looked up on its own: a change names one socket of an
        instance that may hold thousands, and it comes a thousand times a
        second under load (bench/presence_scale.py at N workers).
        """
        current = self._live.get(instance)
        for socket_id in socket_ids:
            self.presence.put_remote(instance, socket_id, current.state(socket_id) if current else None)


def _apply(picture: dict[str, _Instance], record: Record, heard_at: float, source: str) -> None:
    instance = picture.setdefault(record.instance, _Instance(heard_at))
    instance.heard_at = max(instance.heard_at, heard_at)
    instance.via.add(source)
    instance.apply(record)


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
