"""Per-client limits: what a client may hold open at once, and how fast it may send messages.

Long-lived things a client holds open (video bodies, websockets) are counted per client address.

A handler holds a slot for as long as it streams or keeps its socket:
``with slots.hold(address, close): ...``. Past ``per_address`` slots held by one
address, or once the server is shutting down, :meth:`Slots.hold` raises
:class:`Refused`, which handlers answer as JSON with ``Retry-After`` (429,
or 503 while shutting down) before anything else is sent, so a websocket is
refused before its upgrade rather than closed after it.

At shutdown, :meth:`Slots.cut_all` ends what is still held once the grace
is over: it cancels each holder's task, and the cancellation, surfacing at
whatever the holder awaits (a write, sendfile(2), the store, a socket read),
is absorbed by its ``with`` block, which closes the connection, so the
handler ends as it would had the client left.

How fast one client may send messages (a presence websocket's) is kept by a
:class:`TokenBucket` of its own, whose :class:`Verdict` tells the handler to
answer, refuse, or close.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from dataclasses import dataclass
from typing import Callable, Iterator

# Seconds a refused client is asked to wait: long enough that a retry loop
# does not hammer us, short enough that playback resumes quickly.
RETRY_AFTER = 2


class Refused(Exception):
    """A slot not given; the message is for the client."""

    def __init__(self, status: int, message: str, retry_after: int = RETRY_AFTER) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(eq=False)
class _Slot:
    address: str
    task: asyncio.Task
    close: Callable[[], None]
    cut: bool = False


class Slots:
    """Slots of one kind (``what``: "streams", "websockets"), at most ``per_address`` per client address."""

    def __init__(self, what: str, per_address: int) -> None:
        self.what = what
        self.per_address = per_address
        self._held: set[_Slot] = set()
        self._per_address: dict[str, int] = {}
        self._closed = False
        self._emptied = asyncio.Event()
        self._emptied.set()

    def __len__(self) -> int:
        return len(self._held)

    @contextlib.contextmanager
    def hold(self, address: str, close: Callable[[], None]) -> Iterator[None]:
        """Holds a slot for ``address`` around the block; ``close`` closes the connection if it is cut."""
        if self._closed:
            raise Refused(503, "the server is shutting down")
        if self._per_address.get(address, 0) >= self.per_address:
            raise Refused(429, f"too many {self.what} from {address}: at most {self.per_address} at once")
        task = asyncio.current_task()
        assert task is not None, "a slot is held by a task"
        slot = _Slot(address, task, close)
        self._held.add(slot)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._emptied.clear()
        try:
            yield
        except asyncio.CancelledError:
            # Cancelled by cut_all alone: absorbed. Cancelled by anyone else too: theirs to see.
            if not slot.cut or task.uncancel() > 0:
                raise
            close()
        finally:
            self._held.discard(slot)
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]
            if not self._held:
                self._emptied.set()

    def close(self) -> None:
        """Refuses every slot from now on, with 503; those held stay held."""
        self._closed = True

    async def emptied(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for every slot to be released; whether they were."""
        try:
            async with asyncio.timeout(timeout):
                await self._emptied.wait()
        except TimeoutError:
            return False
        return True

    def cut_all(self) -> None:
        """Ends every held slot's block at its next await, see the module's docstring."""
        for slot in self._held:
            if not slot.cut:
                slot.cut = True
                slot.task.cancel()


class Verdict(enum.Enum):
    """What a client's message gets: handled, refused with an error, or its socket closed."""

    OK = "ok"
    LIMITED = "limited"
    ABUSE = "abuse"


class TokenBucket:
    """Allows ``rate`` messages a second, in bursts of up to a second's worth (at least one).

    A refused message still costs a token, so a client that keeps sending
    while refused sinks into debt and must slow below ``rate`` to climb out;
    once the debt is a whole burst deep, :meth:`take` answers ``ABUSE``.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = max(1.0, rate)
        self._tokens = self._burst
        self._clock = clock
        self._last = clock()

    def take(self) -> Verdict:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate) - 1
        self._last = now
        if self._tokens >= 0:
            return Verdict.OK
        return Verdict.ABUSE if self._tokens < -self._burst else Verdict.LIMITED
