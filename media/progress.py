"""A one-line progress display for byte copies, for command-line tools.

On a terminal the line redraws in place, at most ten times a second:
``Copying movie.mp4 [#######.............]  12.3/34.5 MB  35%  81.0 MB/s``.
Anywhere else (a pipe, a log file) only the summary line that :meth:`finish`
writes appears, so logs are not flooded with carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

_MB = 1_000_000
_BAR_WIDTH = 20


class ByteProgress:
    """Call with the number of bytes done so far; call :meth:`finish` once at the end."""

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.clock = clock
        self.live = self.stream.isatty()
        self.started = clock()
        self.done = 0
        self._drawn_at: float | None = None

    def __call__(self, done: int) -> None:
        self.done = done
        if not self.live:
            return
        now = self.clock()
        if self._drawn_at is not None and now - self._drawn_at < self.interval and done < self.total:
            return
        self._drawn_at = now
        # \x1b[K clears what a longer earlier line left to the right.
        self.stream.write(f"\r{self._line(now)}\x1b[K")
        self.stream.flush()

    def finish(self) -> None:
        """Writes the final line: what was copied, in how long, how fast."""
        elapsed = max(self.clock() - self.started, 1e-6)
        summary = (
            f"{self.label}: {self.done / _MB:.1f} MB in {elapsed:.1f} s ({self.done / _MB / elapsed:.1f} MB/s)"
        )
        self.stream.write(f"\r{summary}\x1b[K\n" if self.live else f"{summary}\n")
        self.stream.flush()

    def abandon(self) -> None:
        """Ends a redrawn line without a summary, so an error message starts on a line of its own."""
        if self._drawn_at is not None:
            self.stream.write("\n")
            self.stream.flush()

    def _line(self, now: float) -> str:
        fraction = min(self.done / self.total, 1.0) if self.total > 0 else 1.0
        filled = round(fraction * _BAR_WIDTH)
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        rate = self.done / _MB / max(now - self.started, 1e-6)
        return (
            f"{self.label} [{bar}] {self.done / _MB:5.1f}/{self.total / _MB:.1f} MB "
            f"{fraction:4.0%} {rate:6.1f} MB/s"
        )
