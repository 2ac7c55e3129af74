"""What every storage backend offers the server.

A store owns the catalog (one :class:`VideoRecord` per video) and the bytes
behind it. Handlers and the peer layer only talk to this interface, so the
filesystem store, the Pravega store and a peer node's store are
interchangeable, and the same HTTP tests run against all of them. What a
peer node adds (its upstream's manifests and peers, the pieces it holds and
where its bytes came from) is part of the interface too, with an origin's
answers as defaults, so that no caller asks which store it has.
:mod:`backends` picks the store that config.yaml names.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator, BinaryIO, Callable

if TYPE_CHECKING:
    from peers.manifest import Manifest
    from peers.pieces import PieceStorage
    from ops.metrics import Metrics
    from presence.signalling import Signalling
    from presence.state import Presence

VIDEO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")

# Container extension -> MIME type a <video> element understands.
VIDEO_TYPES = {
    "mp4": "video/mp4",
    "m4v": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
}


CAPTION_FORMATS = ("srt", "vtt")
# A BCP 47-ish language tag, as caption file names carry it: en, pt-BR, zh-Hant.
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*\Z")


class StoreError(Exception):
    """A request the store cannot serve; ``status`` is the HTTP status to answer with."""

    status = 500


class NotFound(StoreError):
    status = 404


class Unavailable(StoreError):
    """The backing storage cannot be reached right now (Pravega down, disk gone)."""

    status = 503


class InvalidInput(StoreError):
    status = 400


class NotAPeerNode(NotFound):
    """Asked an origin for what only a peer node has: pieces held, and where its bytes came from."""

    def __init__(self) -> None:
        super().__init__("this server is an origin, not a peer node: read videos from /videos/{id}/stream")


def check_video_id(video_id: str) -> str:
    if not VIDEO_ID.match(video_id) or len(video_id) > 200:
        raise InvalidInput(f"invalid video id {video_id!r}: use letters, digits, '.', '_' and '-'")
    return video_id


def check_captions(captions: dict[str, tuple[bytes, str]]) -> None:
    """``InvalidInput`` unless every caption file (``lang -> (bytes, format)``) has a language tag and a format we read."""
    for lang, (_, fmt) in captions.items():
        if not LANGUAGE_TAG.match(lang) or fmt not in CAPTION_FORMATS:
            raise InvalidInput(f"captions {lang!r} ({fmt!r}): need a language tag and srt or vtt")


def poster_url(metadata: dict) -> str | None:
    """The poster URL a video's metadata gives: absolute, or a path on this server; else None.

    A relative name (``alpha.jpg``) is not one: the store's own poster, if
    it holds one, is served at ``/videos/{id}/poster`` whatever the metadata
    calls it.
    """
    url = metadata.get("poster")
    return url if isinstance(url, str) and url.startswith(("http://", "https://", "/")) else None


@dataclass(frozen=True)
class CaptionTrack:
    lang: str
    label: str
    # "srt" or "vtt": what the stored source is, so it is converted only when needed.
    format: str


@dataclass(frozen=True)
class VideoRecord:
    """One video as the store knows it. Immutable: a change makes a new record."""

    id: str
    name: str
    size: int
    mime_type: str
    # Strong validator, quoted as it goes in the ETag header; changes with the bytes.
    etag: str
    last_modified: float
    duration_seconds: float | None = None
    captions: tuple[CaptionTrack, ...] = ()
    # A URL given by the video's metadata, or None.
    poster_url: str | None = None
    # True where the store holds a poster image of its own (served at /videos/{id}/poster).
    has_poster: bool = False
    metadata: dict = field(default_factory=dict, compare=False, hash=False)
    # Where the store that made the record keeps its bytes (a file name, a stream name): only that store
    # reads it. Each record carries its own, so a read of a version just replaced gets the bytes it promised.
    locator: str = field(default="", repr=False)

    def caption(self, lang: str) -> CaptionTrack | None:
        return next((t for t in self.captions if t.lang == lang), None)

    def default_caption(self) -> CaptionTrack | None:
        """The track a player shows first: English if there is one, else the first."""
        return self.caption("en") or next(iter(self.captions), None)


@dataclass(frozen=True)
class NewVideo:
    """A video on its way into a store, as the ingest command has probed it."""

    id: str
    source_path: str
    name: str
    mime_type: str
    duration_seconds: float | None
    # lang -> (caption file bytes, "srt" or "vtt")
    captions: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    poster: bytes | None = None  # JPEG
    metadata: dict = field(default_factory=dict)


class Store(abc.ABC):
    """A catalog of videos and their bytes."""

    name: str

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    async def start(self) -> None:
        """Loads the catalog and starts following changes to it."""

    async def close(self) -> None:
        """Releases files, processes and connections."""

    @abc.abstractmethod
    def videos(self) -> dict[str, VideoRecord]:
        """The catalog as it stands now, by id."""

    async def servable(self) -> dict[str, VideoRecord]:
        """The catalog ``GET /videos`` answers with; a store that may have none to give raises a StoreError."""
        return self.videos()

    def get(self, video_id: str) -> VideoRecord:
        record = self.videos().get(video_id)
        if record is None:
            raise NotFound(f"no video with id {video_id!r}")
        return record

    @abc.abstractmethod
    def read(self, video: VideoRecord, start: int, end: int, chunk_size: int) -> AsyncIterator[memoryview]:
        """Yields the bytes ``start`` to ``end`` (exclusive) in chunks of at most ``chunk_size``.

        A yielded chunk is only valid until the consumer asks for the next one:
        stores reuse one buffer per read, which keeps memory flat. Callers wrap
        the iterator in ``contextlib.aclosing`` so an abandoned read releases
        its file or reader at once.
        """

    def open_file(self, video: VideoRecord) -> BinaryIO | None:
        """An open file holding the video's bytes at their own offsets, or None.

        Where a store has one, the stream handler sends from it with
        sendfile(2), so the bytes never pass through Python. Stores whose bytes
        live elsewhere (Pravega, peers) return None and are read with
        :meth:`read`.
        """
        return None

    @abc.abstractmethod
    async def caption_source(self, video: VideoRecord, lang: str) -> tuple[bytes, str]:
        """The stored caption file for ``lang`` and a version string that changes with it."""

    @abc.abstractmethod
    async def poster(self, video: VideoRecord) -> bytes:
        """The poster image (JPEG) the store holds for ``video``."""

    @abc.abstractmethod
    async def health(self) -> dict:
        """``{"ok": bool, ...}`` with whatever tells an operator the store's state."""

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Calls ``callback()`` whenever the catalog changes."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.remove(callback)

    def _catalog_changed(self) -> None:
        for callback in list(self._listeners):
            callback()

    # --- What a peer node adds (see peers.node_store) --------------------------
    # An origin holds whole videos, hashes its own manifests (peers.manifest_cache)
    # and asks no upstream: the defaults answer as it does.

    #: This server's id in Binge-Via (see peers.hops); an origin asks no upstream, so has none.
    node_id: str | None = None

    def join(self, presence: Presence, signalling: Signalling, metrics: Metrics) -> None:
        """Meets the server it serves, once built: who its clients watch, their signals, and the metrics to count into."""

    def upstream_manifests(self) -> UpstreamManifests | None:
        """Where the manifests of this store's videos come from when not hashed from its bytes: a node's upstream."""
        return None

    async def upstream_peers(self, video_id: str) -> list[dict]:
        """``[{"url", "address"}]``: the video's peers known beyond this server (a node's upstream's)."""
        return []

    def pieces(self, video_id: str) -> PieceStorage:
        """The pieces of the video held here (of whichever version was last fetched)."""
        raise NotAPeerNode()

    async def piece_for_peer(self, video_id: str, n: int, root: str | None) -> bytes | None:
        """Piece ``n``, as stored, for another node, if held of the manifest ``root`` names; else None."""
        raise NotAPeerNode()

    def source_counts(self, video_id: str) -> dict[str, int]:
        """Bytes of the video served to this server's readers, by where they came from."""
        raise NotAPeerNode()

    def peer_routes(self, video_id: str) -> dict[str, str]:
        """How each peer of the video was last reached: ``{url: "http" | "direct-channel" | "relayed-channel"}`` (see peers.swarm)."""
        raise NotAPeerNode()


class UpstreamManifests(abc.ABC):
    """Manifests a store has from elsewhere (see :meth:`Store.upstream_manifests`)."""

    @abc.abstractmethod
    async def get(self, video: VideoRecord) -> Manifest:
        """The manifest peers verify ``video``'s pieces by."""

    async def close(self) -> None:
        """Stops what it started."""
