"""Presence: the state machine on its own, then real websockets against the real app on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest
import ujson
from hypothesis import given
from hypothesis import strategies as st
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from harness.clients import upgrade_request
from ops.limits import TokenBucket, Verdict
from presence.broadcast import Broadcaster
from presence.messages import BadMessage, check_peer
from presence.state import Change, Presence, SocketState
from settings import PresenceSettings
from tests.conftest import make_config

# ---------------------------------------------------------------- Presence, no HTTP


def test_connect_watch_leave_disconnect():
    p = Presence()
    p.connect("s1", "10.0.0.1")
    p.connect("s2", "10.0.0.2")
    p.watch("s1", "alpha")
    p.watch("s2", "alpha")
    assert p.snapshot() == {
        "version": 4,
        "sockets": {"s1": "10.0.0.1", "s2": "10.0.0.2"},
        "videos": {"alpha": [{"ipaddress": "10.0.0.1", "socketId": "s1"},
                             {"ipaddress": "10.0.0.2", "socketId": "s2"}]},
    }
    p.leave("s1")
    assert p.watchers("alpha") == [{"ipaddress": "10.0.0.2", "socketId": "s2"}]
    p.disconnect("s2")
    assert p.snapshot() == {"version": 6, "sockets": {"s1": "10.0.0.1"}, "videos": {}}
    assert p.socket_count() == 1


def test_watch_moves_the_socket_and_repeats_are_silent():
    p = Presence()
    p.connect("s1", "10.0.0.1")
    p.watch("s1", "alpha")
    p.watch("s1", "beta")
    assert p.snapshot()["videos"] == {"beta": [{"ipaddress": "10.0.0.1", "socketId": "s1"}]}
    version = p.version
    p.watch("s1", "beta")
    p.leave("s1")
    p.leave("s1")
    assert p.version == version + 1
    assert p.watchers("alpha") == p.watchers("beta") == []


def test_peer_is_part_of_the_entry_only_when_set():
    p = Presence()
    p.connect("s1", "10.0.0.1")
    p.watch("s1", "alpha", peer="http://10.0.0.1:8081")
    assert p.watchers("alpha") == [{"ipaddress": "10.0.0.1", "socketId": "s1", "peer": "http://10.0.0.1:8081"}]
    p.watch("s1", "alpha")
    assert p.watchers("alpha") == [{"ipaddress": "10.0.0.1", "socketId": "s1"}]


def test_watchers_and_snapshot_are_copies():
    p = Presence()
    p.connect("s1", "10.0.0.1")
    p.watch("s1", "alpha")
    p.watchers("alpha")[0]["ipaddress"] = "6.6.6.6"
    p.snapshot()["videos"]["alpha"].clear()
    assert p.watchers("alpha") == [{"ipaddress": "10.0.0.1", "socketId": "s1"}]


def test_subscribers_hear_each_change_with_the_state_after_it():
    p = Presence()
    heard: list[tuple[Change, dict]] = []
    p.subscribe(lambda change: heard.append((change, p.snapshot())))
    p.connect("s1", "10.0.0.1")
    p.watch("s1", "alpha", peer="http://10.0.0.1")
    p.watch("s1", "alpha", peer="http://10.0.0.1")
    p.disconnect("s1")
    assert [c for c, _ in heard] == [
        Change(1, "s1", SocketState("10.0.0.1")),
        Change(2, "s1", SocketState("10.0.0.1", "alpha", "http://10.0.0.1")),
        Change(3, "s1", None),
    ]
    assert all(snapshot["version"] == change.version for change, snapshot in heard)


def test_drop_videos_not_in_moves_their_watchers_to_no_video():
    p = Presence()
    for n, video in enumerate(["alpha", "beta", "alpha"]):
        p.connect(f"s{n}", "10.0.0.1")
        p.watch(f"s{n}", video)
    p.drop_videos_not_in({"beta", "gamma"})
    assert list(p.snapshot()["videos"]) == ["beta"]
    assert p.socket_count() == 3


def test_unknown_and_duplicate_sockets_are_caller_errors():
    p = Presence()
    p.connect("s1", "10.0.0.1")
    with pytest.raises(ValueError):
        p.connect("s1", "10.0.0.2")
    for op in (lambda: p.watch("nope", "alpha"), lambda: p.leave("nope"), lambda: p.disconnect("nope")):
        with pytest.raises(KeyError):
            op()
    assert p.version == 1


SOCKETS = st.sampled_from(["s0", "s1", "s2", "s3"])
VIDEOS = st.sampled_from(["alpha", "beta", "gamma"])
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("connect"), SOCKETS),
        st.tuples(st.just("watch"), SOCKETS, VIDEOS),
        st.tuples(st.just("leave"), SOCKETS),
        st.tuples(st.just("disconnect"), SOCKETS),
        st.tuples(st.just("drop"), st.frozensets(VIDEOS)),
    ),
    max_size=40,
)


@given(OPERATIONS)
def test_random_operations_match_a_simple_model(operations):
    p = Presence()
    changes: list[Change] = []
    p.subscribe(changes.append)
    model: dict[str, str | None] = {}  # socket -> the video it watches
    gone = object()
    for name, *args in operations:
        before, version = dict(model), p.version
        if name == "connect" and args[0] not in model:
            p.connect(args[0], "ip-" + args[0])
            model[args[0]] = None
        elif name == "watch" and args[0] in model:
            p.watch(*args)
            model[args[0]] = args[1]
        elif name == "leave" and args[0] in model:
            p.leave(args[0])
            model[args[0]] = None
        elif name == "disconnect" and args[0] in model:
            p.disconnect(args[0])
            del model[args[0]]
        elif name == "drop":
            p.drop_videos_not_in(args[0])
            model = {s: v if v in args[0] else None for s, v in model.items()}
        changed = sum(model.get(s, gone) != before.get(s, gone) for s in set(model) | set(before))
        assert p.version == version + changed
    snapshot = p.snapshot()
    assert snapshot["sockets"] == {s: "ip-" + s for s in model}
    assert {v: sorted(e["socketId"] for e in entries) for v, entries in snapshot["videos"].items()} == {
        v: sorted(s for s, w in model.items() if w == v) for v in set(model.values()) if v is not None
    }
    assert [c.version for c in changes] == list(range(1, p.version + 1))
    assert ujson.loads(ujson.dumps(snapshot)) == snapshot


# ---------------------------------------------------------------- rate limit, peer rule, broadcaster


def test_token_bucket_allows_a_burst_then_the_rate_then_calls_sustained_abuse():
    now = [0.0]
    bucket = TokenBucket(5, clock=lambda: now[0])
    assert [bucket.take() for _ in range(5)] == [Verdict.OK] * 5
    assert bucket.take() is Verdict.LIMITED
    now[0] += 0.4  # two tokens back, one owed
    assert bucket.take() is Verdict.OK
    assert [bucket.take() for _ in range(5)] == [Verdict.LIMITED] * 5
    assert bucket.take() is Verdict.ABUSE


def test_peer_url_must_name_the_client_itself():
    assert check_peer("http://10.0.0.7:8081/", "10.0.0.7") == "http://10.0.0.7:8081/"
    assert check_peer("https://[::1]:9000", "::1") == "https://[::1]:9000"
    for url in ("http://10.0.0.8:8081/", "ftp://10.0.0.7/", "http://example.com/", "10.0.0.7", 7, None):
        with pytest.raises(BadMessage):
            check_peer(url, "10.0.0.7")


class FakeClient:
    """Records what it is sent; ``stuck`` clients never finish a write."""

    def __init__(self, stuck: bool = False) -> None:
        self.stuck = stuck
        self.sent: list[bytes] = []
        self.closed: int | None = None

    def write_message(self, message: bytes, binary: bool = False):
        assert binary is False
        self.sent.append(message)
        future = asyncio.get_running_loop().create_future()
        if not self.stuck:
            future.set_result(None)
        return future

    def close(self, code=None, reason=None) -> None:
        self.closed = code


def test_broadcaster_coalesces_sends_shared_bytes_and_closes_a_stuck_client():
    async def scenario():
        presence = Presence()
        broadcaster = Broadcaster(presence, PresenceSettings(coalesce_interval=0.01, max_pending_bytes=4000))
        fast, stuck = FakeClient(), FakeClient(stuck=True)
        broadcaster.join(fast)
        broadcaster.join(stuck)
        for n in range(50):
            presence.connect(f"s{n}", "10.0.0.1")
        await asyncio.sleep(0.05)
        assert len(fast.sent) == len(stuck.sent) == 1
        assert fast.sent[0] is stuck.sent[0]
        assert ujson.loads(fast.sent[0])["version"] == 50
        for n in range(50):
            presence.watch(f"s{n}", "alpha")
            await asyncio.sleep(0.015)
        assert stuck.closed == 1013 and len(stuck.sent) < len(fast.sent)
        assert sum(map(len, stuck.sent)) <= 4000
        assert ujson.loads(fast.sent[-1])["presence"] == presence.snapshot()

    asyncio.run(scenario())


# ---------------------------------------------------------------- websockets against the app


@pytest.fixture
def settings_overrides():
    """Config sections a test wants changed; tests parametrize this to override it."""
    return {}


@pytest.fixture
def config(tmp_path, library, settings_overrides):
    return make_config(tmp_path, **settings_overrides)


def overrides(**sections):
    return pytest.mark.parametrize("settings_overrides", [sections], ids=["config"])


class WS:
    """A websocket client that takes every message as it arrives, so it is never the slow one."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.conn = None
        self.socket_id: str | None = None

    async def recv(self, timeout: float = 5.0) -> dict | None:
        raw = await asyncio.wait_for(self.inbox.get(), timeout)
        return None if raw is None else ujson.loads(raw)

    def send(self, message: dict | str) -> None:
        self.conn.write_message(message if isinstance(message, str) else ujson.dumps(message))

    async def presence_until(self, predicate, timeout: float = 5.0) -> tuple[dict, int]:
        """The first presence message whose presence satisfies ``predicate``, and how many came."""
        count = 0
        while True:
            message = await self.recv(timeout)
            assert message is not None, "socket closed"
            if message["type"] == "presence":
                count += 1
                if predicate(message["presence"]):
                    return message, count

    async def error(self) -> str:
        while True:
            message = await self.recv()
            assert message is not None, "socket closed"
            if message["type"] == "error":
                return message["error"]

    async def relayed(self, timeout: float = 5.0) -> dict:
        """The next signal or error, past any presence."""
        while True:
            message = await self.recv(timeout)
            assert message is not None, "socket closed"
            if message["type"] in ("signal", "error"):
                return message

    async def closed(self) -> int | None:
        """Waits for the server to close the socket; its close code."""
        while await self.recv() is not None:
            pass
        return self.conn.close_code


@pytest.fixture
def connect(app, http_server, http_port):
    """``await connect(**headers)``: a WS that has had its welcome and its first presence."""
    clients: list[WS] = []

    async def connect(**headers) -> WS:
        ws = WS()
        request = HTTPRequest(f"ws://127.0.0.1:{http_port}/presence", headers=headers)
        ws.conn = await websocket_connect(request, on_message_callback=ws.inbox.put_nowait)
        clients.append(ws)
        welcome = await ws.recv()
        assert welcome["type"] == "welcome" and isinstance(welcome["socketId"], str)
        ws.socket_id = welcome["socketId"]
        await ws.presence_until(lambda p: ws.socket_id in p["sockets"])
        return ws

    yield connect
    for ws in clients:
        ws.conn.close()


def entry(ws: WS) -> dict:
    return {"ipaddress": "127.0.0.1", "socketId": ws.socket_id}


@pytest.mark.gen_test
async def test_welcome_then_presence_including_itself(http_server, http_port):
    conn = await websocket_connect(f"ws://127.0.0.1:{http_port}/presence")
    welcome = ujson.loads(await conn.read_message())
    presence = ujson.loads(await conn.read_message())
    assert welcome["type"] == "welcome"
    assert presence["type"] == "presence" and presence["version"] == presence["presence"]["version"] >= 1
    assert presence["presence"]["sockets"] == {welcome["socketId"]: "127.0.0.1"}
    assert presence["presence"]["videos"] == {}
    conn.close()


@pytest.mark.gen_test
async def test_watch_reaches_other_clients_with_a_higher_version(connect, app):
    a, b = await connect(), await connect()
    first, _ = await a.presence_until(lambda p: b.socket_id in p["sockets"])
    b.send({"type": "watch", "video": "alpha"})
    message, _ = await a.presence_until(lambda p: "alpha" in p["videos"])
    assert message["version"] > first["version"]
    assert message["presence"]["videos"] == {"alpha": [entry(b)]}
    assert app.presence.watchers("alpha") == [entry(b)]


@pytest.mark.gen_test
async def test_watch_moves_between_videos_and_leave_watches_nothing(connect):
    a = await connect()
    a.send({"type": "watch", "video": "alpha"})
    await a.presence_until(lambda p: p["videos"] == {"alpha": [entry(a)]})
    a.send({"type": "watch", "video": "beta"})
    await a.presence_until(lambda p: p["videos"] == {"beta": [entry(a)]})
    a.send({"type": "leave"})
    message, _ = await a.presence_until(lambda p: p["videos"] == {})
    assert a.socket_id in message["presence"]["sockets"]


@pytest.mark.gen_test
async def test_close_removes_the_socket_at_once(connect, app):
    a, b = await connect(), await connect()
    b.send({"type": "watch", "video": "alpha"})
    await a.presence_until(lambda p: "alpha" in p["videos"])
    b.conn.close()
    started = time.monotonic()
    message, _ = await a.presence_until(lambda p: b.socket_id not in p["sockets"])
    assert time.monotonic() - started < 1.0
    assert message["presence"]["videos"] == {} and app.presence.socket_count() == 1


@pytest.mark.gen_test
async def test_get_presence_is_the_json_with_cors(connect, http_client, base_url):
    a = await connect()
    a.send({"type": "watch", "video": "beta"})
    await a.presence_until(lambda p: "beta" in p["videos"])
    r = await http_client.fetch(base_url + "/presence")
    body = ujson.loads(r.body)
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert set(body) == {"version", "sockets", "videos"} and body["version"] >= 2
    assert body["sockets"] == {a.socket_id: "127.0.0.1"}
    assert body["videos"] == {"beta": [entry(a)]}


@pytest.mark.gen_test
@overrides(server={"cors_origin": "https://app.example"})
async def test_configured_origin_gets_cors_and_may_connect_others_may_not(app, http_client, base_url, http_port):
    r = await http_client.fetch(base_url + "/presence")
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    url = f"ws://127.0.0.1:{http_port}/presence"
    conn = await websocket_connect(HTTPRequest(url, headers={"Origin": "https://app.example"}))
    conn.close()
    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(HTTPRequest(url, headers={"Origin": "https://evil.example"}))
    assert refused.value.code == 403


@pytest.mark.gen_test
async def test_bad_messages_get_errors_and_the_socket_stays(connect):
    a, b = await connect(), await connect()
    a.send("{not json")
    assert await a.error() == "message is not JSON"
    a.send("[1, 2]")
    assert await a.error() == "a message must be a JSON object"
    a.send({"type": "dance"})
    assert await a.error() == "unknown message type 'dance'"
    a.send({"type": "watch", "video": "nope"})
    assert await a.error() == "unknown video 'nope'"
    a.send({"type": "leave", "padding": "x" * 5000})
    assert (await a.error()).startswith("message too large")
    # Naming another socket changes only the sender's own entry.
    a.send({"type": "watch", "video": "alpha", "socketId": b.socket_id})
    message, _ = await b.presence_until(lambda p: "alpha" in p["videos"])
    assert message["presence"]["videos"] == {"alpha": [entry(a)]}


@pytest.mark.gen_test
async def test_frames_far_too_large_are_refused_by_the_protocol(connect):
    a = await connect()
    a.send({"type": "leave", "padding": "x" * (4 * 16384)})  # past 4 times max_signal_bytes
    assert await a.closed() == 1009


@pytest.mark.gen_test
async def test_peer_must_be_the_clients_own_address(connect):
    a = await connect()
    a.send({"type": "watch", "video": "alpha", "peer": "http://10.9.9.9:8081"})
    assert "'peer' must be" in await a.error()
    a.send({"type": "watch", "video": "alpha", "peer": "http://127.0.0.1:8081"})
    message, _ = await a.presence_until(lambda p: "alpha" in p["videos"])
    assert message["presence"]["videos"]["alpha"] == [{**entry(a), "peer": "http://127.0.0.1:8081"}]


@pytest.mark.gen_test
async def test_forwarded_for_is_ignored_from_an_untrusted_peer(connect, app):
    a = await connect(**{"X-Forwarded-For": "203.0.113.9"})
    assert app.presence.snapshot()["sockets"][a.socket_id] == "127.0.0.1"


@pytest.mark.gen_test
@overrides(server={"trusted_proxies": ["127.0.0.1"]})
async def test_forwarded_for_is_honoured_from_a_trusted_proxy(connect, app):
    a = await connect(**{"X-Forwarded-For": "203.0.113.9"})
    assert app.presence.snapshot()["sockets"][a.socket_id] == "203.0.113.9"
    a.send({"type": "watch", "video": "alpha", "peer": "http://203.0.113.9:8081"})
    message, _ = await a.presence_until(lambda p: "alpha" in p["videos"])
    assert message["presence"]["videos"]["alpha"][0]["ipaddress"] == "203.0.113.9"


@pytest.mark.gen_test(timeout=10)
@overrides(presence={"messages_per_second": 5})
async def test_a_short_flood_is_limited_and_the_socket_kept(connect):
    a = await connect()
    for _ in range(8):
        a.send({"type": "leave"})
    assert await a.error() == "too many messages; slow down"
    await asyncio.sleep(1.2)  # the bucket refills at 5 a second
    a.send({"type": "watch", "video": "alpha"})
    await a.presence_until(lambda p: "alpha" in p["videos"])


@pytest.mark.gen_test
@overrides(presence={"messages_per_second": 5})
async def test_a_sustained_flood_is_closed_with_1008(connect, app):
    a = await connect()
    for _ in range(50):
        a.send({"type": "leave"})
    assert await a.closed() == 1008
    assert app.presence.socket_count() == 0


@pytest.mark.gen_test
@overrides(presence={"coalesce_interval": 0.1, "messages_per_second": 1000})
async def test_a_burst_of_changes_goes_out_as_few_broadcasts(connect):
    a, b = await connect(), await connect()
    before, _ = await a.presence_until(lambda p: b.socket_id in p["sockets"])
    for n in range(50):
        b.send({"type": "watch", "video": "beta" if n % 2 == 0 else "alpha"})
    message, count = await a.presence_until(lambda p: p["version"] == before["version"] + 50)
    assert count <= 5
    assert message["presence"]["videos"] == {"alpha": [entry(b)]}


@pytest.mark.gen_test(timeout=10)
async def test_a_video_leaving_the_catalog_takes_its_watchers_to_no_video(connect, library):
    a = await connect()
    a.send({"type": "watch", "video": "alpha"})
    await a.presence_until(lambda p: "alpha" in p["videos"])
    os.remove(library / "alpha.mp4")
    message, _ = await a.presence_until(lambda p: "alpha" not in p["videos"])
    assert a.socket_id in message["presence"]["sockets"]


class RawClient:
    """A websocket client on a bare socket: it reads only when told to, and never answers a ping."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.socket_id: str | None = None

    @classmethod
    async def connect(cls, port: int, receive_buffer: int | None = None) -> "RawClient":
        """Completes the handshake and reads the welcome; ``receive_buffer`` shrinks the socket's."""
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, upgrade_request(host=f"127.0.0.1:{port}"))
        client = cls(sock)
        head = await client._read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        _, welcome = await client.read_frame()
        client.socket_id = ujson.loads(welcome)["socketId"]
        return client

    async def read_frame(self) -> tuple[int, bytes]:
        """The next (unmasked, unfragmented) frame from the server: its opcode and payload."""
        header = await self._read(2)
        length = header[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await self._read(2), "big")
        elif length == 127:
            length = int.from_bytes(await self._read(8), "big")
        return header[0] & 0x0F, await self._read(length)

    async def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._receive()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            await self._receive()
        data, _, self.buffer = self.buffer.partition(marker)
        return data

    async def _receive(self) -> None:
        chunk = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), 5)
        assert chunk, "the server closed the connection"
        self.buffer += chunk


@pytest.mark.gen_test(timeout=15)
@overrides(presence={"coalesce_interval": 0.005, "max_pending_bytes": 32768})
async def test_a_client_that_stops_reading_is_dropped_and_others_keep_up(connect, app, http_port):
    a = await connect()
    slow = await RawClient.connect(http_port, receive_buffer=4096)
    # Fat presence: each broadcast is ~25 KB, so the slow socket's buffers fill in a few.
    for n in range(300):
        app.presence.connect(f"fake-{n:04d}-{'x' * 40}", "198.51.100.1")
    try:
        for n in range(400):
            app.presence.watch("fake-0000-" + "x" * 40, "alpha" if n % 2 else "beta")
            await asyncio.sleep(0.01)
            if slow.socket_id not in app.presence.snapshot()["sockets"]:
                break
        assert slow.socket_id not in app.presence.snapshot()["sockets"], "the slow client was never dropped"
        version = app.presence.version
        message, _ = await a.presence_until(lambda p: p["version"] >= version)
        assert slow.socket_id not in message["presence"]["sockets"]
        assert a.socket_id in message["presence"]["sockets"]
    finally:
        slow.sock.close()


@pytest.mark.gen_test(timeout=15)
@overrides(presence={"ping_interval": 0.2, "ping_timeout": 0.2})
async def test_a_client_that_never_answers_pings_is_closed_and_removed(app, http_server, http_port):
    silent = await RawClient.connect(http_port)
    try:
        opcodes = []
        while not opcodes or opcodes[-1] != 0x8:
            opcode, payload = await silent.read_frame()
            opcodes.append(opcode)
        assert 0x9 in opcodes  # pinged
        assert payload.endswith(b"ping timed out")
        # Tornado waits 5 s for the client's half of the close handshake before it lets go.
        for _ in range(80):
            if app.presence.socket_count() == 0:
                break
            await asyncio.sleep(0.1)
        assert app.presence.socket_count() == 0
    finally:
        silent.sock.close()


# ---------------------------------------------------------------- signals between sockets


async def watching_alpha(connect, count: int) -> list[WS]:
    sockets = [await connect() for _ in range(count)]
    for ws in sockets:
        ws.send({"type": "watch", "video": "alpha"})
    ids = {ws.socket_id for ws in sockets}
    await sockets[-1].presence_until(lambda p: {w["socketId"] for w in p["videos"].get("alpha", [])} == ids)
    return sockets


async def untouched(ws: WS, by: WS) -> None:
    """``ws`` had no signal and no error since its last one: the next that reaches it is a fresh one from ``by``."""
    by.send({"type": "signal", "to": ws.socket_id, "data": "sentinel"})
    assert await ws.relayed() == {"type": "signal", "from": by.socket_id, "data": "sentinel"}


@pytest.mark.gen_test
async def test_a_signal_reaches_the_socket_named_from_the_sender_and_back(connect):
    a, b = await watching_alpha(connect, 2)
    offer = {"sdp": "v=0\r\n...", "type": "offer"}
    a.send({"type": "signal", "to": b.socket_id, "data": offer})
    assert await b.relayed() == {"type": "signal", "from": a.socket_id, "data": offer}
    b.send({"type": "signal", "to": a.socket_id, "data": {"type": "answer"}})
    assert await a.relayed() == {"type": "signal", "from": b.socket_id, "data": {"type": "answer"}}


@pytest.mark.gen_test
async def test_no_socket_can_speak_as_another(connect):
    a, b, c = await watching_alpha(connect, 3)
    # A "from" of the sender's choosing is ignored: the server says who sent it.
    a.send({"type": "signal", "to": b.socket_id, "from": c.socket_id, "data": 1})
    assert await b.relayed() == {"type": "signal", "from": a.socket_id, "data": 1}
    # What a sender says of sockets behind it (relayFor) sits below its own id, so answers go back to it alone.
    a.send({"type": "signal", "to": b.socket_id, "relayFor": c.socket_id, "data": 2})
    assert await b.relayed() == {"type": "signal", "from": f"{a.socket_id}/{c.socket_id}", "data": 2}
    b.send({"type": "signal", "to": f"{a.socket_id}/{c.socket_id}", "data": 3})
    assert await a.relayed() == {"type": "signal", "from": b.socket_id, "to": c.socket_id, "data": 3}
    await untouched(c, by=b)


@pytest.mark.gen_test
async def test_signals_to_another_video_a_gone_or_unknown_socket_are_refused_naming_why(connect):
    a, b = await watching_alpha(connect, 2)
    other, idle = await connect(), await connect()
    other.send({"type": "watch", "video": "beta"})
    await a.presence_until(lambda p: "beta" in p["videos"])
    for to, reason in [(other.socket_id, "other-video"), (idle.socket_id, "other-video"), ("nobody", "unknown")]:
        a.send({"type": "signal", "to": to, "data": {}})
        error = await a.relayed()
        assert (error["type"], error["reason"], error["to"]) == ("error", reason, to)
        assert to.split("/")[0] in error["error"]
    idle.send({"type": "signal", "to": a.socket_id, "data": {}})
    assert (await idle.relayed())["reason"] == "not-watching"
    b.conn.close()
    await a.presence_until(lambda p: b.socket_id not in p["sockets"])
    a.send({"type": "signal", "to": b.socket_id, "data": {}})
    assert (await a.relayed())["reason"] == "gone"
    other.send({"type": "watch", "video": "alpha"})
    await a.presence_until(lambda p: len(p["videos"]["alpha"]) == 2)
    await untouched(other, by=a)
    await untouched(a, by=other)


@pytest.mark.gen_test
async def test_bad_signals_are_refused_and_the_socket_stays(connect):
    a, b = await watching_alpha(connect, 2)
    for message, error in [
        ({"type": "signal", "to": b.socket_id}, "a signal needs 'data'"),
        ({"type": "signal", "to": "no spaces", "data": 1}, "'to' must be a socket id"),
        ({"type": "signal", "to": b.socket_id, "relayFor": "", "data": 1}, "'relayFor' must be a socket id"),
        ({"type": "signal", "to": b.socket_id, "data": "x" * 17000}, "message too large"),
    ]:
        a.send(message)
        assert (await a.error()).startswith(error)
    await untouched(b, by=a)
    # A signal may be larger than other messages (max_signal_bytes, not max_message_bytes).
    a.send({"type": "signal", "to": b.socket_id, "data": "x" * 8000})
    assert (await b.relayed())["data"] == "x" * 8000


@pytest.mark.gen_test(timeout=15)
@overrides(presence={"signals_per_second": 5})
async def test_a_signal_flood_is_refused_then_closed_and_nobody_else_notices(connect, app):
    a, b, c = await watching_alpha(connect, 3)
    for n in range(8):
        a.send({"type": "signal", "to": b.socket_id, "data": n})
    # A burst of a second's worth goes through; what passes it is refused.
    assert (await a.relayed())["reason"] == "too-many-signals"
    for _ in range(50):
        a.send({"type": "signal", "to": b.socket_id, "data": "flood"})
    assert await a.closed() == 1008
    assert a.socket_id not in app.presence.snapshot()["sockets"]
    c.send({"type": "signal", "to": b.socket_id, "data": "sentinel"})
    heard = []
    while (message := await b.relayed())["from"] != c.socket_id:
        heard.append(message["data"])
    # b heard the burst (and what the bucket refilled while it ran), none of the flood.
    assert heard[:5] == [0, 1, 2, 3, 4] and len(heard) < 8, heard
    await untouched(c, by=b)
