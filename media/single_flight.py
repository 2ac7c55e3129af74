"""Sharing one piece of async work among everyone who asks for it at once."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, Hashable, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """At most one task per key: callers asking for a key already in flight share its result.

    Each caller waits through ``asyncio.shield``, so one that gives up (its
    client went away) does not cancel the work the others are waiting for.
    A key is forgotten once its task is done; the next call starts afresh.
    """

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Future[T]] = {}

    async def run(self, key: Hashable, start: Callable[[], Awaitable[T]]) -> T:
        return await asyncio.shield(self.task(key, start))

    def task(self, key: Hashable, start: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """The task in flight for ``key``, started now if there is none; for callers that need not wait."""
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = asyncio.ensure_future(start())
            task.add_done_callback(lambda _: self._tasks.pop(key, None))
        return task

    def in_flight(self) -> list[asyncio.Future[T]]:
        return [task for task in self._tasks.values() if not task.done()]
