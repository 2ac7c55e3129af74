"""Presence shared between server instances: the merge on its own, then real ``server.py`` processes on one Pravega.

The process tests run two or three servers on one scope of the shared
standalone Pravega (scripts/pravega) with a short ``pravega.instance_timeout``.
Without Java or Maven they are skipped, except under CI (env ``CI`` set),
where that is a failure.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from harness.http import get_json
from harness.loopback import until
from harness.presence import Client, Instance, Scope, watching
from pravega_workers.blocking import delete_scope, stream_manager
from presence.shared import (
    RemoteInstances, RemoteSignal, change_record, decode_record, gone_record, signal_record, snapshot_record,
)
from presence.state import Change, Presence, SocketState

# ---------------------------------------------------------------- the merge, no Pravega

TIMEOUT = 10.0


class Clocks:
    """A monotonic and a wall clock that move only when told."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def clocks():
    return Clocks()


@pytest.fixture
def presence():
    return Presence()


@pytest.fixture
def remote(presence, clocks):
    return RemoteInstances(presence, "me", TIMEOUT, clock=lambda: clocks.mono, wall_clock=lambda: clocks.wall)


# Each record made here is newer than the last, as one writer's are, unless a test says its seq.
SEQ = itertools.count(1)


def change(socket_id, ip="10.0.0.1", video=None, peer=None, gone=False, instance="A", at=0.0, seq=None) -> bytes:
    state = None if gone else SocketState(ip, video, peer)
    return change_record(instance, seq or next(SEQ), Change(1, socket_id, state), at)


def snapshot(sockets: dict[str, SocketState], instance="A", at=0.0, seq=None) -> bytes:
    return snapshot_record(instance, seq or next(SEQ), sockets, at)


def test_a_signal_record_round_trips_and_only_a_live_one_is_delivered(presence, clocks):
    heard = []
    remote = RemoteInstances(presence, "me", TIMEOUT, clock=lambda: clocks.mono, wall_clock=lambda: clocks.wall,
                             on_signal=heard.append)
    signal = RemoteSignal("s2/below", "s1", "alpha", {"type": "offer", "sdp": "v=0"})
    record = decode_record(signal_record("A", 3, signal, 5.0))
    assert (record.type, record.instance, record.seq, record.signal, record.sockets) == ("signal", "A", 3, signal, {})
    remote.begin_replay()
    remote.receive(signal_record("A", 1, signal, clocks.wall))
    remote.end_replay()
    assert heard == []  # replayed: long answered or given up
    remote.receive(signal_record("A", 2, signal, clocks.wall))
    remote.receive(signal_record("A", 2, signal, clocks.wall), "relay")  # the same, by another transport
    remote.receive(signal_record("me", 3, signal, clocks.wall))  # our own
    assert heard == [signal] and presence.version == 0


def test_records_round_trip():
    record = decode_record(change("s1", video="alpha", peer="http://10.0.0.1:8080", at=5.5))
    assert (record.type, record.instance, record.at) == ("change", "A", 5.5)
    assert record.sockets == {"s1": SocketState("10.0.0.1", "alpha", "http://10.0.0.1:8080")}
    assert decode_record(change("s1", gone=True)).sockets == {"s1": None}
    sockets = {"s1": SocketState("10.0.0.1"), "s2": SocketState("10.0.0.2", "beta")}
    assert decode_record(snapshot(sockets)).sockets == sockets
    gone = decode_record(gone_record("A", 9, 7.0))
    assert (gone.type, gone.instance, gone.seq, gone.sockets) == ("gone", "A", 9, {})


@pytest.mark.parametrize("data", [
    b"not json", b"[]", b'{"v": 2, "type": "gone", "instance": "A", "at": 1}',
    b'{"v": 1, "type": "gone", "instance": 3, "seq": 1, "at": 1}', b'{"v": 1, "type": "gone", "instance": "A", "at": 1}',
    b'{"v": 1, "type": "later", "instance": "A", "seq": 1, "at": 1}',
    b'{"v": 1, "type": "change", "instance": "A", "seq": 1, "at": 1, "socket": "s", "state": {"ipaddress": 1}}',
    b'{"v": 1, "type": "snapshot", "instance": "A", "seq": 1, "at": 1, "sockets": []}',
])
def test_unusable_records_are_skipped(remote, presence, data):
    assert decode_record(data) is None
    remote.receive(data)
    assert presence.version == 0


def test_a_remote_change_shows_with_its_instance_and_is_heard_as_remote(remote, presence):
    heard = []
    presence.subscribe(heard.append)
    remote.receive(change("s1", video="alpha"))
    assert presence.snapshot()["videos"] == {"alpha": [{"ipaddress": "10.0.0.1", "socketId": "s1", "instance": "A"}]}
    assert heard == [Change(1, "s1", SocketState("10.0.0.1", "alpha", instance="A"), "A")]
    remote.receive(change("s1", gone=True))
    assert presence.snapshot()["sockets"] == {}
    assert heard[-1] == Change(2, "s1", None, "A")


def test_own_records_are_ignored(remote, presence):
    remote.receive(change("s1", instance="me"))
    remote.receive(snapshot({"s2": SocketState("10.0.0.2")}, instance="me"))
    assert presence.version == 0


def test_a_snapshot_replaces_the_instance_sockets_and_an_unchanged_one_is_silent(remote, presence):
    remote.receive(change("s1", video="alpha"))
    remote.receive(change("s2"))
    remote.receive(change("b1", instance="B"))
    remote.receive(snapshot({"s2": SocketState("10.0.0.1", "beta"), "s3": SocketState("10.0.0.3")}))
    assert presence.snapshot()["sockets"] == {"s2": "10.0.0.1", "s3": "10.0.0.3", "b1": "10.0.0.1"}
    assert list(presence.snapshot()["videos"]) == ["beta"]
    version = presence.version
    remote.receive(snapshot({"s2": SocketState("10.0.0.1", "beta"), "s3": SocketState("10.0.0.3")}))
    assert presence.version == version


def test_gone_drops_the_instance_at_once(remote, presence):
    remote.receive(change("s1"))
    remote.receive(change("b1", instance="B"))
    remote.receive(gone_record("A", next(SEQ), 0.0))
    assert presence.snapshot()["sockets"] == {"b1": "10.0.0.1"}


def test_a_silent_instance_expires_after_the_timeout(remote, presence, clocks):
    remote.receive(change("s1"))
    clocks.advance(6)
    remote.receive(change("b1", instance="B"))
    clocks.advance(TIMEOUT - 6)
    assert remote.expire() == []
    clocks.advance(1)
    assert remote.expire() == ["A"]
    assert presence.snapshot()["sockets"] == {"b1": "10.0.0.1"}
    # Any record is a sign of life.
    remote.receive(snapshot({"b1": SocketState("10.0.0.1")}, instance="B"))
    clocks.advance(TIMEOUT - 1)
    assert remote.expire() == []
    # An instance back from the dead shows again with its next record.
    remote.receive(snapshot({"s1": SocketState("10.0.0.1")}))
    assert set(presence.snapshot()["sockets"]) == {"s1", "b1"}


def test_a_replay_is_gathered_aside_then_replaces_the_picture(remote, presence, clocks):
    remote.receive(change("s1", video="alpha"))
    remote.receive(change("s2"))
    version = presence.version
    remote.begin_replay()
    remote.receive(snapshot({"s1": SocketState("10.0.0.1", "alpha")}, at=clocks.wall))
    remote.receive(change("s3", at=clocks.wall))
    assert presence.version == version, "nothing shows before the replay is over"
    assert remote.end_replay() is True
    assert presence.snapshot()["sockets"] == {"s1": "10.0.0.1", "s3": "10.0.0.1"}
    # s1 was there all along, unchanged: only s2 leaving and s3 arriving are changes.
    assert presence.version == version + 2
    assert remote.end_replay() is False


def test_a_replayed_record_is_as_old_as_its_writer_says(remote, presence, clocks):
    remote.begin_replay()
    remote.receive(snapshot({"old": SocketState("10.0.0.1")}, instance="A", at=clocks.wall - 8))
    # A writer whose clock is ahead of ours is taken as heard now, not in the future.
    remote.receive(snapshot({"new": SocketState("10.0.0.2")}, instance="B", at=clocks.wall + 60))
    remote.receive(snapshot({"dead": SocketState("10.0.0.3")}, instance="C", at=clocks.wall - 30))
    remote.end_replay()
    assert set(presence.snapshot()["sockets"]) == {"old", "new"}
    clocks.advance(2.5)
    assert remote.expire() == ["A"]
    clocks.advance(TIMEOUT - 2.5)
    assert remote.expire() == []


# ---- two transports (the workers' relay and Pravega): a record may come twice, or late

def test_a_record_by_a_second_transport_changes_nothing(remote, presence):
    first, second = change("s1", video="alpha"), snapshot({"s1": SocketState("10.0.0.1", "alpha"),
                                                          "s2": SocketState("10.0.0.2")})
    for record in (first, second):
        remote.receive(record, "relay")
    version = presence.version
    for record in (first, second):
        remote.receive(record, "pravega")
    assert presence.version == version
    assert set(presence.snapshot()["sockets"]) == {"s1", "s2"}


def test_an_older_record_arriving_late_is_ignored_socket_by_socket(remote, presence):
    # By the relay: s1 watches alpha (seq 5), s2 arrives (6), then a snapshot of both (7) and s1 leaves (8).
    remote.receive(change("s1", video="alpha", seq=5), "relay")
    remote.receive(change("s2", seq=6), "relay")
    remote.receive(snapshot({"s1": SocketState("10.0.0.1", "alpha"), "s2": SocketState("10.0.0.1")}, seq=7), "relay")
    remote.receive(change("s1", gone=True, seq=8), "relay")
    # Pravega brings the same, late and so in a mixed order with the above: none of it is news.
    version = presence.version
    remote.receive(change("s1", video="alpha", seq=5), "pravega")
    remote.receive(snapshot({"s1": SocketState("10.0.0.1", "alpha"), "s2": SocketState("10.0.0.1")}, seq=7), "pravega")
    assert presence.version == version and set(presence.snapshot()["sockets"]) == {"s2"}
    # A change newer than a snapshot that comes after it survives the snapshot.
    remote.receive(change("s3", seq=10), "relay")
    remote.receive(snapshot({"s2": SocketState("10.0.0.1")}, seq=9), "pravega")
    assert set(presence.snapshot()["sockets"]) == {"s2", "s3"}


def test_a_goodbye_is_not_undone_by_a_late_copy_but_a_newer_record_brings_the_instance_back(remote, presence):
    remote.receive(change("s1", seq=1), "relay")
    remote.receive(gone_record("A", 1, 0.0), "relay")  # the relay lost A after its seq 1
    remote.receive(change("s1", seq=1), "pravega")
    assert presence.snapshot()["sockets"] == {}
    remote.receive(snapshot({"s1": SocketState("10.0.0.1")}, seq=2), "relay")  # A reconnected
    assert set(presence.snapshot()["sockets"]) == {"s1"}


def test_a_replay_of_one_transport_leaves_what_only_the_other_told_of(remote, presence, clocks):
    remote.receive(change("b1", instance="B"), "relay")  # a sibling worker, not yet in Pravega
    remote.receive(change("c1", instance="C"), "pravega")  # another machine, gone while Pravega was away
    remote.receive(change("a1"), "relay")
    remote.receive(change("a1", seq=next(SEQ) - 1), "pravega")
    remote.begin_replay("pravega")
    remote.receive(snapshot({"a1": SocketState("10.0.0.1")}, at=clocks.wall), "pravega")
    # The relay's records apply while Pravega replays.
    remote.receive(change("b2", instance="B"), "relay")
    assert set(presence.snapshot()["sockets"]) == {"a1", "b1", "b2", "c1"}
    remote.end_replay("pravega")
    assert set(presence.snapshot()["sockets"]) == {"a1", "b1", "b2"}


def test_local_operations_concern_local_sockets_only(remote, presence):
    presence.instance = "me"
    presence.connect("mine", "10.0.0.9")
    presence.watch("mine", "alpha")
    remote.receive(change("theirs", video="alpha"))
    assert presence.socket_count() == 2
    assert presence.local_sockets() == {"mine": SocketState("10.0.0.9", "alpha")}
    assert presence.watchers("alpha") == [
        {"ipaddress": "10.0.0.9", "socketId": "mine", "instance": "me"},
        {"ipaddress": "10.0.0.1", "socketId": "theirs", "instance": "A"},
    ]
    presence.drop_videos_not_in([])
    assert presence.snapshot()["videos"] == {"alpha": [{"ipaddress": "10.0.0.1", "socketId": "theirs",
                                                        "instance": "A"}]}
    # An id held here or by another instance is never taken over.
    remote.receive(change("mine", ip="6.6.6.6", instance="B"))
    remote.receive(change("theirs", ip="6.6.6.6", instance="B"))
    assert presence.snapshot()["sockets"] == {"mine": "10.0.0.9", "theirs": "10.0.0.1"}


# ---------------------------------------------------------------- real servers on one Pravega

INSTANCE_TIMEOUT = 3.0
# The bound: a watcher on one instance shows on another within this.
PROPAGATION = 2.0


@pytest.fixture
def scope(controller_uri, tmp_path):
    scope = Scope(controller_uri, tmp_path, INSTANCE_TIMEOUT)
    yield scope
    for instance in scope.instances:
        instance.stop()
    delete_scope(stream_manager(controller_uri), scope.name)


async def _has_socket(instance: Instance, socket_id: str) -> bool:
    return socket_id in (await instance.presence())["sockets"]


async def _lacks_socket(instance: Instance, socket_id: str) -> bool:
    return socket_id not in (await instance.presence())["sockets"]


async def _has_watchers(instance: Instance, socket_ids: set[str]) -> bool:
    watchers = (await instance.presence())["videos"].get("clip", [])
    return {w["socketId"] for w in watchers} >= socket_ids


def _entry(presence: dict, socket_id: str) -> dict:
    return next(w for w in presence["videos"]["clip"] if w["socketId"] == socket_id)


@pytest.mark.pravega
def test_a_watcher_on_one_instance_shows_on_the_other_and_so_does_its_leaving(scope):
    async def check():
        a, b = scope.start("a"), scope.start("b")
        await asyncio.gather(a.ready(), b.ready())
        on_b = await Client().connect(b)
        viewer = await Client().connect(a)
        # Both instances know both sockets before the timed part starts.
        await until(lambda: _has_socket(b, viewer.socket_id), 10)
        await until(lambda: _has_socket(a, on_b.socket_id), 10)

        started = time.monotonic()
        viewer.send({"type": "watch", "video": "clip"})
        seen = await on_b.presence_until(watching(viewer.socket_id, "clip"), PROPAGATION)
        assert time.monotonic() - started < PROPAGATION
        listed = await b.presence()
        assert watching(viewer.socket_id, "clip")(listed)
        assert listed["sockets"][on_b.socket_id] == listed["sockets"][viewer.socket_id] == "127.0.0.1"
        # The entry names the instance the socket is on, the same on both.
        on_a = await a.presence()
        assert _entry(seen, viewer.socket_id) == _entry(listed, viewer.socket_id) == _entry(on_a, viewer.socket_id)
        assert _entry(on_a, viewer.socket_id)["ipaddress"] == "127.0.0.1"
        video = await get_json(f"{b.url}/videos/clip")
        assert viewer.socket_id in [w["socketId"] for w in video["activeUsers"]]
        assert on_b.socket_id in on_a["sockets"]

        viewer.send({"type": "leave"})
        await on_b.presence_until(lambda p: "clip" not in p["videos"] and viewer.socket_id in p["sockets"],
                                  PROPAGATION)
        viewer.send({"type": "watch", "video": "clip"})
        await on_b.presence_until(watching(viewer.socket_id, "clip"), PROPAGATION)
        started = time.monotonic()
        viewer.conn.close()
        await on_b.presence_until(lambda p: viewer.socket_id not in p["sockets"], PROPAGATION)
        assert time.monotonic() - started < PROPAGATION

    asyncio.run(check())


@pytest.mark.pravega
def test_a_signal_crosses_to_a_socket_of_another_instance_and_the_answer_comes_back(scope):
    async def check():
        a, b = scope.start("a"), scope.start("b")
        await asyncio.gather(a.ready(), b.ready())
        on_a, on_b, idle = await Client().connect(a), await Client().connect(b), await Client().connect(b)
        for client in (on_a, on_b):
            client.send({"type": "watch", "video": "clip"})
        await on_a.presence_until(lambda p: watching(on_b.socket_id, "clip")(p) and idle.socket_id in p["sockets"],
                                  PROPAGATION)
        started = time.monotonic()
        on_a.send({"type": "signal", "to": on_b.socket_id, "data": {"type": "offer"}})
        assert await on_b.relayed() == {"type": "signal", "from": on_a.socket_id, "data": {"type": "offer"}}
        on_b.send({"type": "signal", "to": on_a.socket_id, "data": {"type": "answer"}})
        assert await on_a.relayed() == {"type": "signal", "from": on_b.socket_id, "data": {"type": "answer"}}
        # Two trips through the stream, each about one poll of the follow worker.
        assert time.monotonic() - started < 2 * PROPAGATION
        # A socket of the other instance watching nothing is refused here, as a local one is.
        on_a.send({"type": "signal", "to": idle.socket_id, "data": {}})
        error = await on_a.relayed()
        assert (error["type"], error["reason"], error["to"]) == ("error", "other-video", idle.socket_id)
        # idle heard nothing: the next signal it gets is one from its own instance.
        idle.send({"type": "watch", "video": "clip"})
        await on_b.presence_until(watching(idle.socket_id, "clip"), PROPAGATION)
        on_b.send({"type": "signal", "to": idle.socket_id, "data": "hello"})
        assert await idle.relayed() == {"type": "signal", "from": on_b.socket_id, "data": "hello"}

    asyncio.run(check())


def _silent_instances_dropped(instance: Instance) -> int:
    """How many times ``instance`` has dropped another for going silent (presence/pravega_link.py logs each)."""
    return instance.log_tail(100_000).count(" silent for ")


@pytest.mark.pravega
def test_a_killed_instance_expires_and_a_stopped_one_leaves_at_once(scope):
    async def check():
        a, b, c = scope.start("a"), scope.start("b"), scope.start("c")
        await asyncio.gather(a.ready(), b.ready(), c.ready())
        on_a, on_c = await Client().connect(a), await Client().connect(c)
        on_a.send({"type": "watch", "video": "clip"})
        on_c.send({"type": "watch", "video": "clip"})
        await until(lambda: _has_watchers(b, {on_a.socket_id, on_c.socket_id}), 10)

        a.kill()
        killed = time.monotonic()
        await asyncio.sleep(0.5)
        assert await _has_socket(b, on_a.socket_id), "dropped before its time"
        await until(lambda: _lacks_socket(b, on_a.socket_id), INSTANCE_TIMEOUT + 2)
        # Silent since its last heartbeat, at most a third of the timeout before the kill.
        assert time.monotonic() - killed > INSTANCE_TIMEOUT * 2 / 3 - 0.5
        assert await _has_socket(b, on_c.socket_id)

        # A clean stop says so: its sockets go at once, not after the timeout. That is told by
        # the cause, not by the clock: b logs every instance it drops for silence (a's, so far),
        # and however long a starved machine takes over c's shutdown, c's must not be one.
        expired = _silent_instances_dropped(b)
        assert expired >= 1, "b's log shows no drop for silence, not even a's: the check below would see nothing"
        c.stop()
        await until(lambda: _lacks_socket(b, on_c.socket_id), PROPAGATION)
        assert _silent_instances_dropped(b) == expired, "c was dropped for silence, not for its goodbye"

    asyncio.run(check())


@pytest.mark.pravega
def test_a_new_instance_learns_the_picture_from_a_stream_kept_short(scope):
    async def check():
        a = scope.start("a")
        await a.ready()
        on_a = await Client().connect(a)
        on_a.send({"type": "watch", "video": "clip"})
        await on_a.presence_until(watching(on_a.socket_id, "clip"), 5)
        # Past the timeout the stream's head moves on, so a replay reads only the last few seconds.
        await asyncio.sleep(INSTANCE_TIMEOUT * 2.5)
        head, records = await asyncio.to_thread(scope.presence_stream)
        assert head > 0 and len(records) < 4 * 2.5 * 2
        # What is left holds a snapshot of A with its watcher: enough for a newcomer.
        assert any(r.type == "snapshot" and r.sockets.get(on_a.socket_id) == SocketState("127.0.0.1", "clip")
                   for r in records)
        b = scope.start("b")
        await b.ready()
        await until(lambda: _has_watchers(b, {on_a.socket_id}), PROPAGATION)

    asyncio.run(check())
