"""Blocking Pravega operations, with the client's ways of failing made into one exception.

Only worker processes and the ingest command import this: every call here
holds the GIL until Pravega answers, which can take minutes when it is
unreachable (the client retries on its own).

What pravega_client 0.3.8 does, as found by experiment and in its source:

* ``ByteStream.readinto(buf)`` takes a ``bytearray`` (no memoryview), fills
  at most ``len(buf)`` and at most 512 KiB. At the tail of a stream that is
  not sealed it blocks until someone appends, so a read must never pass
  ``current_tail_offset()``; at the tail of a sealed stream it returns 0.
* ``ByteStream.write`` takes ``bytes``, appends at most 8 MiB per call and
  returns how much; appends are conditional on the offset the writer object
  started from (0), so only a fresh stream can be written.
* A missing stream makes ``create_byte_stream`` panic; the panic reaches
  Python as ``pyo3_runtime.PanicException``, which derives from
  ``BaseException``, not ``Exception``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import pravega_client

from media.pravega_catalog import CATALOG_STREAM, StoredVideo, decode_record, split_events

# How much of the catalog one poll reads at most; a longer backlog takes several.
_CATALOG_READ = 4 * 1024 * 1024
# Substrings of the client's error text that mean "no such stream", not "unreachable".
_NOT_FOUND_SIGNS = ("NoSuchSegment", "status: NotFound", "SegmentIsTruncated")


class PravegaError(Exception):
    """A failed Pravega call; ``kind`` is "not_found" (the stream is gone) or "unavailable"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


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
        kind = "not_found" if any(sign in str(e) for sign in _NOT_FOUND_SIGNS) else "unavailable"
        raise PravegaError(kind, message) from None


def stream_manager(controller_uri: str) -> pravega_client.StreamManager:
    """A client; it connects on first use, not here."""
    with calling("connecting to Pravega"):
        return pravega_client.StreamManager(controller_uri)


def ensure_catalog(manager: pravega_client.StreamManager, scope: str) -> None:
    """Creates the scope and its catalog stream unless they exist."""
    with calling(f"creating scope {scope!r}"):
        manager.create_scope(scope)
    with calling(f"creating the catalog stream in {scope!r}"):
        manager.create_stream(scope, CATALOG_STREAM, 1)


def read_exactly(stream: pravega_client.ByteStream, offset: int, length: int) -> bytearray:
    """Bytes ``offset`` to ``offset + length`` of ``stream``, which must all exist already."""
    with calling("reading"):
        if stream.tell() != offset:
            stream.seek(offset)
        out = bytearray(length)
        got = 0
        while got < length:
            # readinto fills from the start of a bytearray and never past its end,
            # so each call gets one exactly as long as what is still missing.
            piece = out if got == 0 else bytearray(length - got)
            n = stream.readinto(piece)
            if n <= 0:
                raise PravegaError("unavailable", f"read at offset {offset + got} returned nothing")
            if got:
                out[got : got + n] = memoryview(piece)[:n]
            got += n
        return out


class CatalogReader:
    """Reads the catalog's records in order, as raw segment bytes, never past its tail.

    The catalog is an event stream with one segment, and a byte reader over
    that segment sees each event framed as Pravega stores it. Reading it so,
    rather than through a reader group, needs no per-instance state in
    Pravega and tells exactly when every record written so far has been read.
    """

    def __init__(self, manager: pravega_client.StreamManager, scope: str) -> None:
        with calling("opening the catalog"):
            self._stream = manager.create_byte_stream(scope, CATALOG_STREAM)
        self.position = 0
        # Bytes of an event the last read cut short; appends are atomic, so
        # this only fills when the read size limit falls inside an event.
        self._partial = b""

    def read_new(self) -> tuple[list[tuple[int, bytes]], bool]:
        """Records written since the last call, each with the offset after it, and whether that reached the tail."""
        with calling("reading the catalog's length"):
            tail = self._stream.current_tail_offset()
        read_from = self.position + len(self._partial)
        if tail < read_from:
            raise PravegaError("unavailable", f"the catalog shrank from {read_from} to {tail} bytes: it was recreated")
        if tail == read_from:
            return [], True
        length = min(tail - read_from, _CATALOG_READ)
        data = self._partial + read_exactly(self._stream, read_from, length)
        try:
            events, used = split_events(data)
        except ValueError as e:
            raise PravegaError("unavailable", f"catalog: {e}") from None
        records = [(self.position + end, payload) for end, payload in events]
        self.position += used
        self._partial = bytes(data[used:])
        return records, read_from + length == tail


def replay_catalog(manager: pravega_client.StreamManager, scope: str) -> dict[str, StoredVideo]:
    """The catalog as it stands now: the latest usable record of each id."""
    reader = CatalogReader(manager, scope)
    videos: dict[str, StoredVideo] = {}
    caught_up = False
    while not caught_up:
        records, caught_up = reader.read_new()
        for _, data in records:
            stored = decode_record(data)
            if stored is not None:
                videos[stored.record.id] = stored
    return videos
