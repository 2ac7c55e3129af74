"""Follows an event stream through a follow worker process (see :mod:`pravega_workers.worker`).

The worker replays the stream from its head, then sends each event as it is
written, and appends what it is given. :class:`StreamFollower` keeps such a
worker running and judges from its messages whether Pravega answers; what
the events mean is its subclasses' business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import ujson

from pravega_workers import protocol as proto
from pravega_workers.errors import PravegaError
from pravega_workers.pool import START_TIMEOUT, Worker
from settings import PravegaSettings

log = logging.getLogger("binge.pravega")


class StreamFollower:
    """Runs a follow worker on the event stream ``stream`` and restarts it when it dies or hangs.

    Subclasses get the worker's messages as :meth:`on_reset` (a replay from
    the head follows), :meth:`on_record` and :meth:`on_caught_up`; they are
    called on the event loop. ``keep`` has the worker truncate the stream
    (see :class:`pravega_workers.worker.Truncator`).
    """

    def __init__(self, settings: PravegaSettings, stream: str, poll: float, keep: float | None = None) -> None:
        self.settings = settings
        self.stream = stream
        self.poll = poll
        self.keep = keep
        self.position = 0
        self.failure: str | None = None
        self._last_success: float | None = None
        self._last_message = time.monotonic()
        self._spawned_at = float("-inf")
        self._worker: Worker | None = None
        self._watchdog: asyncio.Task | None = None

    def start(self) -> None:
        self._spawn()
        self._watchdog = asyncio.create_task(self._watch())

    async def close(self, grace: float = 0) -> None:
        """Stops the worker, after up to ``grace`` seconds to append what it was given."""
        if self._watchdog:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        if self._worker:
            await self._worker.finish(grace, "closed")

    async def started(self) -> None:
        """Returns once the worker is up, or has failed to come up within ``START_TIMEOUT``.

        What is timed after this is Pravega's answer, not the start of a process.
        """
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(START_TIMEOUT):
                    await self._worker.started.wait()

    def append(self, event: bytes) -> bool:
        """Has the worker append ``event`` once caught up; False when no worker is there to take it."""
        if self._worker is None or self._worker.dead:
            return False
        try:
            self._worker.send(proto.APPEND, 0, event)
        except PravegaError:
            return False
        return True

    def healthy(self) -> bool:
        return self.failure is None and self.seconds_since_contact() <= self.settings.timeout

    def seconds_since_contact(self) -> float:
        return float("inf") if self._last_success is None else time.monotonic() - self._last_success

    def _spawn(self) -> None:
        self._spawned_at = time.monotonic()
        self._last_message = self._spawned_at
        try:
            options = ["--stream", self.stream, "--poll", str(self.poll)]
            if self.keep:
                options += ["--keep", str(self.keep)]
            self._worker = Worker("follow", self.settings, self._on_frame, self._on_exit, options=options)
        except PravegaError as e:
            self.failure = str(e)
            log.error("%s", e)

    async def _watch(self) -> None:
        """Restarts a worker that died or has been silent for a while.

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
        self.failure = f"the {self.stream} worker stopped: {reason}"

    def _on_frame(self, kind: int, tag: int, payload: memoryview) -> None:
        now = time.monotonic()
        self._last_message = now
        if kind == proto.FAILING:
            self.failure = ujson.loads(bytes(payload)).get("message", "Pravega failed")
            return
        self._last_success = now
        self.failure = None
        self.position = tag
        if kind == proto.RESET:
            self.on_reset()
        elif kind == proto.RECORD:
            self.on_record(bytes(payload))
        elif kind == proto.CAUGHT_UP:
            self.on_caught_up()
        else:
            self._worker.kill(f"unexpected message kind {kind}")

    def on_reset(self) -> None:
        """A replay of the stream from its head follows."""

    def on_record(self, data: bytes) -> None:
        """One event, in the stream's order; :attr:`position` is the offset after it."""

    def on_caught_up(self) -> None:
        """Every event up to the tail, :attr:`position`, has been passed to :meth:`on_record`."""
