"""Follows the catalog through the catalog worker process (see :mod:`media.pravega_worker`).

The worker replays the catalog from its head, then sends each record as it
is written; this side keeps the resulting catalog, tells the store when it
changed, and judges from the worker's messages whether Pravega answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import ujson

from media import pravega_protocol as proto
from media.pravega_catalog import StoredVideo, decode_record
from media.pravega_pool import Worker
from media.store import Unavailable
from settings import PravegaSettings

log = logging.getLogger("binge.store")


class CatalogFollower:
    """Runs the catalog worker and keeps :attr:`videos` as its messages say.

    A replay (after a start or a failure) is gathered aside and replaces the
    catalog only once it reaches the tail, so videos do not blink out while
    it runs. ``on_change`` is called after each batch that changed something.
    """

    def __init__(self, settings: PravegaSettings, on_change: Callable[[dict[str, StoredVideo]], None]) -> None:
        self.settings = settings
        self.on_change = on_change
        # Often enough that a new video shows within a second, rarely enough to cost nothing.
        self.poll = min(0.5, settings.timeout / 4)
        self.videos: dict[str, StoredVideo] = {}
        self.position = 0
        self.caught_up = asyncio.Event()
        self.failure: str | None = None
        self._staging: dict[str, StoredVideo] | None = None
        self._changed = False
        self._last_success: float | None = None
        self._last_message = time.monotonic()
        self._spawned_at = float("-inf")
        self._worker: Worker | None = None
        self._watchdog: asyncio.Task | None = None

    def start(self) -> None:
        self._spawn()
        self._watchdog = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._watchdog:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        if self._worker:
            self._worker.kill("the store closed")

    def healthy(self) -> bool:
        return self.failure is None and self.seconds_since_contact() <= self.settings.timeout

    def seconds_since_contact(self) -> float:
        return float("inf") if self._last_success is None else time.monotonic() - self._last_success

    def _spawn(self) -> None:
        self._spawned_at = time.monotonic()
        self._last_message = self._spawned_at
        try:
            self._worker = Worker("catalog", self.settings, self._on_frame, self._on_exit, poll=self.poll)
        except Unavailable as e:
            self.failure = str(e)
            log.error("%s", e)

    async def _watch(self) -> None:
        """Restarts a catalog worker that died or has been silent for a while.

        A silent worker is stuck in a client call, which can block for minutes
        when Pravega is unreachable; a fresh one retries at once. Restarts are
        at least ``timeout`` apart so a worker that cannot start does not spin.
        """
        while True:
            await asyncio.sleep(self.poll)
            now = time.monotonic()
            if now - self._spawned_at < self.settings.timeout:
                continue
            if self._worker is None or self._worker.dead:
                self._spawn()
            elif now - self._last_message > 3 * self.settings.timeout:
                self._worker.kill(f"silent for {now - self._last_message:.0f}s")
                self._spawn()

    def _on_exit(self, reason: str) -> None:
        self.failure = f"the catalog worker stopped: {reason}"

    def _on_frame(self, kind: int, tag: int, payload: memoryview) -> None:
        now = time.monotonic()
        self._last_message = now
        if kind == proto.CATALOG_FAILING:
            self.failure = ujson.loads(bytes(payload)).get("message", "Pravega failed")
            return
        self._last_success = now
        self.failure = None
        if kind == proto.CATALOG_RESET:
            self._staging = {}
        elif kind == proto.CATALOG_RECORD:
            self.position = tag
            stored = decode_record(bytes(payload))
            if stored is None:
                return
            if self._staging is not None:
                self._staging[stored.record.id] = stored
            else:
                self.videos = {**self.videos, stored.record.id: stored}
                self._changed = True
        elif kind == proto.CATALOG_CAUGHT_UP:
            self.position = tag
            if self._staging is not None:
                self._changed = self._changed or self._staging != self.videos
                self.videos, self._staging = self._staging, None
            self.caught_up.set()
            if self._changed:
                self._changed = False
                self.on_change(self.videos)
        else:
            self._worker.kill(f"unexpected message kind {kind}")
