"""Which videos' pieces a node lets go of when it holds too many: least recently read first, by bytes.

A node keeps the verified pieces of every video its clients play, so
without a bound a viewer's disk (or Pravega) would fill with everything
they ever watched. :class:`HeldPieces` is the policy alone, without I/O, so
it can be tested on its own: it knows how many bytes of pieces each video
has stored and when each was last read, and :meth:`HeldPieces.victims`
names the videos to evict, whole, least recently read first, until what
stays is within ``limit``. The node store (:mod:`peers.node_store`) feeds
it and does the evicting.

Whole videos go, never single pieces: a video missing pieces here and there
is worth little to its viewer, and a Pravega prefix cannot lose pieces in
its middle anyway.

Never evicted, whatever the total:

- a video with a read in progress;
- a video read less than ``idle`` seconds ago: players read in bursts, and a
  viewer who paused must still find their copy when they resume (the node
  store also pins the videos its clients watch on its presence websocket,
  which covers a longer pause);
- the ``pinned`` videos the caller names (the node store names those with
  pieces being fetched, among them the one whose growth is why the total
  went over, and those its clients watch).

So the limit is soft: while the videos in use alone hold more than it, the
node holds more, and :meth:`HeldPieces.next_check` says when one of them
may be evictable again.

Times are the caller's clock (monotonic seconds in the node store); a video
never read in this run has the time it was last read in an earlier one, or
``-inf`` when that is not known, so it goes first.
"""

from __future__ import annotations

import collections
import math
from typing import Collection


class HeldPieces:
    """The bytes of pieces each video has stored and when it was last read; picks the videos to evict."""

    def __init__(self, limit: int, idle: float) -> None:
        self.limit = limit
        self.idle = idle
        self._bytes: dict[str, int] = {}
        self._last_read: dict[str, float] = {}
        self._reading: collections.Counter[str] = collections.Counter()

    @property
    def total(self) -> int:
        return sum(self._bytes.values())

    def bytes_of(self, video_id: str) -> int:
        return self._bytes.get(video_id, 0)

    def videos(self) -> dict[str, int]:
        """Bytes held, by video (a copy)."""
        return dict(self._bytes)

    def stored(self, video_id: str, nbytes: int, last_read: float | None = None) -> None:
        """Records that ``video_id`` has ``nbytes`` of pieces stored.

        ``last_read`` is for what an earlier run left (its time is kept unless
        this run read the video since); a video first seen without one counts
        as never read.
        """
        self._bytes[video_id] = nbytes
        if last_read is not None:
            self._last_read[video_id] = max(last_read, self._last_read.get(video_id, -math.inf))
        else:
            self._last_read.setdefault(video_id, -math.inf)

    def read_began(self, video_id: str, now: float) -> None:
        self._reading[video_id] += 1
        self._last_read[video_id] = now
        self._bytes.setdefault(video_id, 0)

    def read_ended(self, video_id: str, now: float) -> None:
        self._reading[video_id] -= 1
        if self._reading[video_id] <= 0:
            del self._reading[video_id]
        self._last_read[video_id] = now

    def reading(self, video_id: str) -> bool:
        return self._reading[video_id] > 0

    def forget(self, video_id: str) -> None:
        """The video's pieces are gone (evicted); reads in progress, if any, are still counted."""
        self._bytes.pop(video_id, None)
        if not self.reading(video_id):
            self._last_read.pop(video_id, None)

    def evictable(self, video_id: str, now: float, pinned: Collection[str] = ()) -> bool:
        return (
            video_id not in pinned
            and not self.reading(video_id)
            and now - self._last_read.get(video_id, -math.inf) >= self.idle
        )

    def victims(self, now: float, pinned: Collection[str] = ()) -> list[str]:
        """The videos to evict so that the total is within the limit, least recently read first.

        Only videos holding bytes and :meth:`evictable`; when those are not
        enough to get within the limit they all go, and the rest stays over it.
        """
        total = self.total
        if total <= self.limit:
            return []
        chosen = []
        for video_id in sorted(self._bytes, key=lambda v: (self._last_read.get(v, -math.inf), v)):
            if total <= self.limit:
                break
            if self._bytes[video_id] > 0 and self.evictable(video_id, now, pinned):
                chosen.append(video_id)
                total -= self._bytes[video_id]
        return chosen

    def next_check(self, now: float, pinned: Collection[str] = ()) -> float | None:
        """When a video kept only for having been read lately stops being so, if the total is over the limit.

        None when within the limit, or when only reads in progress and pins
        hold the rest (the end of a read is a reason to look again anyway).
        """
        if self.total <= self.limit:
            return None
        times = [
            self._last_read[v] + self.idle for v, n in self._bytes.items()
            if n > 0 and v not in pinned and not self.reading(v) and self._last_read.get(v, -math.inf) + self.idle > now
        ]
        return min(times, default=None)
