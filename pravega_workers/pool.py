"""The server's side of its Pravega worker processes (see :mod:`pravega_workers.worker`).

:class:`ReaderPool` reads byte ranges of streams; :class:`EventAppender`
creates event streams and appends to them, and lists and deletes them.

Each worker is a child process joined to the server by a socket pair that
the event loop watches, so waiting on Pravega never blocks the loop. A reply
to a read lands straight in the buffer of the read that asked for it, and a
read asks for its next chunk only when the last one was consumed, so what is
buffered between the processes is at most one chunk per read in progress.

A worker that does not answer within ``pravega.timeout`` is killed, every
request waiting on it fails with a :class:`~pravega_workers.errors.PravegaError`, and a fresh process
with a fresh client takes its place at once. A request's ``pravega.timeout``
runs from when its worker is ready: starting Python and the client takes a
second or so of CPU, which says nothing about Pravega, and has a bound of
its own (``START_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Callable, Collection, Sequence

import ujson

from pravega_workers import protocol as proto
from pravega_workers.errors import NOT_FOUND, UNAVAILABLE, PravegaError
from settings import PravegaSettings

log = logging.getLogger("binge.pravega")

# The repository root, so ``python -m pravega_workers.worker`` finds this package
# whether or not it is installed.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Bytes of requests a worker may leave untaken before it counts as stuck: a few large events to append.
MAX_QUEUED = 64 * 1024 * 1024
# Seconds a worker may take from its start to READY. It makes no network call before that, so only a machine
# starved of CPU comes near it.
START_TIMEOUT = 30.0
# Seconds between tries of a read being resumed (see ReadSession.read_into).
RESUME_PAUSE = 0.5


class Worker:
    """One worker process and the frames it sends back.

    ``target_for(kind, tag, length)`` gives the buffer a frame's payload is
    received into; ``on_frame(kind, tag, payload)`` gets each whole frame and
    ``on_exit(reason)`` is called once when the worker is gone. ``options``
    go on the worker's command line after the connection's.
    """

    def __init__(
        self,
        role: str,
        settings: PravegaSettings,
        on_frame: Callable[[int, int, memoryview], None],
        on_exit: Callable[[str], None],
        target_for: Callable[[int, int, int], memoryview] | None = None,
        options: Sequence[str] = (),
    ) -> None:
        self.role = role
        self.on_frame = on_frame
        self.on_exit = on_exit
        self.target_for = target_for or (lambda kind, tag, length: memoryview(bytearray(length)))
        self.dead = False
        self._gone = asyncio.Event()
        # Set by the worker's READY, or when it is gone first.
        self.started = asyncio.Event()
        self.ready = False
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pravega_workers.worker", role, "--fd", str(theirs.fileno()),
                 "--controller", settings.controller_uri, "--scope", settings.scope, *options],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))},
            )
        except OSError as e:
            ours.close()
            raise PravegaError(UNAVAILABLE, f"cannot start a Pravega {role} worker: {e}") from None
        finally:
            theirs.close()
        self.sock = ours
        self.sock.setblocking(False)
        self._outgoing = bytearray()
        self._header = bytearray(proto.HEADER.size)
        self._got = 0
        self._frame: tuple[int, int, memoryview] | None = None
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._on_readable)

    def send(self, kind: int, tag: int, payload: bytes = b"") -> None:
        """Queues a request without blocking; a worker that leaves ``MAX_QUEUED`` bytes untaken is stuck and is killed."""
        if self.dead:
            raise PravegaError(UNAVAILABLE, f"the Pravega {self.role} worker is gone")
        frame = proto.HEADER.pack(kind, tag, len(payload)) + payload
        if self._outgoing:
            self._outgoing += frame
        else:
            try:
                sent = self.sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError as e:
                self.kill(f"cannot send to it: {e}")
                raise PravegaError(UNAVAILABLE, f"the Pravega {self.role} worker is gone") from None
            if sent == len(frame):
                return
            # An event to append outgrows the socket's buffer: the rest goes as the worker takes it.
            self._outgoing = bytearray(memoryview(frame)[sent:])
            self._loop.add_writer(self.sock.fileno(), self._on_writable)
        if len(self._outgoing) > MAX_QUEUED:
            self.kill("it stopped taking requests")
            raise PravegaError(UNAVAILABLE, f"the Pravega {self.role} worker is stuck")

    def _on_writable(self) -> None:
        try:
            sent = self.sock.send(self._outgoing)
        except BlockingIOError:
            return
        except OSError as e:
            self.kill(f"cannot send to it: {e}")
            return
        del self._outgoing[:sent]
        if not self._outgoing:
            self._loop.remove_writer(self.sock.fileno())

    async def finish(self, grace: float, reason: str) -> None:
        """Closes our sending side, which a worker takes as the end once it has acted on what came before.

        A worker that has not exited after ``grace`` seconds is killed.
        """
        if self.dead:
            return
        try:
            async with asyncio.timeout(grace):
                while self._outgoing and not self.dead:
                    await asyncio.sleep(0.01)  # rare: only requests bigger than the socket's buffer queue
                self.sock.shutdown(socket.SHUT_WR)
                await self._gone.wait()
        except (OSError, TimeoutError):
            pass
        self.kill(reason)

    def kill(self, reason: str) -> None:
        if self.dead:
            return
        self.dead = True
        self._gone.set()
        self.started.set()
        self._loop.remove_reader(self.sock.fileno())
        self._loop.remove_writer(self.sock.fileno())
        self.sock.close()
        self.process.kill()
        # Reaping a SIGKILLed child takes a moment at most.
        self.process.wait()
        log.info("Pravega %s worker %d stopped: %s", self.role, self.process.pid, reason)
        self.on_exit(reason)

    def _on_readable(self) -> None:
        try:
            while not self.dead:
                if self._frame is None:
                    n = self.sock.recv_into(memoryview(self._header)[self._got :])
                    if n == 0:
                        return self._eof()
                    self._got += n
                    if self._got == len(self._header):
                        self._start_frame()
                else:
                    target = self._frame[2]
                    n = self.sock.recv_into(target[self._got :])
                    if n == 0:
                        return self._eof()
                    self._got += n
                    if self._got == len(target):
                        self._finish_frame()
        except BlockingIOError:
            return
        except (OSError, ValueError) as e:
            self.kill(f"broken reply: {e}")

    def _start_frame(self) -> None:
        kind, tag, length = proto.HEADER.unpack(self._header)
        self._got = 0
        if length > proto.MAX_PAYLOAD:
            raise ValueError(f"a frame of {length} bytes")
        target = self.target_for(kind, tag, length)
        if len(target) != length:
            raise ValueError(f"{length} bytes for a buffer of {len(target)}")
        self._frame = (kind, tag, target)
        if length == 0:
            self._finish_frame()

    def _finish_frame(self) -> None:
        kind, tag, payload = self._frame
        self._frame = None
        self._got = 0
        if kind == proto.READY:
            self.ready = True
            self.started.set()
            return
        self.on_frame(kind, tag, payload)

    def _eof(self) -> None:
        status = self.process.poll()
        self.kill("it exited" + (f" with status {status}" if status is not None else ""))


@dataclass
class _Pending:
    future: asyncio.Future
    into: memoryview | None


class WorkerSlot:
    """A place for one worker process answering requests; the process in it is replaced when it dies or hangs.

    A request is answered with DATA (its payload lands in the request's
    ``into`` buffer when it gives one) or ERROR; one not answered within
    ``pravega.timeout`` of being sent to a ready worker kills the worker,
    and so fails every request waiting on it. A worker that was ready is
    replaced as soon as it is gone, so that the next request finds its
    successor started; one that died before it was ready is replaced by the
    next request, so a worker that cannot start is not restarted in a loop.
    """

    _tags = itertools.count(1)

    def __init__(self, role: str, settings: PravegaSettings) -> None:
        self.role = role
        self.settings = settings
        self.worker: Worker | None = None
        self.pending: dict[int, _Pending] = {}
        # Reads in progress on this worker (see ReadSession), which spread reads over a pool.
        self.sessions = 0
        self.closed = False

    def ensure_worker(self) -> Worker:
        if self.worker is None or self.worker.dead:
            self.worker = Worker(self.role, self.settings, self._on_frame, self._on_exit, self._target_for)
        return self.worker

    async def ready_worker(self) -> Worker:
        """The slot's worker once it is ready; :class:`PravegaError` if it dies or overstays ``START_TIMEOUT`` first."""
        worker = self.ensure_worker()
        if not worker.ready:
            try:
                async with asyncio.timeout(START_TIMEOUT):
                    await worker.started.wait()
            except TimeoutError:
                worker.kill(f"not ready after {START_TIMEOUT:g}s")
            if not worker.ready:
                raise PravegaError(UNAVAILABLE, f"the Pravega {self.role} worker did not start")
        return worker

    async def request(self, kind: int, payload: bytes, what: str, into: memoryview | None = None,
                      timeout: float | None = None) -> memoryview:
        """Sends one request and returns the DATA it is answered with; ``what`` names it in errors.

        ``timeout`` is its bound when not ``pravega.timeout``.
        """
        timeout = self.settings.timeout if timeout is None else timeout
        worker = await self.ready_worker()
        tag = next(self._tags)
        future = asyncio.get_running_loop().create_future()
        self.pending[tag] = _Pending(future, into)
        try:
            worker.send(kind, tag, payload)
        except PravegaError:
            self.pending.pop(tag, None)
            raise
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            worker.kill(f"no answer in {timeout:g}s")
            raise PravegaError(UNAVAILABLE, f"Pravega did not answer {what} within {timeout:g}s") from None

    def tell(self, kind: int, payload: bytes) -> None:
        """Sends a request that is not answered, if the worker is there to take it."""
        if self.worker is not None and not self.worker.dead:
            try:
                self.worker.send(kind, 0, payload)
            except PravegaError:
                pass  # the worker was stuck and is gone, and what the request was about with it

    def close(self) -> None:
        self.closed = True
        if self.worker is not None:
            self.worker.kill("the store closed")

    def _target_for(self, kind: int, tag: int, length: int) -> memoryview:
        pending = self.pending.get(tag)
        if kind == proto.DATA and pending is not None and pending.into is not None:
            return pending.into
        return memoryview(bytearray(length))

    def _on_frame(self, kind: int, tag: int, payload: memoryview) -> None:
        pending = self.pending.pop(tag, None)
        if pending is None or pending.future.done():
            return  # its request was abandoned
        if kind == proto.DATA:
            pending.future.set_result(payload)
        elif kind == proto.ERROR:
            error = ujson.loads(bytes(payload))
            kind = NOT_FOUND if error.get("kind") == NOT_FOUND else UNAVAILABLE
            pending.future.set_exception(PravegaError(kind, error.get("message", "Pravega failed")))
        else:
            self.worker.kill(f"unexpected reply kind {kind}")

    def _on_exit(self, reason: str) -> None:
        pending, self.pending = self.pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(PravegaError(UNAVAILABLE, f"the Pravega {self.role} worker failed: {reason}"))
        if not self.closed and self.worker is not None and self.worker.ready:
            try:
                self.ensure_worker()
            except PravegaError as e:
                log.warning("%s", e)


class ReaderPool:
    """``pravega.workers`` reader processes shared by every read in the server."""

    def __init__(self, settings: PravegaSettings) -> None:
        self._slots = [WorkerSlot("reader", settings) for _ in range(settings.workers)]

    def start(self) -> None:
        for slot in self._slots:
            slot.ensure_worker()

    def close(self) -> None:
        for slot in self._slots:
            slot.close()

    def alive(self) -> int:
        return sum(1 for s in self._slots if s.worker is not None and not s.worker.dead)

    def sessions_open(self) -> int:
        return sum(s.sessions for s in self._slots)

    def session(self) -> "ReadSession":
        return ReadSession(min(self._slots, key=lambda s: s.sessions))


class ReadSession:
    """One read's requests, all to one worker, which keeps the stream position between them.

    Use as ``with pool.session() as session``; leaving it frees the worker's reader.
    """

    def __init__(self, slot: WorkerSlot) -> None:
        self.slot = slot
        self.reader = uuid.uuid4().hex

    def __enter__(self) -> "ReadSession":
        self.slot.sessions += 1
        return self

    def __exit__(self, *exc) -> None:
        self.slot.sessions -= 1
        self.slot.tell(proto.RELEASE, ujson.dumps({"reader": self.reader}).encode())

    async def read_into(self, stream: str, offset: int, into: memoryview, resume_for: float = 0) -> None:
        """Fills ``into`` with the bytes of ``stream`` from ``offset``.

        With ``resume_for``, a read that fails for want of Pravega is tried
        again from the same offset until ``resume_for`` seconds have passed,
        each try bounded by ``pravega.timeout``. That rides out a segment
        store lost under a read: the client in the worker retries the dead
        store with a backoff that grows to 10 s, so a try that overstays the
        timeout is killed with its worker, and a fresh one asks the controller
        afresh where the segment's container went. A stream that is gone
        fails at once.
        """
        request = ujson.dumps({"reader": self.reader, "stream": stream, "offset": offset, "length": len(into)})
        loop = asyncio.get_running_loop()
        began = loop.time()
        tries = 1
        while True:
            try:
                await self.slot.request(proto.READ, request.encode(), f"a read of {stream!r}", into)
            except PravegaError as e:
                if e.kind == NOT_FOUND or loop.time() - began >= resume_for:
                    raise
                log.info("resuming a read of %r at offset %d: %s", stream, offset, e)
                await asyncio.sleep(RESUME_PAUSE)
                tries += 1
                continue
            if tries > 1:
                log.info("resumed a read of %r at offset %d after %.1f s (%d tries)", stream, offset,
                         loop.time() - began, tries)
            return


class EventAppender:
    """Creates one-segment event streams and appends events to them, through one appender worker.

    The worker keeps one writer per stream for as long as it lives, as the
    client wants. Events are appended whole and flushed before the answer,
    so once :meth:`append` returns, the event is in Pravega and readable.
    An append is bounded by ``pravega.timeout``, since fetches wait for it;
    creating, listing and deleting streams, which only the controller does
    and no request waits on, by ``pravega.metadata_timeout``.
    """

    def __init__(self, settings: PravegaSettings) -> None:
        self._slot = WorkerSlot("appender", settings)
        self._metadata_timeout = settings.metadata_timeout

    def start(self) -> None:
        self._slot.ensure_worker()

    def close(self) -> None:
        self._slot.close()

    async def create(self, stream: str) -> int:
        """Creates ``stream`` unless it exists and returns its length in bytes."""
        request = ujson.dumps({"stream": stream}).encode()
        answer = await self._slot.request(proto.CREATE, request, f"creating {stream!r}", timeout=self._metadata_timeout)
        return ujson.loads(bytes(answer))["tail"]

    async def append(self, stream: str, event: bytes) -> None:
        await self._slot.request(proto.APPEND_TO, stream.encode() + b"\n" + event, f"an append to {stream!r}")

    async def delete(self, prefix: str, keep: Collection[str] = ()) -> list[str]:
        """Seals and deletes every stream whose name starts with ``prefix`` but those in ``keep``; returns their names."""
        request = ujson.dumps({"prefix": prefix, "keep": list(keep)}).encode()
        answer = await self._slot.request(proto.DELETE, request, f"deleting the streams {prefix}…",
                                          timeout=self._metadata_timeout)
        return ujson.loads(bytes(answer))["deleted"]

    async def list(self, prefix: str) -> dict[str, int]:
        """The streams whose names start with ``prefix``, and their lengths in bytes."""
        request = ujson.dumps({"prefix": prefix}).encode()
        answer = await self._slot.request(proto.LIST, request, f"listing the streams {prefix}…",
                                          timeout=self._metadata_timeout)
        return ujson.loads(bytes(answer))["streams"]
