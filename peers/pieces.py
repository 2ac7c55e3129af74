"""A node's own copy of a video: the verified pieces it holds.

:class:`PieceStore` is what a node's store needs from its backend: one
:class:`PieceStorage` per video, and what earlier runs left. A storage
holds pieces of one version of one video, named by a manifest; adopting
another manifest (the video changed upstream) drops what it held.

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

A node holds at most ``peer.max_held_bytes`` of pieces (see
:mod:`peers.eviction`): :meth:`PieceStorage.held_bytes` is what a storage
counts toward it and :meth:`PieceStorage.discard` removes a video's pieces
for good. What an earlier run left in ``.pieces/`` is found by
:func:`stored_on_disk` (:class:`PieceFolder`), and ``ID.have.json``'s modification time says when
the video was last read (:meth:`SparseFilePieces.touch`), so the least
recently read go first after a restart too.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import logging
import os
import pathlib
import time
from typing import Callable, Collection, Iterator

import ujson

import atomic_write
from peers.have import from_ranges, to_ranges
from peers.manifest import Manifest

log = logging.getLogger("binge.peers")

SAVE_DELAY = 0.5
# Seconds between two updates of a have record's modification time for reads (see SparseFilePieces.touch).
TOUCH_EVERY = 30.0
KINDS = ("have.json", "manifest.json", "data")
# A record being rewritten is staged as its name plus this, which is how
# stored_on_disk and remove_stored know a leftover of a crash for the video's.
STAGED = ".part"


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

    @abc.abstractmethod
    def discard(self) -> None:
        """Removes every piece from storage for good, and forgets them: the video was evicted.

        The storage holds nothing afterwards and keeps nothing it is given.
        """

    @abc.abstractmethod
    def held_bytes(self) -> int:
        """Bytes of the pieces held: what this video counts toward ``peer.max_held_bytes``."""

    def touch(self) -> None:
        """A client of the node just read the video; a storage that can keep that over a restart does."""


def pieces_bytes(manifest: Manifest, held: Collection[int]) -> int:
    """Bytes of the pieces ``held`` of ``manifest``: each a whole piece, but the last, which is shorter."""
    if not held:
        return 0
    last = manifest.piece_count - 1
    return (len(held) - 1) * manifest.piece_size + (manifest.size - last * manifest.piece_size if last in held
                                                    else manifest.piece_size)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class PieceStore(abc.ABC):
    """Where a node keeps the pieces of every video: one :class:`PieceStorage` each."""

    #: Whether the node counts what earlier runs left before it serves; where counting
    #: waits on a service that may be slow or away, serving starts without it.
    count_before_serving = True

    def start(self) -> None:
        """Starts what the storages share (worker processes, say)."""

    def close(self) -> None:
        """Stops what :meth:`start` started."""

    @abc.abstractmethod
    def storage(self, video_id: str, on_stored: Callable[[], None]) -> PieceStorage:
        """The storage of the video's pieces; ``on_stored`` is told when a piece lands later than its put()."""

    @abc.abstractmethod
    async def left_by_earlier_runs(self) -> dict[str, tuple[int, float | None]]:
        """Video id -> (bytes of pieces held, when last read as a ``time.time()``, or None when not known)."""


class PieceFolder(PieceStore):
    """Pieces in sparse files in ``folder``, for the filesystem backend."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def storage(self, video_id: str, on_stored: Callable[[], None]) -> PieceStorage:
        return SparseFilePieces(self.folder, video_id)  # a put() has landed when it returns

    async def left_by_earlier_runs(self) -> dict[str, tuple[int, float | None]]:
        return await asyncio.get_running_loop().run_in_executor(None, stored_on_disk, self.folder)


class SparseFilePieces(PieceStorage):
    """Pieces at their offsets in a sparse file, with a record of the verified ones (see module doc)."""

    def __init__(self, folder: str, video_id: str) -> None:
        self.folder = folder
        self.video_id = video_id
        self._held: set[int] = set()
        self._fd: int | None = None
        # Reads and writes running in threads, by file descriptor: a descriptor is closed only once its
        # are over, or a number reused meanwhile for another file would take their bytes.
        self._in_flight: dict[int, int] = {}
        self._closing: set[int] = set()
        self._save_handle: asyncio.TimerHandle | None = None
        self._touched = -TOUCH_EVERY
        self.manifest = self._load()

    def _path(self, kind: str) -> str:
        return os.path.join(self.folder, f"{self.video_id}.{kind}")

    def _load(self) -> Manifest | None:
        """The manifest and held pieces left by an earlier run, if they agree with each other."""
        try:
            manifest, held = _read_record(self.folder, self.video_id)
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
                _write_record(self._path("manifest.json"), manifest.to_json())
            self.manifest = manifest
            return
        # A few small file operations: cheaper here than a trip through a thread.
        self.close()
        os.makedirs(self.folder, exist_ok=True)
        remove_stored(self.folder, self.video_id)
        self._held = set()
        self._fd = os.open(self._path("data"), os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(self._fd, manifest.size)
        _write_record(self._path("manifest.json"), manifest.to_json())
        self.manifest = manifest
        self._save()

    async def put(self, n: int, data: bytes) -> None:
        if self._fd is None or n in self._held:
            return
        fd = self._fd
        offset = self.manifest.piece_range(n)[0]
        await self._io(os.pwrite, data, offset)
        if self._fd != fd:
            return  # closed, evicted or replaced by another version meanwhile: the piece is not theirs
        self._held.add(n)
        self._save_soon()

    async def raw(self, n: int) -> bytes | None:
        if n not in self._held:
            return None
        start, end = self.manifest.piece_range(n)
        return await self._io(os.pread, end - start, start)

    async def _io(self, call, *args):
        """``call(fd, *args)`` in a thread; the descriptor stays open until it returns, even if the caller goes."""
        fd = self._fd
        self._in_flight[fd] = self._in_flight.get(fd, 0) + 1
        future = asyncio.get_running_loop().run_in_executor(None, call, fd, *args)
        future.add_done_callback(lambda _: self._io_done(fd))
        return await asyncio.shield(future)

    def _io_done(self, fd: int) -> None:
        self._in_flight[fd] -= 1
        if not self._in_flight[fd]:
            del self._in_flight[fd]
            if fd in self._closing:
                self._closing.discard(fd)
                os.close(fd)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if fd in self._in_flight:
            self._closing.add(fd)
        else:
            os.close(fd)

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
            _write_record(self._path("have.json"), {"root": self.manifest.root, "pieces": to_ranges(self._held)})

    def close(self) -> None:
        if self._fd is not None:
            if self._save_handle is not None:
                # Only a record with changes is written: its modification time says when the video was last used.
                self._save()
            self._close_fd()

    def held_bytes(self) -> int:
        return 0 if self.manifest is None else pieces_bytes(self.manifest, self._held)

    def discard(self) -> None:
        # A few unlinks, as adopt does: done here and now, so no file of a new copy can come in between.
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        self._close_fd()
        self._held = set()
        self.manifest = None
        remove_stored(self.folder, self.video_id)

    def touch(self) -> None:
        """Sets the have record's modification time to now, at most every ``TOUCH_EVERY`` seconds.

        :func:`stored_on_disk` takes it as the time of the last read, so a
        video watched again from its held pieces, which rewrites no record,
        is not taken for one nobody watched since it was fetched.
        """
        now = time.monotonic()
        if self._fd is None or now - self._touched < TOUCH_EVERY:
            return
        self._touched = now
        try:
            os.utime(self._path("have.json"))
        except OSError as e:
            log.debug("cannot touch the have record of %s: %s", self.video_id, e)


def _read_record(folder: str, video_id: str) -> tuple[Manifest, set[int]]:
    """The manifest and the held pieces recorded for ``video_id`` in ``folder``; OSError or ValueError if unusable."""
    with open(os.path.join(folder, f"{video_id}.manifest.json"), "rb") as f:
        manifest = Manifest.from_json(ujson.loads(f.read()))
    with open(os.path.join(folder, f"{video_id}.have.json"), "rb") as f:
        record = ujson.loads(f.read())
    if not isinstance(record, dict) or record.get("root") != manifest.root:
        raise ValueError("the record of held pieces is for another manifest")
    return manifest, from_ranges(record.get("pieces"), manifest.piece_count)


def _file_names(video_id: str) -> Iterator[str]:
    """The names the files of ``video_id`` may have, staged ones included; the record's first."""
    for kind in KINDS:
        yield f"{video_id}.{kind}"
        yield f"{video_id}.{kind}{STAGED}"


def remove_stored(folder: str, video_id: str) -> None:
    """Removes every file of ``video_id`` from ``folder``; the record first, so a crash never leaves it vouching for bytes gone."""
    for name in _file_names(video_id):
        pathlib.Path(folder, name).unlink(missing_ok=True)


def stored_on_disk(folder: str) -> dict[str, tuple[int, float | None]]:
    """What earlier runs left in ``folder``: video id -> (bytes held, when last read as a ``time.time()``).

    A video whose record does not load (a crash mid-adopt, a damaged file)
    holds nothing usable; it is listed with the disk space its files take
    and no time, so it is the first to go.
    """
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return {}
    ids = set()
    for name in names:
        for kind in KINDS:
            for suffix in (f".{kind}", f".{kind}{STAGED}"):
                if name.endswith(suffix) and len(name) > len(suffix):
                    ids.add(name[: -len(suffix)])
    found: dict[str, tuple[int, float | None]] = {}
    for video_id in ids:
        try:
            manifest, held = _read_record(folder, video_id)
            os.stat(os.path.join(folder, f"{video_id}.data"))
        except (OSError, ValueError):
            found[video_id] = (_disk_usage(folder, video_id), None)
            continue
        found[video_id] = (pieces_bytes(manifest, held), os.stat(os.path.join(folder, f"{video_id}.have.json")).st_mtime)
    return found


def _disk_usage(folder: str, video_id: str) -> int:
    total = 0
    for name in _file_names(video_id):
        try:
            total += os.stat(os.path.join(folder, name)).st_blocks * 512
        except OSError:
            pass
    return total


def _write_record(path: str, obj: object) -> None:
    atomic_write.write(path, ujson.dumps(obj), staged_path=path + STAGED)
