"""Presence between the worker processes of one server: the parent's relay, and each worker's transport to it.

The parent (``server.workers`` > 1) runs a :class:`Relay` on a Unix socket
in its run directory; every worker's :class:`RelayTransport`
(a :class:`presence.link.Transport`) connects to it. The relay hands each
record a worker sends to every other worker, in the one order it read
them, so all workers apply the same records in the same order. Frames
both ways are ``HEADER`` (payload length, kind, the writer's seq) then the
payload.

A worker that connects (at its start, or again after it lost the relay)
sends ``HELLO`` with its instance id and its index, and gets ``RESET``, for every other
worker its latest snapshot and the changes since, then ``CAUGHT_UP``: the
same replay a Pravega stream gives. What the relay keeps per worker is
bounded by its heartbeat, which sends a snapshot every few seconds.

Frames are written once per turn of the event loop, all that turn's
frames for a connection in one write (:class:`_Outbox`): under load a
worker reads many changes from its sockets in one turn, and the relay many
frames from one worker, and one send(2), and one wakeup of the reader, for
each was most of what the relay path cost (bench/presence_scale.py at N
workers).

Nothing waits on a worker: each one's unsent frames are bounded
(``MAX_PENDING``); a worker that falls that far behind is disconnected,
and comes back through a replay. A worker whose connection ends (it
died, or was disconnected) is told to the others as a ``gone`` with the
seq of its last record, so its sockets leave every picture at once; a
record it sends later (a newer seq) brings it back. One whose connection
ended of itself (it died; a clean stop holds nothing by then) has its
per-address slots released (:func:`ops.limits.release_worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator, Callable

import ujson

from ops.limits import SLOT_KINDS, release_worker
from presence.link import CHANGE, MESSAGE, SNAPSHOT, Receiver
from presence.shared import gone_record

if TYPE_CHECKING:
    from ops.workers import Supervisor

log = logging.getLogger("binge.presence")

SOCKET_NAME = "presence.sock"
HEADER = struct.Struct(">IBQ")
HELLO, KEPT_SNAPSHOT, KEPT_CHANGE, PASSED, RESET, RECORD, CAUGHT_UP = range(1, 8)
_KINDS = {SNAPSHOT: KEPT_SNAPSHOT, CHANGE: KEPT_CHANGE, MESSAGE: PASSED}
# Bytes unsent to one worker (or, at a worker, to the relay) before that
# connection is dropped as stuck: a few seconds of 5,000 changes a second.
MAX_PENDING = 8 * 1024 * 1024
# Largest frame either side reads: a snapshot of 100,000 sockets is about 10 MB.
MAX_FRAME = 64 * 1024 * 1024
# Seconds between a worker's attempts to reach the relay.
RECONNECT = 0.2


def socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, SOCKET_NAME)


def frame(kind: int, seq: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind, seq) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """The next frame's kind, seq and payload; ``asyncio.IncompleteReadError`` at the end."""
    length, kind, seq = HEADER.unpack(await reader.readexactly(HEADER.size))
    if length > MAX_FRAME:
        raise ConnectionError(f"a frame of {length} bytes, more than {MAX_FRAME}")
    return kind, seq, await reader.readexactly(length)


class _Outbox:
    """Frames for one connection, joined and written at the event loop's next turn."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._frames: list[bytes] = []
        self._size = 0

    def pending(self) -> int:
        """Bytes given and not yet taken by the socket."""
        return self.writer.transport.get_write_buffer_size() + self._size

    def put(self, data: bytes) -> None:
        if not self._frames:
            asyncio.get_running_loop().call_soon(self.flush)
        self._frames.append(data)
        self._size += len(data)

    def flush(self) -> None:
        """Writes what was put since the last flush now (nothing once the connection is closing)."""
        frames, self._frames, self._size = self._frames, [], 0
        if frames and not self.writer.transport.is_closing():
            self.writer.write(b"".join(frames))

    def abort(self) -> None:
        """Ends the connection at once, what was put and not written with it."""
        self.writer.transport.abort()


@dataclass(eq=False)
class _Worker:
    outbox: _Outbox
    instance: str = ""
    index: int = -1
    seq: int = 0
    # Its latest snapshot and the changes since: what a worker that connects is replayed.
    kept: list[bytes] = field(default_factory=list)
    dropped: bool = False


class Relay:
    """Hands every record a worker sends to every other worker, in one order (see the module's docstring)."""

    def __init__(self, run_dir: str, on_lost: Callable[[int], None] = lambda index: None,
                 max_pending: int = MAX_PENDING) -> None:
        self.path = socket_path(run_dir)
        self.on_lost = on_lost
        self.max_pending = max_pending
        self._workers: list[_Worker] = []
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, self.path, limit=MAX_FRAME)

    async def close(self) -> None:
        if self._server:
            self._server.close()
            for worker in list(self._workers):
                worker.outbox.abort()
            await self._server.wait_closed()

    def connected(self) -> int:
        return len(self._workers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        worker = _Worker(_Outbox(writer))
        try:
            kind, _, payload = await read_frame(reader)
            if kind != HELLO:
                raise ConnectionError(f"frame kind {kind} before HELLO")
            hello = ujson.loads(payload)
            worker.instance, worker.index = str(hello["instance"]), int(hello["index"])
            self._write(worker, frame(RESET, 0))
            for other in self._workers:
                for record in other.kept:
                    self._write(worker, frame(RECORD, 0, record))
            self._write(worker, frame(CAUGHT_UP, 0))
            self._workers.append(worker)
            while not worker.dropped:
                kind, seq, record = await read_frame(reader)
                worker.seq = seq
                if kind == KEPT_SNAPSHOT:
                    worker.kept = [record]
                elif kind == KEPT_CHANGE:
                    worker.kept.append(record)
                elif kind != PASSED:
                    raise ConnectionError(f"unexpected frame kind {kind}")
                self._pass_on(worker, frame(RECORD, 0, record))
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
            pass  # the worker's end closed: it stopped (a worker's relay connection ends with a reset) or died
        except (ConnectionError, ValueError, KeyError, TypeError) as e:
            log.warning("presence relay: worker %s dropped: %s", worker.instance or "?", e)
        finally:
            if worker in self._workers:
                self._workers.remove(worker)
            writer.transport.abort()
            if worker.seq:
                self._pass_on(worker, frame(RECORD, 0, gone_record(worker.instance, worker.seq, time.time())))
            # Dropped as stuck, it lives and holds its slots; a successor may have connected already.
            if not worker.dropped and worker.index >= 0 and all(w.index != worker.index for w in self._workers):
                self.on_lost(worker.index)

    def _pass_on(self, sender: _Worker, data: bytes) -> None:
        for worker in self._workers:
            if worker is not sender:
                self._write(worker, data)

    def _write(self, worker: _Worker, data: bytes) -> None:
        if worker.dropped:
            return
        pending = worker.outbox.pending()
        if pending + len(data) > self.max_pending:
            # Its reader ends with the connection, which tells the others it is gone.
            log.warning("presence relay: worker %s is %d bytes behind, dropped", worker.instance, pending)
            worker.dropped = True
            worker.outbox.abort()
            return
        worker.outbox.put(data)


class RelayTransport:
    """A worker's connection to the parent's :class:`Relay`, as a :class:`presence.link.Transport`."""

    name = "relay"

    def __init__(self, run_dir: str, instance: str, index: int, max_pending: int = MAX_PENDING) -> None:
        self.path = socket_path(run_dir)
        self.instance = instance
        self.index = index
        self.max_pending = max_pending
        self._outbox: _Outbox | None = None
        self._task: asyncio.Task | None = None
        self.connections = 0

    def start(self, receiver: Receiver) -> None:
        self._task = asyncio.create_task(self._run(receiver))

    def append(self, record: bytes, kind: str, seq: int) -> None:
        outbox = self._outbox
        if outbox is None:
            return  # lost; the snapshot after the next replay repairs it
        if outbox.pending() > self.max_pending:
            log.warning("presence: the relay takes nothing, reconnecting")
            outbox.abort()
            self._outbox = None
            return
        outbox.put(frame(_KINDS[kind], seq, record))

    async def close(self, grace: float) -> None:
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.flush()  # the last records (the goodbye) were put this turn
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(grace):
                    await outbox.writer.drain()
            outbox.abort()
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, receiver: Receiver) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.path, limit=MAX_FRAME)
            except OSError as e:
                log.debug("presence: no relay at %s yet: %s", self.path, e)
                await asyncio.sleep(RECONNECT)
                continue
            self.connections += 1
            writer.write(frame(HELLO, 0, ujson.dumps({"instance": self.instance, "index": self.index}).encode()))
            outbox = self._outbox = _Outbox(writer)
            try:
                while True:
                    kind, _, payload = await read_frame(reader)
                    if kind == RECORD:
                        receiver.on_record(self.name, payload)
                    elif kind == RESET:
                        receiver.on_reset(self.name)
                    elif kind == CAUGHT_UP:
                        receiver.on_caught_up(self.name)
                    else:
                        raise ConnectionError(f"unexpected frame kind {kind}")
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                log.warning("presence: lost the relay (%s), reconnecting", e or "closed")
            finally:
                if self._outbox is outbox:
                    self._outbox = None
                outbox.abort()
            await asyncio.sleep(RECONNECT)


@contextlib.asynccontextmanager
async def relaying(supervisor: Supervisor) -> AsyncIterator[Relay]:
    """The supervisor's service (see :mod:`ops.workers`) that runs the relay for its workers."""

    def release(index: int) -> None:
        for what in SLOT_KINDS:
            release_worker(supervisor.run_dir, what, index)

    relay = Relay(supervisor.run_dir, on_lost=release)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()
