"""How Pravega lays out what it is given: events in a segment, and the names streams may have.

Readers here read an event stream's one segment as bytes (see
:class:`~pravega_workers.blocking.EventReader`), where each event is an
8-byte frame (a type code, 0, and a length) followed by the event, so where
an event lies follows from the lengths of those before it.
"""

from __future__ import annotations

import hashlib
import struct

# Pravega's frame of each event in a segment: a type code and a length.
EVENT_FRAME = struct.Struct(">ii")
_EVENT_TYPE = 0
# The largest event Pravega takes.
MAX_EVENT = 8 * 1024 * 1024


def split_events(data: bytes | bytearray | memoryview) -> tuple[list[tuple[int, bytes]], int]:
    """The complete events at the start of raw segment ``data``, each with the offset just past it.

    Returns the events and how many bytes they took; bytes after that are
    an event whose end has not been read yet. ``ValueError`` for bytes that
    are not framed events.
    """
    events = []
    pos = 0
    while len(data) - pos >= EVENT_FRAME.size:
        kind, length = EVENT_FRAME.unpack_from(data, pos)
        if kind != _EVENT_TYPE or length < 0:
            raise ValueError(f"not an event at offset {pos} of the data read (type {kind}, length {length})")
        end = pos + EVENT_FRAME.size + length
        if end > len(data):
            break
        events.append((end, bytes(data[pos + EVENT_FRAME.size : end])))
        pos = end
    return events, pos


def name_prefix(family: str, key: str) -> str:
    """The start of the names of a family's streams for ``key``: ``<family>-<hash of key>-``.

    Stream names allow only letters, digits, '.' and '-', and keys (ids of
    the caller's) may hold '_', so the key goes in as a hash; listing by this prefix
    finds every stream written for the key, and none of another's.
    """
    return f"{family}-{hashlib.sha256(key.encode()).hexdigest()[:24]}-"
