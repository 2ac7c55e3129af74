"""Converted caption tracks, kept until their source changes.

A track is named by a key of the caller's choosing (``"<video id>/<lang>"``
for the HTTP handler) and its source by a version string that changes when
the source file does. The converted WebVTT is kept in a bounded in-memory LRU
and on disk, so a restart does not reconvert:

    <cache_dir>/captions/<sha256(key)>/<sha256(format, version, revision)>.vtt

Names are hashes, so any key is safe, and a new version's file replaces the
old ones of its track. Conversion and file access run on the event loop's
default executor; concurrent requests for one track and version share one
conversion. A file with no usable cue is remembered (in memory only), so
asking again raises :class:`CaptionError` without reconverting.

The worker processes of one server (:mod:`ops.workers`) share the folder
safely: every file is written under a staged name of its writer's own (pid
and a random part) and renamed into place (:mod:`atomic_write`), so a
reader sees a whole file or none; two workers converting one track at once
write the same bytes under the same name, and a version another worker
pruned is converted again when asked. The memory LRU and the sharing of a
conversion are per worker: a track may be converted once in each worker
that asks for it before the first file is written, which costs milliseconds,
where a manifest's hashing costs seconds and is done once
(:mod:`peers.manifest_cache`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
from typing import TYPE_CHECKING, Callable, Protocol

import atomic_write
from captions.convert import CaptionError, to_vtt
from media.single_flight import SingleFlight

if TYPE_CHECKING:
    from media.store import CaptionTrack, VideoRecord

log = logging.getLogger("binge.captions")

# Bumped when the converter's output changes, so files cached by an older
# converter are not served.
CONVERTER_REVISION = "2"


class CaptionSource(Protocol):
    async def caption_source(self, video: VideoRecord, lang: str) -> tuple[bytes, str]:
        """The stored caption file for ``lang`` and a version string that changes with it."""


class CaptionCache:
    """WebVTT for caption tracks, converted once per source version.

    :param cache_dir: the server's cache folder; files go in its ``captions`` folder
    :param max_entries: how many tracks the in-memory LRU holds
    :param convert: ``(data, format, language tag) -> WebVTT text``, raising :class:`CaptionError`
    """

    def __init__(
        self,
        cache_dir: str,
        max_entries: int = 256,
        convert: Callable[[bytes, str, str | None], str] = to_vtt,
    ) -> None:
        self._dir = os.path.join(cache_dir, "captions")
        self._max_entries = max_entries
        self._convert = convert
        # key -> (entry path, WebVTT text or the error the source gave)
        self._memory: collections.OrderedDict[str, tuple[str, str | CaptionError]] = collections.OrderedDict()
        self._converting: SingleFlight[str] = SingleFlight()

    async def vtt(self, store: CaptionSource, video: VideoRecord, track: CaptionTrack) -> str:
        """The WebVTT text of ``video``'s ``track``, read from ``store``.

        :raises CaptionError: if the source has no usable cue
        :raises media.store.StoreError: as ``store.caption_source`` does
        """
        data, version = await store.caption_source(video, track.lang)
        return await self.get(f"{video.id}/{track.lang}", version, data, track.format, track.lang)

    async def get(self, key: str, version: str, data: bytes, fmt: str, lang: str | None = None) -> str:
        """The WebVTT text for the track ``key`` whose source at ``version`` is ``data`` in format ``fmt``.

        ``lang``, the track's language tag, helps read legacy code pages.

        ``data`` is converted only when neither memory nor disk holds this
        key's ``version``.

        :raises CaptionError: if ``data`` has no usable cue
        """
        path = self._path(key, version, fmt, lang)
        remembered = self._memory.get(key)
        if remembered is not None and remembered[0] == path:
            self._memory.move_to_end(key)
            return _result(remembered[1])
        return await self._converting.run(path, lambda: self._load(key, path, data, fmt, lang))

    def _path(self, key: str, version: str, fmt: str, lang: str | None) -> str:
        track = _digest(key)
        entry = _digest(f"{fmt.lower()}\0{lang}\0{version}\0{CONVERTER_REVISION}")
        return os.path.join(self._dir, track, f"{entry}.vtt")

    async def _load(self, key: str, path: str, data: bytes, fmt: str, lang: str | None) -> str:
        loop = asyncio.get_running_loop()
        try:
            vtt = await loop.run_in_executor(None, self._read_or_convert, path, data, fmt, lang)
        except CaptionError as error:
            self._remember(key, path, error)
            raise
        self._remember(key, path, vtt)
        return vtt

    def _remember(self, key: str, path: str, result: str | CaptionError) -> None:
        self._memory[key] = (path, result)
        self._memory.move_to_end(key)
        while len(self._memory) > self._max_entries:
            self._memory.popitem(last=False)

    def _read_or_convert(self, path: str, data: bytes, fmt: str, lang: str | None) -> str:
        """Runs in the executor: the file on disk, else a fresh conversion written there."""
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as error:
            log.warning("unreadable cached captions %s, converting again: %s", path, error)
        vtt = self._convert(data, fmt, lang)
        _write_replacing_versions(path, vtt)
        return vtt


def _write_replacing_versions(path: str, vtt: str) -> None:
    """Writes ``path`` atomically and removes the track's other versions.

    The disk copy only saves work, so a failure is logged, not raised.
    """
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        atomic_write.write(path, vtt)
        for name in os.listdir(folder):
            # Staged files are another writer's, still in progress.
            if name.endswith(".vtt") and name != os.path.basename(path):
                with contextlib.suppress(FileNotFoundError):  # another writer's prune
                    os.unlink(os.path.join(folder, name))
    except OSError as error:
        log.warning("could not cache converted captions in %s: %s", folder, error)


def _result(value: str | CaptionError) -> str:
    if isinstance(value, CaptionError):
        # A new instance: raising the same one again would pile up tracebacks.
        raise CaptionError(str(value))
    return value


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
