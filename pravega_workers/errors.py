"""The one exception a Pravega call fails with, in a worker, a command or the server."""

from __future__ import annotations

NOT_FOUND = "not_found"
UNAVAILABLE = "unavailable"


class PravegaError(Exception):
    """A failed Pravega call; ``kind`` is ``NOT_FOUND`` (the stream is gone) or ``UNAVAILABLE``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
