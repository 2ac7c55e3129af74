"""A process that does Pravega I/O for the server, which talks to it over a socket.

    python -m pravega_workers.worker reader --fd N --controller URI --scope S
    python -m pravega_workers.worker follow --fd N --controller URI --scope S --stream NAME [--poll S] [--keep S]
    python -m pravega_workers.worker appender --fd N --controller URI --scope S

``reader`` answers READ requests one at a time with the bytes asked for.
``appender`` creates event streams and appends events to them, keeping
one writer per stream; it also lists and deletes streams by name prefix.
``follow`` replays an event stream of one segment
from its head, then polls its tail and sends each new event; between polls
it appends the events the server sends it. After any failure it starts over
with a fresh client and a full replay, which also covers a stream that was
recreated meanwhile. With ``--keep``, it truncates the stream's head to
where the tail was ``keep`` seconds ago, so that a replay reads only that
much.

The client's calls hold the GIL and may block for minutes when Pravega is
unreachable, which is why they run here and not in the server: the server
times requests out and kills a worker that stops answering. A worker exits
when its socket closes and, on Linux, when the server dies.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import itertools
import logging
import os
import select
import signal
import socket
import sys
import time

import ujson

from pravega_workers import protocol as proto
from pravega_workers.blocking import (
    EventReader, PravegaError, calling, delete_streams, ensure_event_stream, list_streams, read_range,
    stream_manager,
)
from pravega_workers.errors import NOT_FOUND

log = logging.getLogger("binge.pravega.worker")

_PR_SET_PDEATHSIG = 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pravega_workers.worker")
    parser.add_argument("role", choices=("reader", "follow", "appender"))
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--controller", required=True)
    parser.add_argument("--scope", required=True)
    parser.add_argument("--stream", help="the event stream to follow")
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--keep", type=float, help="seconds of events to keep when truncating")
    args = parser.parse_args(argv)
    if args.role == "follow" and not args.stream:
        parser.error("follow needs --stream")
    logging.basicConfig(level=logging.WARNING, format=f"pravega {args.role} worker %(process)d: %(message)s")
    _die_with_parent()
    # Panics are expected here (a missing stream panics); a backtrace per panic would flood the log.
    os.environ["RUST_BACKTRACE"] = "0"
    sock = socket.socket(fileno=args.fd)
    try:
        if args.role == "reader":
            serve_reads(sock, args.controller, args.scope)
        elif args.role == "appender":
            serve_appends(sock, args.controller, args.scope)
        else:
            follow_stream(sock, args.controller, args.scope, args.stream, args.poll, args.keep)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server went away
    return 0


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the worker still exits when its socket closes


class ByteStreamPool:
    """The client's byte streams for this worker's reads.

    Opening one costs a round trip to the controller and two to the segment
    store, and a reader asks for one stream in many ranges, so a finished read
    leaves its stream object idle for the next read of that stream. Reads
    land in buffers of the pool's, kept for the next read (see
    :func:`~pravega_workers.blocking.read_range`).
    """

    def __init__(self, manager, scope: str, idle_limit: int = 16) -> None:
        self.manager = manager
        self.scope = scope
        self.idle_limit = idle_limit
        self._active: dict[str, tuple[str, object]] = {}
        self._idle: collections.OrderedDict[tuple[str, int], object] = collections.OrderedDict()
        # Tells apart idle objects of one stream, in the order they went idle.
        self._idle_keys = itertools.count()
        # Objects opened so far; a read that opened none used one opened before.
        self._opened = 0
        self._pieces: list[bytearray] = []

    def read(self, reader: str, stream: str, offset: int, length: int) -> list[memoryview]:
        """The bytes asked for, as views that the next read overwrites."""
        entry = self._active.get(reader)
        opened = self._opened
        if entry is None or entry[0] != stream:
            entry = (stream, self._checkout(stream))
            self._active[reader] = entry
        try:
            return read_range(entry[1], offset, length, self._pieces)
        except PravegaError as e:
            # The object may be mid-read or broken: never hand it out again.
            del self._active[reader]
            if e.kind != NOT_FOUND or self._opened != opened:
                raise
            # An object opened earlier finds no segment: the stream may have been deleted and created
            # again under its name since (evicted, then written anew). Those are stale.
            for key in [key for key in self._idle if key[0] == stream]:
                del self._idle[key]
            return self.read(reader, stream, offset, length)

    def release(self, reader: str) -> None:
        entry = self._active.pop(reader, None)
        if entry is None:
            return
        self._idle[(entry[0], next(self._idle_keys))] = entry[1]
        while len(self._idle) > self.idle_limit:
            self._idle.popitem(last=False)

    def _checkout(self, stream: str):
        for key in reversed(self._idle):
            if key[0] == stream:
                return self._idle.pop(key)
        with calling(f"opening stream {stream!r}"):
            stream_object = self.manager.create_byte_stream(self.scope, stream)
        self._opened += 1
        return stream_object


def serve_reads(sock: socket.socket, controller_uri: str, scope: str) -> None:
    pool = ByteStreamPool(stream_manager(controller_uri), scope)
    proto.send_frame(sock, proto.READY, 0)
    while (frame := proto.recv_frame(sock)) is not None:
        kind, tag, payload = frame
        request = ujson.loads(payload)
        if kind == proto.RELEASE:
            pool.release(request["reader"])
            continue
        if kind != proto.READ:
            raise ValueError(f"unknown request kind {kind}")
        try:
            views = pool.read(request["reader"], request["stream"], request["offset"], request["length"])
        except PravegaError as e:
            error = ujson.dumps({"kind": e.kind, "message": str(e)}).encode()
            proto.send_frame(sock, proto.ERROR, tag, error)
            continue
        proto.send_frame(sock, proto.DATA, tag, *views)


def serve_appends(sock: socket.socket, controller_uri: str, scope: str) -> None:
    manager = stream_manager(controller_uri)
    proto.send_frame(sock, proto.READY, 0)
    writers: dict[str, object] = {}
    while (frame := proto.recv_frame(sock)) is not None:
        kind, tag, payload = frame
        try:
            if kind == proto.CREATE:
                answer = ujson.dumps({"tail": create_stream(manager, scope, ujson.loads(payload)["stream"])})
            elif kind == proto.APPEND_TO:
                name, _, event = payload.partition(b"\n")
                stream = name.decode()
                if stream not in writers:
                    with calling(f"opening a writer on {stream!r}"):
                        writers[stream] = manager.create_writer(scope, stream)
                try:
                    with calling(f"appending to {stream!r}"):
                        writers[stream].write_event_bytes(event)
                        writers[stream].flush()
                except PravegaError:
                    # Whether the event landed is unknown; the server decides what that means.
                    del writers[stream]
                    raise
                answer = ""
            elif kind == proto.DELETE:
                request = ujson.loads(payload)
                deleted = delete_streams(manager, scope, request["prefix"], keep=request["keep"])
                for name in deleted:
                    writers.pop(name, None)
                answer = ujson.dumps({"deleted": deleted})
            elif kind == proto.LIST:
                answer = ujson.dumps({"streams": list_streams(manager, scope, ujson.loads(payload)["prefix"])})
            else:
                raise ValueError(f"unknown request kind {kind}")
        except PravegaError as e:
            proto.send_frame(sock, proto.ERROR, tag, ujson.dumps({"kind": e.kind, "message": str(e)}).encode())
            continue
        proto.send_frame(sock, proto.DATA, tag, answer.encode())


def create_stream(manager, scope: str, stream: str) -> int:
    """Creates ``stream`` (one segment) unless it exists, and returns its length."""
    ensure_event_stream(manager, scope, stream)
    with calling(f"measuring {stream!r}"):
        return manager.create_byte_stream(scope, stream).current_tail_offset()


def follow_stream(
    sock: socket.socket, controller_uri: str, scope: str, stream: str, poll: float, keep: float | None
) -> None:
    """Follows ``stream`` and appends to it until the server closes the socket."""
    proto.send_frame(sock, proto.READY, 0)
    while True:
        try:
            manager = stream_manager(controller_uri)
            ensure_event_stream(manager, scope, stream)
            reader = EventReader(manager, scope, stream)
            truncator = Truncator(reader, keep) if keep else None
            writer = None
            proto.send_frame(sock, proto.RESET, reader.position)
            while True:
                records, caught_up = reader.read_new()
                for offset, data in records:
                    proto.send_frame(sock, proto.RECORD, offset, data)
                if not caught_up:
                    continue
                proto.send_frame(sock, proto.CAUGHT_UP, reader.position)
                if truncator:
                    truncator.caught_up(time.monotonic())
                # Events to append are taken only between reads, so that a
                # replay is over before this instance adds to the stream.
                appends, closed = take_appends(sock, poll)
                if appends:
                    if writer is None:
                        with calling(f"opening a writer on {stream!r}"):
                            writer = manager.create_writer(scope, stream)
                    with calling(f"appending to {stream!r}"):
                        for data in appends:
                            writer.write_event_bytes(data)
                        writer.flush()
                if closed:
                    return
        except PravegaError as e:
            log.warning("%s", e)
            proto.send_frame(sock, proto.FAILING, 0, ujson.dumps({"message": str(e)}).encode())
            time.sleep(poll)


def take_appends(sock: socket.socket, wait: float) -> tuple[list[bytes], bool]:
    """The APPEND requests the server sent within ``wait`` seconds, and whether it then closed the socket.

    The server sends whole frames at once, so a frame that has begun to arrive is read without waiting.
    """
    appends: list[bytes] = []
    timeout = wait
    while select.select([sock], [], [], timeout)[0]:
        frame = proto.recv_frame(sock)
        if frame is None:
            return appends, True
        kind, _, payload = frame
        if kind != proto.APPEND:
            raise ValueError(f"unknown request kind {kind}")
        appends.append(payload)
        # Once something came, take what else is there and get on with it.
        timeout = 0
    return appends, False


class Truncator:
    """Truncates a stream's head to where its tail was at least ``keep`` seconds ago.

    What was there earlier is never needed again when every writer repeats
    what matters within ``keep`` seconds (a snapshot of its state, say), and
    a replay then reads only about ``keep`` seconds of events. Several
    followers truncating the same stream is harmless: truncation only moves
    the head forward, and one that lost the race (its offset is behind the
    head already) fails and is ignored.
    """

    def __init__(self, reader: EventReader, keep: float) -> None:
        self.reader = reader
        self.keep = keep
        # (when, the offset the tail was at then), oldest first, about keep/4 apart.
        self._marks: collections.deque[tuple[float, int]] = collections.deque()

    def caught_up(self, now: float) -> None:
        if not self._marks or now - self._marks[-1][0] >= self.keep / 4:
            self._marks.append((now, self.reader.position))
        cut = None
        while self._marks and now - self._marks[0][0] >= self.keep:
            cut = self._marks.popleft()[1]
        if cut:
            try:
                self.reader.truncate(cut)
            except PravegaError as e:
                log.debug("not truncated: %s", e)


if __name__ == "__main__":
    sys.exit(main())
