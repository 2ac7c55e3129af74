"""Files for servers to serve, made on the spot."""

from __future__ import annotations

import random

import ujson

MiB = 1024 * 1024


def write_random_video(path: str, size: int, seed: int = 1) -> bytes:
    """``size`` pseudo-random bytes at ``path`` (named .mp4: only the bytes matter); returns them.

    The same ``seed`` gives the same bytes, so a failure can be replayed.
    They are made a MiB at a time: ``randbytes`` takes at most 256 MiB at once.
    """
    rng = random.Random(seed)
    chunks = [rng.randbytes(min(MiB, size - offset)) for offset in range(0, size, MiB)]
    with open(path, "wb") as f:
        f.writelines(chunks)
    return b"".join(chunks)


def write_unprobed_video(path: str, size: int, seed: int = 1) -> bytes:
    """As :func:`write_random_video`, with a sidecar giving a duration, so the store never probes the bytes."""
    data = write_random_video(path, size, seed)
    with open(path.rsplit(".", 1)[0] + ".json", "w") as f:
        ujson.dump({"durationSeconds": 60}, f)
    return data
