"""A node's own copy of a video: the verified pieces it holds.

:class:`PieceStorage` is what a node's store needs from its backend. A
storage holds pieces of one version of one video, named by a manifest;
adopting another manifest (the video changed upstream) drops what it held.

:class:`SparseFilePieces`, for the filesystem backend, keeps every piece at
its offset in a sparse file, so any piece received can be kept and any
range held can be served, and records which pieces passed verification.
In ``<library>/.pieces/`` (hidden from the library scan, so that partial
files never pass for videos) a video ``ID`` has:

- ``ID.data``: the bytes, as long as the video, holes where pieces are missing;
- ``ID.manifest.json``: the manifest the pieces belong to;
- ``ID.have.json``: ``{"root", "pieces": [[first, end], ...]}``, the pieces
  verified on receipt (see :mod:`peers.have`), rewritten at most every
  ``SAVE_DELAY`` seconds and on close.

Pieces read back for the node's own clients (:meth:`PieceStorage.get`) are
hashed again, so a disk that corrupted them is caught: the piece is dropped
and fetched anew. Pieces read for other nodes (:meth:`PieceStorage.raw`)
are not, since every receiver verifies what it gets anyway.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import logging
import os

import ujson

from peers.have import from_ranges, to_ranges
from peers.manifest import Manifest

log = logging.getLogger("binge.peers")

SAVE_DELAY = 0.5


class PieceStorage(abc.ABC):
    """The verified pieces of one video that a node holds."""

    manifest: Manifest | None = None

    @abc.abstractmethod
    def held(self) -> set[int]:
        """The indices of the pieces held (a copy)."""

    @abc.abstractmethod
    def holds(self, n: int) -> bool:
        """Whether piece ``n`` is held."""

    @abc.abstractmethod
    async def adopt(self, manifest: Manifest) -> None:
        """Holds pieces of ``manifest`` from now on; pieces of another version are dropped."""

    @abc.abstractmethod
    async def put(self, n: int, data: bytes) -> None:
        """Keeps piece ``n``, which the caller has verified, if this storage can."""

    @abc.abstractmethod
    async def raw(self, n: int) -> bytes | None:
        """Piece ``n`` as stored, without hashing it again; None when not held."""

    async def get(self, n: int) -> bytes | None:
        """Piece ``n`` if held and it still matches the manifest; a piece that does not is dropped."""
        data = await self.raw(n)
        if data is None or self.manifest is None:
            return None
        digest = await asyncio.get_running_loop().run_in_executor(None, _sha256, data)
        if digest == self.manifest.digests[n]:
            return data
        log.warning("piece %d of %s no longer matches its manifest; dropping it", n, self.manifest.video_id)
        self.drop(n)
        return None

    @abc.abstractmethod
    def drop(self, n: int) -> None:
        """Forgets piece ``n``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Saves what must be saved and releases files."""


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class SparseFilePieces(PieceStorage):
    """Pieces at their offsets in a sparse file, with a record of the verified ones (see module doc)."""

    def __init__(self, folder: str, video_id: str) -> None:
        self.folder = folder
        self.video_id = video_id
        self._held: set[int] = set()
        self._fd: int | None = None
        self._save_handle: asyncio.TimerHandle | None = None
        self.manifest = self._load()

    def _path(self, kind: str) -> str:
        return os.path.join(self.folder, f"{self.video_id}.{kind}")

    def _load(self) -> Manifest | None:
        """The manifest and held pieces left by an earlier run, if they agree with each other."""
        try:
            with open(self._path("manifest.json"), "rb") as f:
                manifest = Manifest.from_json(ujson.loads(f.read()))
            with open(self._path("have.json"), "rb") as f:
                record = ujson.loads(f.read())
            if not isinstance(record, dict) or record.get("root") != manifest.root:
                raise ValueError("the record of held pieces is for another manifest")
            held = from_ranges(record.get("pieces"), manifest.piece_count)
            self._fd = os.open(self._path("data"), os.O_RDWR)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("ignoring the stored pieces of %s: %s", self.video_id, e)
            return None
        self._held = held
        return manifest

    def held(self) -> set[int]:
        return set(self._held)

    def holds(self, n: int) -> bool:
        return n in self._held

    async def adopt(self, manifest: Manifest) -> None:
        if self.manifest is not None and self.manifest.root == manifest.root:
            if self.manifest != manifest:  # the same bytes under a new ETag: the pieces stay good
                _write_atomically(self._path("manifest.json"), manifest.to_json())
            self.manifest = manifest
            return
        # A few small file operations: cheaper here than a trip through a thread.
        self.close()
        os.makedirs(self.folder, exist_ok=True)
        # The old record goes first: a crash halfway must not leave it vouching for new bytes.
        for kind in ("have.json", "manifest.json", "data"):
            try:
                os.remove(self._path(kind))
            except FileNotFoundError:
                pass
        self._held = set()
        self._fd = os.open(self._path("data"), os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(self._fd, manifest.size)
        _write_atomically(self._path("manifest.json"), manifest.to_json())
        self.manifest = manifest
        self._save()

    async def put(self, n: int, data: bytes) -> None:
        if self._fd is None or n in self._held:
            return
        offset = self.manifest.piece_range(n)[0]
        await asyncio.get_running_loop().run_in_executor(None, os.pwrite, self._fd, data, offset)
        self._held.add(n)
        self._save_soon()

    async def raw(self, n: int) -> bytes | None:
        if n not in self._held:
            return None
        start, end = self.manifest.piece_range(n)
        return await asyncio.get_running_loop().run_in_executor(None, os.pread, self._fd, end - start, start)

    def drop(self, n: int) -> None:
        self._held.discard(n)
        self._save_soon()

    def _save_soon(self) -> None:
        if self._save_handle is None:
            self._save_handle = asyncio.get_running_loop().call_later(SAVE_DELAY, self._save)

    def _save(self) -> None:
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        if self.manifest is not None:
            _write_atomically(self._path("have.json"), {"root": self.manifest.root, "pieces": to_ranges(self._held)})

    def close(self) -> None:
        if self._fd is not None:
            self._save()
            os.close(self._fd)
            self._fd = None


def _write_atomically(path: str, obj: object) -> None:
    staged = f"{path}.part"
    with open(staged, "w", encoding="utf-8") as f:
        f.write(ujson.dumps(obj))
    os.replace(staged, path)
