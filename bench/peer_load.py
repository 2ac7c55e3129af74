"""Peer nodes: the origin's load, the time to a first byte, and the stall when a peer dies.

Three runs, each with real ``server.py`` processes on loopback (see
``harness/nodes.py``) and one video of random bytes:

1. *Origin load.* Four viewers watch the video, each starting ``--stagger``
   seconds after the one before and reading sequential 1 MiB ranges at
   ``--rate``: first each through a peer node of its own, then as four
   plain clients of the origin. A byte-counting proxy in front of the
   origin counts everything it sends (catalogs, manifests, presence and
   video bytes); the figure is that count over the video's size.
2. *First byte.* A fresh node reads 1 MiB ranges it does not hold from
   places spread over the video: the first one opens the video (manifest,
   peer list), the others only fetch.
3. *Stall.* A node plays the video from a peer holding all of it; halfway
   the peer is killed (SIGKILL), then in a second run frozen (SIGSTOP, so
   its connections stay open and silent). The longest Range request of
   each playback is the stall; the median is what a request takes anyway.

    .venv/bin/python bench/peer_load.py [--size-mib 64] [--piece-kib 1024] [--rate-mib 8] [--stagger 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.loopback import until  # noqa: E402
from harness.media import write_random_video  # noqa: E402
from harness.nodes import MiB, CountingProxy, Server, Viewer, peer_urls, start_all  # noqa: E402

VIDEO = "bench"


async def origin_load(folder: str, args: argparse.Namespace, size: int) -> tuple[float, float]:
    origin = Server(folder, "load-origin", piece_size=args.piece_kib * 1024)
    write_random_video(os.path.join(origin.library, f"{VIDEO}.mp4"), size)
    origin.start()
    servers = [origin]
    try:
        await origin.ready(video=VIDEO)
        proxy = await CountingProxy(origin.port).start()
        nodes = [Server(folder, f"load-node{i}", upstream=proxy.url) for i in range(4)]
        servers += nodes
        await start_all(*nodes, video=VIDEO)

        async def four_viewers(targets: list[str]) -> float:
            before = proxy.sent

            async def view(i: int, target: str) -> None:
                await asyncio.sleep(i * args.stagger)
                viewer = Viewer(target)
                await viewer.watch(VIDEO)
                playback = await viewer.play(VIDEO, rate=args.rate_mib * MiB)
                viewer.close()
                assert len(playback.body) == size

            await asyncio.gather(*(view(i, t) for i, t in enumerate(targets)))
            return (proxy.sent - before) / size

        through_nodes = await four_viewers([n.url for n in nodes])
        through_origin = await four_viewers([proxy.url] * 4)
        await proxy.close()
        return through_nodes, through_origin
    finally:
        for server in servers:
            server.stop()


async def first_bytes(folder: str, args: argparse.Namespace, size: int) -> tuple[float, list[float]]:
    origin = Server(folder, "ttfb-origin", piece_size=args.piece_kib * 1024)
    write_random_video(os.path.join(origin.library, f"{VIDEO}.mp4"), size, seed=2)
    node = Server(folder, "ttfb-node", upstream=origin.url)
    try:
        origin.start()
        await origin.ready(video=VIDEO)
        await start_all(node, video=VIDEO)
        viewer = Viewer(node.url)
        times = []
        for k in range(8):
            offset = (k * 7 % 8) * (size // 8) + k * 12345
            playback = await viewer.play(VIDEO, start=offset, end=offset + MiB)
            times.append(playback.first_byte[0])
        return times[0], times[1:]
    finally:
        node.stop()
        origin.stop()


async def stall(folder: str, args: argparse.Namespace, size: int, how: str) -> tuple[float, float]:
    origin = Server(folder, f"{how}-origin", piece_size=args.piece_kib * 1024)
    write_random_video(os.path.join(origin.library, f"{VIDEO}.mp4"), size, seed=3)
    seed = Server(folder, f"{how}-seed", upstream=origin.url)
    node = Server(folder, f"{how}-node", upstream=origin.url)
    try:
        await start_all(origin, seed, node, video=VIDEO)
        seeder = Viewer(seed.url)
        await seeder.watch(VIDEO)
        await seeder.play(VIDEO)
        await until(lambda: _listed(origin, seed.url), what="the seed listed")
        viewer = Viewer(node.url)
        await viewer.watch(VIDEO)
        playing = asyncio.ensure_future(viewer.play(VIDEO, rate=args.rate_mib * MiB))
        await until(lambda: viewer.received >= size // 2, timeout=120, what="halfway")
        if how == "kill":
            seed.kill()
        else:
            seed.freeze()
        playback = await playing
        viewer.close()
        return max(playback.durations), statistics.median(playback.durations)
    finally:
        for server in (node, seed, origin):
            server.stop()


async def _listed(origin: Server, url: str) -> bool:
    return url in await peer_urls(origin, VIDEO)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--piece-kib", type=int, default=1024)
    parser.add_argument("--rate-mib", type=float, default=8.0, help="each viewer's playback rate, MiB/s")
    parser.add_argument("--stagger", type=float, default=2.0, help="seconds between viewers starting")
    args = parser.parse_args()
    size = args.size_mib * MiB
    print(f"video {args.size_mib} MiB in pieces of {args.piece_kib} KiB; viewers read 1 MiB ranges at "
          f"{args.rate_mib:g} MiB/s, {args.stagger:g} s apart", flush=True)
    with tempfile.TemporaryDirectory(prefix="peer-bench-") as folder:
        began = time.monotonic()
        through_nodes, through_origin = await origin_load(folder, args, size)
        print(f"origin sent, for 4 viewers: {through_nodes:.2f}x the video through peer nodes, "
              f"{through_origin:.2f}x to plain clients ({through_origin / through_nodes:.1f}x less)", flush=True)
        first, later = await first_bytes(folder, args, size)
        print(f"first byte of an unheld 1 MiB range: {first * 1000:.0f} ms opening the video, then "
              f"median {statistics.median(later) * 1000:.0f} ms, max {max(later) * 1000:.0f} ms", flush=True)
        for how in ("kill", "freeze"):
            longest, median = await stall(folder, args, size, how)
            print(f"peer {'killed' if how == 'kill' else 'frozen'} halfway: longest request {longest * 1000:.0f} ms "
                  f"(median {median * 1000:.0f} ms)", flush=True)
        print(f"({time.monotonic() - began:.0f} s in all)")


if __name__ == "__main__":
    asyncio.run(main())
