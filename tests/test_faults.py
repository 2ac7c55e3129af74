"""Faults under a running server, over real HTTP: clients that vanish, storage that fails mid-body,
Pravega stopping and coming back.

Each test counts what the server holds before the fault and after it has
settled: asyncio tasks, open file descriptors, child processes (Pravega
workers) and Pravega reads in progress. Nothing may be left behind, no
child may be left a zombie, nothing may be logged as an error (a Pravega
outage excepted: an operator must hear of it, just not as a crash), and the
server must go on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import glob
import logging
import os
import signal
import socket
import struct
import time
import uuid

import pytest
import ujson

from harness.clients import Download, get
from harness.in_process import serving
from harness.loopback import until
from harness.media import write_random_video
from tests.conftest import make_config, read_bytes

SETTLE_SECONDS = 5.0


# ---------------------------------------------------------------- counting


def children() -> dict[int, str]:
    """This process's child processes: pid -> state (``Z`` for a zombie)."""
    pids = set()
    for path in glob.glob("/proc/self/task/*/children"):
        with open(path) as f:
            pids.update(int(pid) for pid in f.read().split())
    states = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            with open(f"/proc/{pid}/stat") as f:
                states[pid] = f.read().rsplit(")", 1)[1].split()[0]
    return states


async def census(app) -> dict[str, int]:
    """What the server holds now."""
    health = await app.store.health()
    return {
        "tasks": len(asyncio.all_tasks()),
        "fds": len(os.listdir("/proc/self/fd")),
        "children": len(children()),
        "reads": health.get("readsInProgress", 0),
    }


async def settled(app, baseline: dict[str, int]) -> None:
    """Waits until nothing is held beyond ``baseline`` and no child is a zombie; fails after SETTLE_SECONDS."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        now = await census(app)
        zombies = [pid for pid, state in children().items() if state == "Z"]
        if all(now[k] <= baseline[k] for k in baseline) and not zombies:
            return
        assert time.monotonic() < deadline, f"left behind: {now} after {baseline}; zombies {zombies}"
        await asyncio.sleep(0.1)


def no_errors_logged(caplog) -> None:
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def no_tracebacks_logged(caplog) -> None:
    """For a fault an operator must hear of (errors are due), but not as a crash."""
    crashes = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info]
    assert crashes == []


async def wait_for_video(port: int, video_id: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while (await get(port, f"/videos/{video_id}"))[0] != 200:
        assert time.monotonic() < deadline, f"{video_id} never showed up"
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """24 MiB of random bytes: far more than socket buffers hold, so a fault lands mid-body."""
    path = tmp_path_factory.mktemp("faults") / "big.mp4"
    write_random_video(str(path), 24 * 1024 * 1024, seed=5)
    return path


@pytest.fixture
def big(ingest, sample_videos, big_file):
    """The big file, ingested into the test's store as video ``big``."""
    ingest(dataclasses.replace(sample_videos[0], id="big", source_path=str(big_file), captions={}))
    return read_bytes(big_file)


@contextlib.asynccontextmanager
async def serving_big(config, *also_read: str):
    """The app for ``config`` once it lists ``big``: yields (app, port, what it holds).

    A first byte of ``big`` and of each of ``also_read`` is read before
    counting, so what a first request builds (manifests, caches, readers)
    is in the baseline.
    """
    async with serving(config) as (app, port):
        await wait_for_video(port, "big")
        for video_id in (*also_read, "big"):
            assert (await get(port, f"/videos/{video_id}/stream", Range="bytes=0-0"))[0] == 206
        yield app, port, await census(app)


# ---------------------------------------------------------------- clients that vanish


def hang_up(port: int, how: str) -> None:
    """Asks for a video and hangs up at once: with a reset, a close, or a half-close while still reading.

    Blocking, for a thread: a client on the server's own event loop would
    only ever act between the server's steps, never in the middle of them.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /videos/alpha/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "half-close":
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(1 << 16):
                pass


async def leave_mid_body(port: int, path: str) -> None:
    """Asks for ``path``, reads 64 KiB of its body, and hangs up with a reset (RST instead of FIN),
    as a player that gives up does."""
    download = await Download.start(port, path)
    await download.read(64 * 1024)
    download.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                        struct.pack("ii", 1, 0))
    download.close()


@pytest.mark.gen_test(timeout=60)
async def test_clients_that_hang_up_at_once_or_mid_body_leave_nothing_behind(config, big, caplog):
    """Clients that hang up right after asking for a video, or after a few bytes of its body, cost
    the server nothing: no error logged, no task, file, child or reader left, and the next
    request gets the right bytes."""
    async with serving_big(config, "alpha") as (app, port, baseline):
        for how in ("reset", "close", "half-close") * 10:
            await asyncio.to_thread(hang_up, port, how)
        for _ in range(5):
            await leave_mid_body(port, "/videos/big/stream")
        await settled(app, baseline)
        status, _, body = await get(port, "/videos/alpha/stream", Range="bytes=0-9")
        assert (status, len(body)) == (206, 10)
        status, _, body = await get(port, "/videos/big/stream", Range="bytes=0-9")
        assert (status, body) == (206, big[:10])
    no_errors_logged(caplog)


# ---------------------------------------------------------------- storage failing mid-body


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config", ["filesystem"], indirect=True)
@pytest.mark.parametrize("fault", ["truncated", "removed"])
async def test_a_library_file_that_changes_mid_body_gives_a_short_body_never_wrong_bytes(
        config, big, caplog, fault):
    """A video file truncated or removed while it is being sent: the client gets a prefix of
    the bytes it asked for, cut short (with the connection closed) or whole, and the server goes on."""
    async with serving_big(config) as (app, port, baseline):
        download = await Download.start(port, "/videos/big/stream")
        assert (download.status, download.length) == (200, len(big))
        first = await download.read(64 * 1024)
        path = os.path.join(config.storage.library, "big.mp4")
        if fault == "truncated":
            os.truncate(path, 1024 * 1024)
        else:
            os.remove(path)
        body = first + await download.rest()
        download.close()
        assert body == big[: len(body)]
        if fault == "truncated":
            assert len(body) < len(big)
        await settled(app, baseline)
        status, _, data = await get(port, "/videos/alpha/stream", Range="bytes=0-9")
        assert (status, len(data)) == (206, 10)
    no_errors_logged(caplog)


def reader_workers() -> list[int]:
    """Pids of this process's Pravega reader workers."""
    pids = []
    for pid in children():
        with contextlib.suppress(FileNotFoundError):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"pravega_workers.worker\0reader\0" in f.read():
                    pids.append(pid)
    return pids


@pytest.mark.pravega
@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config", ["pravega"], indirect=True)
async def test_a_reader_worker_killed_mid_body_is_resumed_by_a_fresh_one(config, big, caplog):
    """The Pravega reader workers SIGKILLed while a video is being sent: the read goes on from the
    same byte on a fresh worker, so the client gets every byte; no read stays open, and the next
    request is served."""
    async with serving_big(config) as (app, port, baseline):
        download = await Download.start(port, "/videos/big/stream")
        first = await download.read(64 * 1024)
        assert (await app.store.health())["readsInProgress"] == 1
        killed = reader_workers()
        assert killed
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        body = first + await download.rest()
        download.close()
        assert body == big
        status, _, data = await get(port, "/videos/big/stream", Range="bytes=100-199")
        assert (status, data) == (206, big[100:200])
        assert not set(killed) & set(children())
        await settled(app, baseline)
    no_errors_logged(caplog)


# ---------------------------------------------------------------- Pravega stopping and coming back

OUTAGE_TIMEOUT = 2.0


@pytest.mark.pravega
@pytest.mark.gen_test(timeout=150)
async def test_pravega_stopping_and_coming_back_under_a_running_server(private_pravega, tmp_path, sample_videos,
                                                                      caplog):
    """Pravega stops: /healthz says degraded (503) within a few seconds and /stream answers a
    JSON 503 within pravega.timeout + 1 s. It comes back (empty: the standalone keeps streams in
    memory): /healthz is ok again and a video ingested anew streams byte for byte. Nothing is
    left behind."""
    from media.pravega_store import ingest_into_pravega

    config = make_config(tmp_path, storage={"backend": "pravega", "library": str(tmp_path)},
                         pravega={"controller_uri": private_pravega.uri, "scope": f"faults-{uuid.uuid4().hex[:8]}",
                                  "timeout": OUTAGE_TIMEOUT})
    alpha = sample_videos[0]
    await asyncio.to_thread(ingest_into_pravega, config, alpha, lambda done: None)
    async with serving(config) as (app, port):
        await wait_for_video(port, "alpha")
        status, _, body = await get(port, "/videos/alpha/stream")
        assert (status, body) == (200, read_bytes(alpha.source_path))
        baseline = await census(app)

        await asyncio.to_thread(private_pravega.stop)
        started = time.monotonic()
        status, headers, body = await get(port, "/videos/alpha/stream")
        assert time.monotonic() - started < OUTAGE_TIMEOUT + 1
        assert status == 503 and headers["content-type"].startswith("application/json")
        assert ujson.loads(body)["status"] == 503

        async def degraded():
            status, _, body = await get(port, "/healthz")
            return status == 503 and ujson.loads(body)["status"] == "degraded"

        await until(degraded, OUTAGE_TIMEOUT + 3, step=0.1)

        await asyncio.to_thread(private_pravega.start)

        async def healthy():
            return (await get(port, "/healthz"))[0] == 200

        await until(healthy, 60, step=0.1)
        await asyncio.to_thread(ingest_into_pravega, config, alpha, lambda done: None)
        await wait_for_video(port, "alpha")
        status, _, body = await get(port, "/videos/alpha/stream")
        assert (status, body) == (200, read_bytes(alpha.source_path))
        await settled(app, baseline)
    no_tracebacks_logged(caplog)
