"""Blocking Pravega operations, with the client's ways of failing made into one exception.

Only worker processes and commands (``binge-ingest``) import this: every
call here holds the GIL until Pravega answers, which can take minutes when
it is unreachable (the client retries on its own).

What pravega_client 0.3.8 does, as found by experiment and in its source:

* ``ByteStream.readinto(buf)`` takes a ``bytearray`` (no memoryview), fills
  at most ``len(buf)`` and at most 512 KiB. At the tail of a stream that is
  not sealed it blocks until someone appends, so a read must never pass
  ``current_tail_offset()``; at the tail of a sealed stream it returns 0.
* ``ByteStream.write`` takes ``bytes``, appends at most 8 MiB per call and
  returns how much; appends are conditional on the offset the writer object
  started from (0), so only a fresh stream can be written.
* ``ByteStream.truncate(offset)`` drops a segment's bytes before ``offset``
  (an event stream's too, when it has one segment); ``current_head_offset()``
  then answers ``offset``, a read below it fails with ``SegmentIsTruncated``,
  and a truncation below it fails with ``NoSuchSegment``.
* A ``ByteStream`` or writer needs the ``StreamManager`` that made it: once
  that is collected, its calls panic ("Tokio context ... being shutdown").
* A missing stream makes ``create_byte_stream`` panic; the panic reaches
  Python as ``pyo3_runtime.PanicException``, which derives from
  ``BaseException``, not ``Exception``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Collection, Iterator

import pravega_client

from pravega_workers.errors import NOT_FOUND, UNAVAILABLE, PravegaError
from pravega_workers.layout import split_events

log = logging.getLogger("binge.pravega")

# The most one readinto call fills, whatever the size of the buffer it is given.
READ_PIECE = 512 * 1024
# How much of an event stream one poll reads at most; a longer backlog takes several.
_EVENTS_READ = 4 * 1024 * 1024
# Substrings of the client's error text that mean "no such stream", not "unreachable".
_NOT_FOUND_SIGNS = ("NoSuchSegment", "status: NotFound", "SegmentIsTruncated")


@contextlib.contextmanager
def calling(what: str) -> Iterator[None]:
    """Turns whatever the client raises, Rust panics included, into :class:`PravegaError`."""
    try:
        yield
    except PravegaError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # PanicException is a BaseException
        message = f"{what}: {' '.join(str(e).split())[:500]}"
        kind = NOT_FOUND if any(sign in str(e) for sign in _NOT_FOUND_SIGNS) else UNAVAILABLE
        raise PravegaError(kind, message) from None


def stream_manager(controller_uri: str) -> pravega_client.StreamManager:
    """A client; it connects on first use, not here."""
    with calling("connecting to Pravega"):
        return pravega_client.StreamManager(controller_uri)


def ensure_event_stream(manager: pravega_client.StreamManager, scope: str, stream: str) -> None:
    """Creates the scope and its event stream ``stream``, of one segment, unless they exist."""
    with calling(f"creating scope {scope!r}"):
        manager.create_scope(scope)
    with calling(f"creating stream {stream!r} in {scope!r}"):
        manager.create_stream(scope, stream, 1)


def delete_stream(manager: pravega_client.StreamManager, scope: str, stream: str) -> None:
    """Seals and deletes ``stream``: Pravega deletes only sealed streams."""
    with calling(f"deleting stream {stream!r}"):
        manager.seal_stream(scope, stream)
        manager.delete_stream(scope, stream)


def _names(manager: pravega_client.StreamManager, scope: str, prefix: str) -> list[str]:
    with calling(f"listing the streams of {scope!r}"):
        return [name for name in manager.list_stream(scope) if name.startswith(prefix)]


def delete_streams(
    manager: pravega_client.StreamManager, scope: str, prefix: str, keep: Collection[str] = ()
) -> list[str]:
    """Seals and deletes every stream named ``prefix…`` but those in ``keep``; returns their names.

    A scope that does not exist has none.
    """
    if not prefix:
        raise ValueError("deleting streams needs a prefix")
    try:
        names = [name for name in _names(manager, scope, prefix) if name not in keep]
    except PravegaError as e:
        if e.kind == NOT_FOUND:
            return []
        raise
    for name in names:
        delete_stream(manager, scope, name)
    return names


def list_streams(manager: pravega_client.StreamManager, scope: str, prefix: str) -> dict[str, int]:
    """The streams named ``prefix…`` and their lengths in bytes; one that cannot be measured is left out."""
    try:
        names = _names(manager, scope, prefix)
    except PravegaError as e:
        if e.kind == NOT_FOUND:
            return {}
        raise
    found = {}
    for name in names:
        try:
            with calling(f"measuring {name!r}"):
                found[name] = manager.create_byte_stream(scope, name).current_tail_offset()
        except PravegaError as e:
            log.warning("not listing %s: %s", name, e)
    return found


def delete_scope(manager: pravega_client.StreamManager, scope: str) -> None:
    """Deletes ``scope`` and every stream in it: the standalone holds every stream in memory until deleted."""
    with calling(f"listing the streams of {scope!r}"):
        # Pravega lists its own "_MARK…" streams too, and removes them with their stream.
        streams = [name for name in manager.list_stream(scope) if not name.startswith("_")]
    for stream in streams:
        delete_stream(manager, scope, stream)
    with calling(f"deleting scope {scope!r}"):
        manager.delete_scope(scope)


def read_range(
    stream: pravega_client.ByteStream, offset: int, length: int, pieces: list[bytearray]
) -> list[memoryview]:
    """Bytes ``offset`` to ``offset + length`` of ``stream``, which must all exist already, as views of buffers.

    ``pieces`` are the caller's buffers of ``READ_PIECE`` bytes, added to as
    needed and used again by the next call, which the views do not outlive.
    Reusing them matters: with a fresh megabyte per read, a worker spent
    about four times the CPU of the reads themselves (bench/RESULTS.md).
    """
    with calling("reading"):
        if stream.tell() != offset:
            stream.seek(offset)
        views: list[memoryview] = []
        got = 0
        while got < length:
            if length - got >= READ_PIECE:
                if len(pieces) == len(views):
                    pieces.append(bytearray(READ_PIECE))
                piece = pieces[len(views)]
            else:
                # readinto fills from the start of a bytearray and never past
                # its end, and a read past the range could wait at the tail.
                piece = bytearray(length - got)
            n = stream.readinto(piece)
            if n <= 0:
                raise PravegaError(UNAVAILABLE, f"read at offset {offset + got} returned nothing")
            views.append(memoryview(piece)[:n])
            got += n
        return views


class EventReader:
    """Reads the events of a one-segment event stream in order, as raw segment bytes, never past its tail.

    A byte reader over the stream's segment sees each event framed as
    Pravega stores it. Reading it so, rather than through a reader group,
    needs no per-instance state in Pravega and tells exactly when every event
    written so far has been read. Reading starts at the stream's head: the
    first event not truncated away.
    """

    def __init__(self, manager: pravega_client.StreamManager, scope: str, stream: str) -> None:
        self.name = stream
        # The manager owns the client's runtime, which the stream object needs.
        self._manager = manager
        with calling(f"opening stream {stream!r}"):
            self._stream = manager.create_byte_stream(scope, stream)
            self.position = self._stream.current_head_offset()
        # Bytes of an event the last read cut short; appends are atomic, so
        # this only fills when the read size limit falls inside an event.
        self._partial = b""
        self._pieces: list[bytearray] = []

    def read_new(self) -> tuple[list[tuple[int, bytes]], bool]:
        """Events written since the last call, each with the offset after it, and whether that reached the tail.

        An event truncated away before it was read fails with kind ``NOT_FOUND``.
        """
        with calling(f"reading the length of {self.name!r}"):
            tail = self._stream.current_tail_offset()
        read_from = self.position + len(self._partial)
        if tail < read_from:
            raise PravegaError(UNAVAILABLE, f"{self.name!r} shrank from {read_from} to {tail} bytes: recreated")
        if tail == read_from:
            return [], True
        length = min(tail - read_from, _EVENTS_READ)
        data = b"".join([self._partial, *read_range(self._stream, read_from, length, self._pieces)])
        try:
            events, used = split_events(data)
        except ValueError as e:
            raise PravegaError(UNAVAILABLE, f"{self.name!r}: {e}") from None
        records = [(self.position + end, payload) for end, payload in events]
        self.position += used
        self._partial = bytes(data[used:])
        return records, read_from + length == tail

    def truncate(self, offset: int) -> None:
        """Drops the events before ``offset``, which must be where an event ends.

        Fails when ``offset`` lies before the head, as when another instance truncated further already.
        """
        with calling(f"truncating {self.name!r} at {offset}"):
            self._stream.truncate(offset)
