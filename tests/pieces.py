"""What the tests of piece storage share: manifests made from bytes, and waits on what a storage holds."""

from __future__ import annotations

import asyncio
import hashlib
import time

from peers.manifest import Manifest
from settings import PravegaSettings

PIECE = 64 * 1024


def manifest_of(data: bytes, piece_size: int = PIECE, video_id: str = "v", etag: str = '"v1"') -> Manifest:
    digests = tuple(hashlib.sha256(data[i : i + piece_size]).digest() for i in range(0, len(data), piece_size))
    return Manifest(video_id, len(data), piece_size, digests, etag)


def streams_of(settings: PravegaSettings) -> list[str]:
    from pravega_workers.blocking import stream_manager

    return sorted(name for name in stream_manager(settings.controller_uri).list_stream(settings.scope)
                  if not name.startswith("_"))


async def until_held(storage, pieces: set[int], seconds: float = 10.0) -> None:
    """Pieces are appended in the background: waits until the storage holds ``pieces``.

    Nothing here claims how fast an append is, only that it lands: ``seconds``
    just turns a hang into a failure, and must cover a busy Pravega's appends.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if storage.held() == pieces and not storage._waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"held {storage.held()}, waiting {set(storage._waiting)}, not {pieces}")
