"""A peer node keeping its pieces in Pravega, against one keeping them in sparse files.

An origin and two nodes, real ``server.py`` processes on loopback (see
``harness/nodes.py``), and one video of random bytes. Node *F* keeps pieces in
sparse files; node *P* keeps the verified prefix in its own Pravega
(``peers/pravega_pieces.py``). Each client reads sequential 1 MiB ranges as
fast as they come:

1. *First play*: each node fetches every piece from the origin, verifies it
   and keeps it (P appends it to Pravega on the way).
2. *Replay*: each node serves the video again from what it keeps, in
   ``--rounds`` alternating rounds so that noise on this shared machine hits
   both alike. P is compared with the raw Pravega client reading the same
   bytes of P's stream in this process (seek, ``readinto``): as fast as
   reading them from Pravega goes.

    scripts/pravega start
    .venv/bin/python bench/pravega_node.py [--controller tcp://127.0.0.1:9090] [--size-mib 64] [--rounds 5]

It uses a scope of its own on that Pravega and deletes it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.media import write_random_video  # noqa: E402
from harness.nodes import MiB, Server, Viewer, start_all  # noqa: E402
from pravega_workers.blocking import READ_PIECE, delete_scope, stream_manager  # noqa: E402

VIDEO = "bench"


async def play_timed(server: Server) -> float:
    """Seconds one client takes to read the whole video from ``server``."""
    began = time.monotonic()
    await Viewer(server.url).play(VIDEO)
    return time.monotonic() - began


def raw_read_seconds(controller: str, scope: str, size: int) -> float:
    """Seconds the raw client takes to read ``size`` bytes of the node's piece stream."""
    manager = stream_manager(controller)
    (stream,) = [name for name in manager.list_stream(scope) if name.startswith("p-")]
    reader = manager.create_byte_stream(scope, stream)
    buffer = bytearray(READ_PIECE)
    began = time.monotonic()
    reader.seek(0, 0)
    got = 0
    while got < size:
        got += reader.readinto(buffer)
    return time.monotonic() - began


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--controller", default="tcp://127.0.0.1:9090")
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--piece-kib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    size = args.size_mib * MiB
    piece_size = args.piece_kib * 1024
    scope = f"bench-{uuid.uuid4().hex[:12]}"
    print(f"video {args.size_mib} MiB in pieces of {args.piece_kib} KiB; clients read sequential 1 MiB ranges",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="pravega-node-bench-") as folder:
        origin = Server(folder, "origin", piece_size=piece_size)
        write_random_video(os.path.join(origin.library, f"{VIDEO}.mp4"), size)
        files = Server(folder, "node-files", upstream=origin.url)
        pravega = Server(folder, "node-pravega", upstream=origin.url,
                         pravega={"controller_uri": args.controller, "scope": scope})
        try:
            await start_all(origin, files, pravega, video=VIDEO)
            first = {name: await play_timed(node) for name, node in (("files", files), ("pravega", pravega))}
            print(f"first play (fetch, verify, keep): files {args.size_mib / first['files']:.0f} MiB/s, "
                  f"pravega {args.size_mib / first['pravega']:.0f} MiB/s "
                  f"({first['files'] / first['pravega']:.2f}x)", flush=True)
            replays: dict[str, list[float]] = {"files": [], "pravega": [], "raw": []}
            for _ in range(args.rounds):
                replays["files"].append(await play_timed(files))
                replays["pravega"].append(await play_timed(pravega))
                replays["raw"].append(raw_read_seconds(args.controller, scope, size))
            rate = {name: args.size_mib / statistics.median(times) for name, times in replays.items()}
            print(f"replay from what the node keeps, median of {args.rounds}: files {rate['files']:.0f} MiB/s, "
                  f"pravega {rate['pravega']:.0f} MiB/s ({rate['pravega'] / rate['files']:.2f}x files), "
                  f"raw client {rate['raw']:.0f} MiB/s (node {rate['pravega'] / rate['raw']:.2f}x raw)")
        finally:
            for server in (pravega, files, origin):
                server.stop()
            delete_scope(stream_manager(args.controller), scope)


if __name__ == "__main__":
    asyncio.run(main())
