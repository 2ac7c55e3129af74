"""The upstream's catalog, as the records a node's store serves.

``GET /videos`` on the upstream gives the video objects; their validators
(``ETag``, ``Last-Modified``), which the video objects do not carry, come
from a ``HEAD`` of each video's stream, made again only when the video's
object changes or the node saw the bytes change under it
(:meth:`UpstreamCatalog.invalidate`). The catalog is read again every
``interval`` seconds, and at once when asked (:meth:`refresh_soon`);
listeners hear only of real changes. When the upstream cannot be reached
the last catalog stays, and :attr:`last_error` says why.

What ``GET /videos`` answers comes from :meth:`UpstreamCatalog.servable`.
While the last read found a loop of upstreams (:mod:`peers.hops`), that is
a 508 naming the loop, for everyone. A node below this one asking (its
request carries ``Binge-Via``) before this node ever read the catalog gets
it read on its behalf, at once and with its chain, or else the error (503,
or 508): an empty catalog never read is not the upstream's, and passing it
off as one would hide a loop, whose nodes never read any catalog. The
catalog is still read every ``interval`` seconds meanwhile (the loop is
logged once), so a node whose upstream is set right again recovers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Callable

import ujson

from media.catalog import LIVE_FIELDS, record_from_json
from media.single_flight import SingleFlight
from media.store import InvalidInput, NotFound, StoreError, Unavailable, VideoRecord
from peers import hops
from peers.upstream import Upstream

log = logging.getLogger("binge.peers")


class UpstreamCatalog:
    def __init__(self, upstream: Upstream, interval: float, on_change: Callable[[], None]) -> None:
        self.upstream = upstream
        self.interval = interval
        self.on_change = on_change
        self.videos: dict[str, VideoRecord] = {}
        self.last_error: str | None = "the catalog has not been read yet"
        # Whether a read ever succeeded, and the loop of upstreams the last read found, if any.
        self.read_once = False
        self.loop: str | None = None
        # id -> (the video object less its live fields, etag, last modified)
        self._validators: dict[str, tuple[str, str, float]] = {}
        # The refreshes running, by the chain of the request each was made for.
        self._refreshing: SingleFlight[None] = SingleFlight()
        # What was wrong with the videos left out last time, so each is logged once.
        self._problems: set[str] = set()

    async def follow(self) -> None:
        """Refreshes every ``interval`` seconds, for ever."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                # Through refresh_soon: one started meanwhile with no chain is joined, not run beside.
                await asyncio.shield(self.refresh_soon())
            except Exception:
                log.exception("reading the upstream's catalog failed")

    def refresh_soon(self) -> asyncio.Future[None]:
        """Starts a refresh unless one for the same chain is running here; returns it.

        The refresh carries the chain of the request that started it (see
        :mod:`peers.hops`), so a request joins only a refresh made with its own
        chain. Joining one made for another would hide a loop of upstreams: two
        nodes, each waiting on a refresh the other's request joined, would wait
        on each other until both timed out, and again at every interval, in step.
        """
        return self._refreshing.task(hops.incoming(), self.refresh)

    async def servable(self) -> dict[str, VideoRecord]:
        """The catalog ``GET /videos`` answers with, by id.

        Raises :class:`~peers.hops.LoopDetected` (508) while the last read
        found a loop of upstreams. For a node below asking (a request with a
        ``Binge-Via`` chain) while no read ever succeeded, reads now, on its
        behalf, and raises the error (503, or 508) if that fails too.
        """
        if not self.read_once and hops.incoming():
            await asyncio.shield(self.refresh_soon())
            if not self.read_once and self.loop is None:
                raise Unavailable(f"this node cannot read its upstream's catalog: {self.last_error}")
        if self.loop is not None:
            raise hops.LoopDetected(self.loop)
        return self.videos

    def invalidate(self, video_id: str) -> None:
        """The video's bytes changed upstream: its validators are read again, now."""
        self._validators.pop(video_id, None)
        self.refresh_soon()

    async def refresh(self) -> None:
        try:
            objects = await self.upstream.catalog()
            fresh = await asyncio.gather(*(self._record(obj) for obj in objects), return_exceptions=True)
            for record in fresh:
                # Malformed, or removed between the list and its HEAD: left out. Anything else fails the refresh.
                if isinstance(record, BaseException) and not isinstance(record, (InvalidInput, NotFound)):
                    raise record
        except StoreError as e:
            if isinstance(e, hops.LoopDetected):
                # Once, not each time the ring is found from another of its nodes (another message).
                if self.loop is None:
                    log.error("cannot read the upstream's catalog: %s", e)
                self.loop = str(e)
            else:
                if self.last_error != str(e):
                    log.warning("cannot read the upstream's catalog: %s", e)
                self.loop = None
            self.last_error = str(e)
            return
        self.last_error = None
        self.loop = None
        self.read_once = True
        problems = {str(r) for r in fresh if isinstance(r, StoreError)}
        for problem in problems - self._problems:
            log.warning("leaving a video of the upstream's catalog out: %s", problem)
        self._problems = problems
        videos = {r.id: r for r in fresh if isinstance(r, VideoRecord)}
        self._validators = {k: v for k, v in self._validators.items() if k in videos}
        if videos != self.videos:
            self.videos = videos
            self.on_change()

    async def _record(self, obj: dict) -> VideoRecord:
        record = record_from_json(obj, self.upstream.url)
        key = ujson.dumps({k: v for k, v in obj.items() if k not in LIVE_FIELDS}, sort_keys=True)
        known = self._validators.get(record.id)
        if known is None or known[0] != key:
            known = (key, *await self.upstream.validators(record.id))
            self._validators[record.id] = known
        return dataclasses.replace(record, etag=known[1], last_modified=known[2])
