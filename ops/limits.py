"""Per-client limits: what a client may hold open at once, and how fast it may send messages.

Long-lived things a client holds open (video bodies, websockets) are counted per client address,
across all the worker processes of a server (:class:`SharedCounts`) when it has several.

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

**Across workers** each worker counts what it holds in a row of its own
in a file of the run directory, mapped into every worker's memory (made by
:func:`shared_counts` in the supervisor); an address's count is the sum of
all rows, read before every grant: a few microseconds, no message to
anyone, so refusal still comes before the upgrade or the body. A row is a
count-min sketch (``DEPTH`` rows of ``WIDTH`` counters, an address counted
in one counter of each, its count the least of them): it never counts an
address short, and counts one over only if other addresses share all of
its counters, which takes thousands of busy addresses. Two workers
granting the last slot of one address at the same instant may both grant
it: the limit can be passed by one per worker, at most. A worker starts by
zeroing its row (a dead predecessor's slots), and the relay (see
:mod:`presence.relay`) zeroes the row of a worker that died.

How fast one client may send messages (a presence websocket's) is kept by a
:class:`TokenBucket` of its own, whose :class:`Verdict` tells the handler to
answer, refuse, or close.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import mmap
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Callable, Iterator

if TYPE_CHECKING:
    from ops.workers import Supervisor

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


class AddressCounts:
    """How many slots each address holds, in this process alone."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def count(self, address: str) -> int:
        return self._counts.get(address, 0)

    def add(self, address: str, delta: int) -> None:
        count = self._counts.get(address, 0) + delta
        if count:
            self._counts[address] = count
        else:
            del self._counts[address]


# The sketch's shape (see the module's docstring): 2 x 65,536 counters of
# 16 bits, 256 KiB a worker for each kind of slot.
DEPTH = 2
WIDTH = 1 << 16
_ROW = DEPTH * WIDTH
_COUNTER = 2


def counts_path(run_dir: str, what: str) -> str:
    return os.path.join(run_dir, f"limits-{what}")


class SharedCounts:
    """How many slots each address holds across ``count`` workers, this one ``index``: see the module's docstring."""

    def __init__(self, run_dir: str, what: str, index: int, count: int) -> None:
        with open(counts_path(run_dir, what), "r+b") as f:
            self._map = mmap.mmap(f.fileno(), count * _ROW * _COUNTER)
        self._counters = memoryview(self._map).cast("H")
        self._rows = [w * _ROW for w in range(count)]
        self._own = index * _ROW
        self._map[self._own * _COUNTER:(self._own + _ROW) * _COUNTER] = bytes(_ROW * _COUNTER)  # a dead predecessor's

    def count(self, address: str) -> int:
        counters, rows = self._counters, self._rows
        return min([sum([counters[row + cell] for row in rows]) for cell in _cells(address)])

    def add(self, address: str, delta: int) -> None:
        counters, own = self._counters, self._own
        for cell in _cells(address):
            # Not below 0: the relay may have zeroed this row, taking the worker for dead.
            counters[own + cell] = max(0, counters[own + cell] + delta)


# An address is counted on every grant and release: the hash of one that
# keeps coming back (a player's, a node's) is worth keeping.
@functools.lru_cache(maxsize=4096)
def _cells(address: str) -> tuple[int, ...]:
    digest = hashlib.blake2b(address.encode(), digest_size=4 * DEPTH).digest()
    return tuple(d * WIDTH + int.from_bytes(digest[4 * d:4 * d + 4]) % WIDTH for d in range(DEPTH))


def release_worker(run_dir: str, what: str, index: int) -> None:
    """Zeroes the row of worker ``index``, which died holding what it held."""
    with open(counts_path(run_dir, what), "r+b") as f:
        f.seek(index * _ROW * _COUNTER)
        f.write(bytes(_ROW * _COUNTER))


@contextlib.asynccontextmanager
async def shared_counts(supervisor: Supervisor) -> AsyncIterator[None]:
    """The supervisor's service (see :mod:`ops.workers`) that makes the count files its workers map."""
    for what in SLOT_KINDS:
        with open(counts_path(supervisor.run_dir, what), "wb") as f:
            f.truncate(supervisor.count * _ROW * _COUNTER)
    yield


# The kinds of slots a server holds, each limited per address (handlers/app.py).
SLOT_KINDS = ("streams", "websockets")


class Slots:
    """Slots of one kind (``what``: "streams", "websockets"), at most ``per_address`` per client address.

    ``counts`` says what each address holds: this process's alone unless given one shared across workers.
    """

    def __init__(self, what: str, per_address: int, counts: AddressCounts | SharedCounts | None = None) -> None:
        self.what = what
        self.per_address = per_address
        self._held: set[_Slot] = set()
        self._counts = counts or AddressCounts()
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
        if self._counts.count(address) >= self.per_address:
            raise Refused(429, f"too many {self.what} from {address}: at most {self.per_address} at once")
        task = asyncio.current_task()
        assert task is not None, "a slot is held by a task"
        slot = _Slot(address, task, close)
        self._held.add(slot)
        self._counts.add(address, 1)
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
            self._counts.add(address, -1)
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
