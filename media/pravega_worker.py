"""A process that does Pravega I/O for the server, which talks to it over a socket.

    python -m media.pravega_worker reader|catalog --fd N --controller URI --scope S [--poll SECONDS]

``reader`` answers READ requests one at a time with the bytes asked for.
``catalog`` replays the catalog from its head, then polls its tail and sends
each new record; after any failure it starts over with a fresh client and a
full replay, which also covers a catalog that was recreated meanwhile.

The client's calls hold the GIL and may block for minutes when Pravega is
unreachable, which is why they run here and not in the server: the server
times requests out and kills a worker that stops answering. A worker exits
when its socket closes and, on Linux, when the server dies.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import logging
import os
import signal
import socket
import sys
import time

import ujson

from media import pravega_protocol as proto
from media.pravega_io import CatalogReader, PravegaError, calling, ensure_catalog, read_exactly, stream_manager

log = logging.getLogger("binge.pravega.worker")

_PR_SET_PDEATHSIG = 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m media.pravega_worker")
    parser.add_argument("role", choices=("reader", "catalog"))
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--controller", required=True)
    parser.add_argument("--scope", required=True)
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"pravega {args.role} worker %(process)d: %(message)s")
    _die_with_parent()
    # Panics are expected here (a missing stream panics); a backtrace per panic would flood the log.
    os.environ["RUST_BACKTRACE"] = "0"
    sock = socket.socket(fileno=args.fd)
    try:
        if args.role == "reader":
            serve_reads(sock, args.controller, args.scope)
        else:
            follow_catalog(sock, args.controller, args.scope, args.poll)
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
    store, and a player reads one video in many ranges, so a finished read
    leaves its stream object idle for the next read of that stream.
    """

    def __init__(self, manager, scope: str, idle_limit: int = 16) -> None:
        self.manager = manager
        self.scope = scope
        self.idle_limit = idle_limit
        self._active: dict[str, tuple[str, object]] = {}
        self._idle: collections.OrderedDict[tuple[str, int], object] = collections.OrderedDict()
        self._opened = 0

    def read(self, reader: str, stream: str, offset: int, length: int) -> bytearray:
        entry = self._active.get(reader)
        if entry is None or entry[0] != stream:
            entry = (stream, self._checkout(stream))
            self._active[reader] = entry
        try:
            return read_exactly(entry[1], offset, length)
        except PravegaError:
            # The object may be mid-read or broken: never hand it out again.
            del self._active[reader]
            raise

    def release(self, reader: str) -> None:
        entry = self._active.pop(reader, None)
        if entry is None:
            return
        self._opened += 1
        self._idle[(entry[0], self._opened)] = entry[1]
        while len(self._idle) > self.idle_limit:
            self._idle.popitem(last=False)

    def _checkout(self, stream: str):
        for key in reversed(self._idle):
            if key[0] == stream:
                return self._idle.pop(key)
        with calling(f"opening stream {stream!r}"):
            return self.manager.create_byte_stream(self.scope, stream)


def serve_reads(sock: socket.socket, controller_uri: str, scope: str) -> None:
    pool = ByteStreamPool(stream_manager(controller_uri), scope)
    while (frame := proto.recv_frame(sock)) is not None:
        kind, tag, payload = frame
        request = ujson.loads(payload)
        if kind == proto.RELEASE:
            pool.release(request["reader"])
            continue
        if kind != proto.READ:
            raise ValueError(f"unknown request kind {kind}")
        try:
            data = pool.read(request["reader"], request["stream"], request["offset"], request["length"])
        except PravegaError as e:
            error = ujson.dumps({"kind": e.kind, "message": str(e)}).encode()
            proto.send_frame(sock, proto.ERROR, tag, error)
            continue
        proto.send_frame(sock, proto.DATA, tag, data)


def follow_catalog(sock: socket.socket, controller_uri: str, scope: str, poll: float) -> None:
    while True:
        try:
            manager = stream_manager(controller_uri)
            ensure_catalog(manager, scope)
            reader = CatalogReader(manager, scope)
            proto.send_frame(sock, proto.CATALOG_RESET, 0)
            while True:
                records, caught_up = reader.read_new()
                for offset, data in records:
                    proto.send_frame(sock, proto.CATALOG_RECORD, offset, data)
                if caught_up:
                    proto.send_frame(sock, proto.CATALOG_CAUGHT_UP, reader.position)
                    time.sleep(poll)
        except PravegaError as e:
            log.warning("%s", e)
            proto.send_frame(sock, proto.CATALOG_FAILING, 0, ujson.dumps({"message": str(e)}).encode())
            time.sleep(poll)


if __name__ == "__main__":
    sys.exit(main())
