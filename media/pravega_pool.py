"""The server's side of its Pravega worker processes (see :mod:`media.pravega_worker`).

Each worker is a child process joined to the server by a socket pair that
the event loop watches, so waiting on Pravega never blocks the loop. A reply
to a read lands straight in the buffer of the read that asked for it, and a
read asks for its next chunk only when the last one was consumed, so what is
buffered between the processes is at most one chunk per read in progress.

A worker that does not answer within ``pravega.timeout`` is killed, every
request waiting on it fails with :class:`Unavailable`, and the next request
starts a fresh process with a fresh client.
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
from typing import Callable, Sequence

import ujson

from media import pravega_protocol as proto
from media.store import NotFound, Unavailable
from settings import PravegaSettings

log = logging.getLogger("binge.store")

# The repository root, so ``python -m media.pravega_worker`` finds this package
# whether or not it is installed.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "media.pravega_worker", role, "--fd", str(theirs.fileno()),
                 "--controller", settings.controller_uri, "--scope", settings.scope, *options],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))},
            )
        except OSError as e:
            ours.close()
            raise Unavailable(f"cannot start a Pravega {role} worker: {e}") from None
        finally:
            theirs.close()
        self.sock = ours
        self.sock.setblocking(False)
        self._header = bytearray(proto.HEADER.size)
        self._got = 0
        self._frame: tuple[int, int, memoryview] | None = None
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._on_readable)

    def send(self, kind: int, tag: int, payload: bytes = b"") -> None:
        """Queues a request without blocking; a worker whose socket is full is stuck and is killed."""
        if self.dead:
            raise Unavailable(f"the Pravega {self.role} worker is gone")
        frame = proto.HEADER.pack(kind, tag, len(payload)) + payload
        try:
            sent = self.sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self.kill(f"cannot send to it: {e}")
            raise Unavailable(f"the Pravega {self.role} worker is gone") from None
        if sent != len(frame):
            self.kill("it stopped taking requests")
            raise Unavailable(f"the Pravega {self.role} worker is stuck")

    async def finish(self, grace: float, reason: str) -> None:
        """Closes our sending side, which a worker takes as the end once it has acted on what came before.

        A worker that has not exited after ``grace`` seconds is killed.
        """
        if self.dead:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
            async with asyncio.timeout(grace):
                await self._gone.wait()
        except (OSError, TimeoutError):
            pass
        self.kill(reason)

    def kill(self, reason: str) -> None:
        if self.dead:
            return
        self.dead = True
        self._gone.set()
        self._loop.remove_reader(self.sock.fileno())
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
        self.on_frame(kind, tag, payload)

    def _eof(self) -> None:
        status = self.process.poll()
        self.kill("it exited" + (f" with status {status}" if status is not None else ""))


@dataclass
class _Pending:
    future: asyncio.Future
    into: memoryview


class _ReaderSlot:
    """A place for one reader worker; the process in it is replaced when it dies or hangs."""

    _tags = itertools.count(1)

    def __init__(self, settings: PravegaSettings) -> None:
        self.settings = settings
        self.worker: Worker | None = None
        self.pending: dict[int, _Pending] = {}
        self.sessions = 0

    def ensure_worker(self) -> Worker:
        if self.worker is None or self.worker.dead:
            self.worker = Worker("reader", self.settings, self._on_frame, self._on_exit, self._target_for)
        return self.worker

    async def read(self, reader: str, stream: str, offset: int, into: memoryview) -> None:
        worker = self.ensure_worker()
        tag = next(self._tags)
        future = asyncio.get_running_loop().create_future()
        self.pending[tag] = _Pending(future, into)
        request = {"reader": reader, "stream": stream, "offset": offset, "length": len(into)}
        try:
            worker.send(proto.READ, tag, ujson.dumps(request).encode())
        except Unavailable:
            self.pending.pop(tag, None)
            raise
        try:
            async with asyncio.timeout(self.settings.timeout):
                await future
        except TimeoutError:
            worker.kill(f"no answer in {self.settings.timeout:g}s")
            raise Unavailable(
                f"Pravega did not answer a read of {stream!r} within {self.settings.timeout:g}s"
            ) from None

    def release(self, reader: str) -> None:
        if self.worker is not None and not self.worker.dead:
            try:
                self.worker.send(proto.RELEASE, 0, ujson.dumps({"reader": reader}).encode())
            except Unavailable:
                pass  # the worker was stuck and is gone, and the reader with it

    def close(self) -> None:
        if self.worker is not None:
            self.worker.kill("the store closed")

    def _target_for(self, kind: int, tag: int, length: int) -> memoryview:
        pending = self.pending.get(tag)
        if kind == proto.DATA and pending is not None:
            return pending.into
        return memoryview(bytearray(length))

    def _on_frame(self, kind: int, tag: int, payload: memoryview) -> None:
        pending = self.pending.pop(tag, None)
        if pending is None or pending.future.done():
            return  # its read was abandoned
        if kind == proto.DATA:
            pending.future.set_result(None)
        elif kind == proto.ERROR:
            error = ujson.loads(bytes(payload))
            cls = NotFound if error.get("kind") == "not_found" else Unavailable
            pending.future.set_exception(cls(error.get("message", "Pravega failed")))
        else:
            self.worker.kill(f"unexpected reply kind {kind}")

    def _on_exit(self, reason: str) -> None:
        pending, self.pending = self.pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(Unavailable(f"the Pravega reader worker failed: {reason}"))


class ReaderPool:
    """``pravega.workers`` reader processes shared by every read in the server."""

    def __init__(self, settings: PravegaSettings) -> None:
        self._slots = [_ReaderSlot(settings) for _ in range(settings.workers)]

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

    def __init__(self, slot: _ReaderSlot) -> None:
        self.slot = slot
        self.reader = uuid.uuid4().hex

    def __enter__(self) -> "ReadSession":
        self.slot.sessions += 1
        return self

    def __exit__(self, *exc) -> None:
        self.slot.sessions -= 1
        self.slot.release(self.reader)

    async def read_into(self, stream: str, offset: int, into: memoryview) -> None:
        """Fills ``into`` with the bytes of ``stream`` from ``offset``."""
        await self.slot.read(self.reader, stream, offset, into)
