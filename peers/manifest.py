"""The manifest: what every piece of a video must hash to.

A video of ``size`` bytes is cut into pieces of ``pieceSize`` bytes (the
last one shorter); piece ``n`` is bytes ``n * pieceSize`` to
``min((n + 1) * pieceSize, size)``, and an empty video has no pieces. As JSON::

    {"id": "alpha", "size": 4194304, "pieceSize": 65536,
     "pieces": ["<sha256 hex of piece 0>", ...],
     "root": "<sha256 hex over the concatenated raw piece digests>",
     "etag": "\\"...\\""}

``etag`` is the video's strong validator at the origin when the manifest was
made, so a manifest names one version of the bytes. ``root`` names the whole
manifest in one value: nodes put it on piece requests so that pieces of two
versions never mix, and :meth:`Manifest.from_json` refuses a manifest whose
piece list does not hash to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
from dataclasses import dataclass

from media.store import Store, VideoRecord

DIGEST_SIZE = hashlib.sha256().digest_size


@dataclass(frozen=True)
class Manifest:
    video_id: str
    size: int
    piece_size: int
    digests: tuple[bytes, ...]
    etag: str

    @functools.cached_property
    def root(self) -> str:
        return hashlib.sha256(b"".join(self.digests)).hexdigest()

    @property
    def piece_count(self) -> int:
        return len(self.digests)

    def piece_range(self, n: int) -> tuple[int, int]:
        """Piece ``n``'s bytes as ``(start, end)``, end excluded."""
        start = n * self.piece_size
        return start, min(start + self.piece_size, self.size)

    def pieces_covering(self, start: int, end: int) -> range:
        """The indices of the pieces holding bytes ``start`` to ``end`` (excluded)."""
        if end <= start:
            return range(0)
        return range(start // self.piece_size, (end - 1) // self.piece_size + 1)

    def to_json(self) -> dict:
        return {
            "id": self.video_id,
            "size": self.size,
            "pieceSize": self.piece_size,
            "pieces": [d.hex() for d in self.digests],
            "root": self.root,
            "etag": self.etag,
        }

    @classmethod
    def from_json(cls, obj: object) -> Manifest:
        """Reads and checks a manifest; ValueError, naming the fault, if it is not a sound one."""
        if not isinstance(obj, dict):
            raise ValueError("manifest: not a JSON object")
        video_id, size, piece_size, pieces, root, etag = (
            obj.get(k) for k in ("id", "size", "pieceSize", "pieces", "root", "etag")
        )
        if not isinstance(video_id, str) or not isinstance(etag, str) or not isinstance(root, str):
            raise ValueError("manifest: id, root and etag must be strings")
        for name, value in (("size", size), ("pieceSize", piece_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"manifest: {name} must be a whole number")
        if piece_size == 0:
            raise ValueError("manifest: pieceSize must be positive")
        if not isinstance(pieces, list) or len(pieces) != -(-size // piece_size):
            raise ValueError(f"manifest: {size} bytes in pieces of {piece_size} need {-(-size // piece_size)} digests")
        try:
            digests = tuple(bytes.fromhex(p) for p in pieces)
        except (TypeError, ValueError):
            raise ValueError("manifest: every piece digest must be hex") from None
        if any(len(d) != DIGEST_SIZE for d in digests):
            raise ValueError("manifest: every piece digest must be a SHA-256")
        manifest = cls(video_id, size, piece_size, digests, etag)
        if manifest.root != root:
            raise ValueError("manifest: the piece digests do not hash to its root")
        return manifest


class _PieceHasher:
    """Hashes a stream of bytes, given in chunks of any size, piece by piece."""

    def __init__(self, piece_size: int) -> None:
        self.piece_size = piece_size
        self.digests: list[bytes] = []
        self._hash = hashlib.sha256()
        self._filled = 0

    def feed(self, data: memoryview) -> None:
        while data:
            take = min(len(data), self.piece_size - self._filled)
            self._hash.update(data[:take])
            self._filled += take
            data = data[take:]
            if self._filled == self.piece_size:
                self._close_piece()

    def finish(self) -> tuple[bytes, ...]:
        if self._filled:
            self._close_piece()
        return tuple(self.digests)

    def _close_piece(self) -> None:
        self.digests.append(self._hash.digest())
        self._hash = hashlib.sha256()
        self._filled = 0


async def compute_manifest(store: Store, video: VideoRecord, piece_size: int) -> Manifest:
    """Reads ``video`` through ``store`` and hashes it into a manifest.

    Hashing runs in the default thread executor: hashlib releases the GIL on
    large buffers, so a big video does not hold up the event loop. Each chunk
    is hashed before the next is asked for, as the store's buffer reuse
    requires.
    """
    hasher = _PieceHasher(piece_size)
    loop = asyncio.get_running_loop()
    async with contextlib.aclosing(store.read(video, 0, video.size, max(piece_size, 1024 * 1024))) as chunks:
        async for chunk in chunks:
            await loop.run_in_executor(None, hasher.feed, chunk)
    return Manifest(video.id, video.size, piece_size, hasher.finish(), video.etag)
