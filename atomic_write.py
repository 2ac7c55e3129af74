"""Writing a file so that its readers see the old one or the whole new one, never a part of either.

The new content is written beside the file under a staged name, then renamed
over it in one step (rename(2) is atomic within a filesystem): a reader, a
scan, or a crash mid-write finds the file as it was. A write that fails
removes what it staged; a crash leaves it, under a name that says what it is.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
from typing import Iterator


def staged_name(path: str) -> str:
    """A name beside ``path`` to write it under: hidden, so listings that skip dot files skip it,
    and this writer's own (process and a random part), so writers in parallel never share one."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.part")


@contextlib.contextmanager
def staged(path: str, staged_path: str | None = None) -> Iterator[str]:
    """Gives the path to write ``path``'s new content at; when the block ends, renames it over ``path``.

    ``staged_path`` is :func:`staged_name` unless the caller names its own
    (one it finds leftovers by). If the block raises, the staged file is
    removed and ``path`` is left as it was.
    """
    staged_path = staged_path or staged_name(path)
    try:
        yield staged_path
        os.replace(staged_path, path)
    except BaseException:
        pathlib.Path(staged_path).unlink(missing_ok=True)
        raise


def write(path: str, data: bytes | str, durable: bool = False, staged_path: str | None = None) -> None:
    """Replaces ``path`` with ``data`` (a str as UTF-8) in one rename; see :func:`staged`.

    ``durable`` syncs the data to disk before the rename, so that after a
    power cut the file holds either version, not an empty one.
    """
    with staged(path, staged_path) as part, open(part, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
