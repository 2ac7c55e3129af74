"""Pieces over a WebRTC data channel against HTTP: first byte, throughput, memory per channel.

A serving process holds a video of random bytes (in a sparse piece file, as a
node does) and answers both ways: a :class:`peers.channel.ChannelServer` on
each data channel offered to it, and a Tornado server whose ranges of the
same file stand for ``/pieces/{n}``. The asking process (this one) measures:

1. *First byte over a new channel*: from creating the peer connection to the
   first byte of a piece, ICE (host candidates on loopback), DTLS and SCTP
   set-up included; the offer and answer cross a pipe, so signalling costs
   next to nothing here.
2. *Throughput*: the whole video piece after piece over one channel, then
   over HTTP (:func:`peers.transfer.get_range`, a connection per piece, as the
   fetcher does).
3. *Memory per open channel*: this process's resident memory before and after
   opening ``--channels`` more channels to the server, over their number.

    .venv/bin/python bench/channel.py [--size-mib 64] [--piece-kib 1024] [--channels 20]

With ``--netns`` (root; iproute2, nftables, coturn) the two sides are
instead peer processes (harness/webrtc_peer.py) on the simulated internet
of harness/netns.py, with a coturn on its WAN as STUN and TURN server, and
for each of three paths (two hosts on one LAN; two homes behind
endpoint-independent NAT, server-reflexive; two homes behind symmetric NAT,
relayed by TURN) it gives the nominated pair, the time to the first byte
over a new connection (candidates gathered, STUN and TURN included, then
ICE, DTLS, SCTP and the request) and the throughput of the whole video
piece after piece over the channel:

    .venv/bin/python bench/channel.py --netns [--size-mib 64] [--piece-kib 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tornado.web  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402

from harness.media import write_random_video  # noqa: E402
from peers.channel import ChannelClient, ChannelServer  # noqa: E402
from peers.have import to_ranges  # noqa: E402
from peers.manifest import Manifest  # noqa: E402
from peers.pieces import SparseFilePieces  # noqa: E402
from peers.transfer import get_range  # noqa: E402

STALL = 5.0


def _manifest(data: bytes, piece_size: int) -> Manifest:
    digests = tuple(hashlib.sha256(data[i : i + piece_size]).digest() for i in range(0, len(data), piece_size))
    return Manifest("alpha", len(data), piece_size, digests, '"v1"')


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def serve(folder: str, piece_size: int, pipe) -> None:
    """The serving process: answers offers arriving on ``pipe`` and HTTP ranges of the video file."""

    async def main() -> None:
        with open(os.path.join(folder, "alpha.mp4"), "rb") as f:
            data = f.read()
        manifest = _manifest(data, piece_size)
        storage = SparseFilePieces(os.path.join(folder, "pieces"), "alpha")
        await storage.adopt(manifest)
        for n in range(manifest.piece_count):
            await storage.put(n, data[slice(*manifest.piece_range(n))])
        del data

        def have(video_id: str) -> dict:
            return {"root": manifest.root, "pieceSize": piece_size, "pieces": to_ranges(storage.held())}

        async def piece(video_id: str, n: int, root: str) -> bytes | None:
            return await storage.raw(n) if root == manifest.root else None

        app = tornado.web.Application([(r"/(.*)", tornado.web.StaticFileHandler, {"path": folder})])
        server = app.listen(0, "127.0.0.1")
        port = next(iter(server._sockets.values())).getsockname()[1]
        pipe.send(port)
        connections = []
        loop = asyncio.get_running_loop()
        while True:
            offer = await loop.run_in_executor(None, pipe.recv)
            if offer is None:
                break
            pc = RTCPeerConnection(RTCConfiguration([]))
            pc.on("datachannel", lambda channel: ChannelServer(channel, have, piece))
            await pc.setRemoteDescription(RTCSessionDescription(*offer))
            await pc.setLocalDescription(await pc.createAnswer())
            pipe.send((pc.localDescription.sdp, pc.localDescription.type))
            connections.append(pc)
        for pc in connections:
            await pc.close()

    asyncio.run(main())


async def open_channel(pipe) -> tuple[RTCPeerConnection, ChannelClient]:
    pc = RTCPeerConnection(RTCConfiguration([]))
    channel = pc.createDataChannel("pieces")
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await pc.setLocalDescription(await pc.createOffer())
    pipe.send((pc.localDescription.sdp, pc.localDescription.type))
    answer = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    await pc.setRemoteDescription(RTCSessionDescription(*answer))
    await asyncio.wait_for(opened.wait(), 30)
    return pc, ChannelClient(channel)


async def read_all(chunks) -> int:
    received = 0
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            received += len(chunk)
    return received


async def measure(args, manifest: Manifest, pipe, port: int) -> None:
    started = time.monotonic()
    pc, client = await open_channel(pipe)
    chunks = client.get_range("alpha", 0, manifest.root, 0, manifest.piece_range(0)[1], STALL)
    async with contextlib.aclosing(chunks):
        await chunks.__anext__()
        first_byte = time.monotonic() - started
    print(f"first byte over a new channel: {first_byte * 1000:.0f} ms")

    for name, reader in (
        ("channel", lambda n, start, end: client.get_range("alpha", n, manifest.root, 0, end - start, STALL)),
        ("HTTP", lambda n, start, end: get_range(f"http://127.0.0.1:{port}/alpha.mp4", start, end, STALL)),
    ):
        started = time.monotonic()
        total = 0
        for n in range(manifest.piece_count):
            total += await read_all(reader(n, *manifest.piece_range(n)))
        elapsed = time.monotonic() - started
        assert total == manifest.size
        print(f"{name}: {total / 2**20:.0f} MiB in {elapsed:.2f} s, {total * 8 / elapsed / 1e6:.0f} Mbit/s")

    before = _rss_kib()
    more = [await open_channel(pipe) for _ in range(args.channels)]
    for _, c in more:
        await c.have("alpha", STALL)
    after = _rss_kib()
    print(f"memory per open channel (asking side): {(after - before) / args.channels:.0f} KiB "
          f"({args.channels} channels, {before} -> {after} KiB resident)")
    for other, _ in more:
        await other.close()
    await pc.close()


def measure_netns(args) -> None:
    from harness.netns import ENDPOINT_INDEPENDENT, SYMMETRIC, HomePlan, Internet, unavailable
    from harness.turn import NamespaceTurnServer
    from harness.webrtc_peer import PeerProcess, connect, manifest_json

    reason = unavailable()
    if reason:
        sys.exit(f"channel: --netns: {reason}")
    plans = [HomePlan("a", ENDPOINT_INDEPENDENT, hosts=2), HomePlan("b", ENDPOINT_INDEPENDENT),
             HomePlan("c", SYMMETRIC), HomePlan("d", SYMMETRIC)]
    with tempfile.TemporaryDirectory() as folder, Internet(plans) as net, \
            NamespaceTurnServer(net.wan, os.path.join(folder, "turn")) as turn:
        path, manifest = os.path.join(folder, "alpha.mp4"), os.path.join(folder, "manifest.json")
        data = write_random_video(path, args.size_mib * 2**20)
        with open(manifest, "w") as f:
            f.write(json.dumps(manifest_json(data, args.piece_kib * 1024)))
        del data
        a, b, c, d = (net.homes[name].hosts for name in "abcd")
        stun = [{"urls": turn.stun_url()}]
        for name, fetching, serving, ice in (
            ("one LAN", a[0], a[1], (stun, stun)),
            ("endpoint-independent NATs", a[0], b[0], (stun, stun)),
            ("symmetric NATs", c[0], d[0], (turn.ice_servers("bench-c"), turn.ice_servers("bench-d"))),
        ):
            server = PeerProcess(serving, ["--ice", json.dumps(ice[1]), "--serve", path,
                                           "--piece-size", str(args.piece_kib * 1024)], os.path.join(folder, "s.log"))
            fetcher = PeerProcess(fetching, ["--ice", json.dumps(ice[0]), "--fetch", manifest],
                                  os.path.join(folder, "f.log"))
            try:
                opened, _ = connect(fetcher, server, 60)
                fetched = fetcher.expect("fetched", 600)
            finally:
                fetcher.close(30)
                server.close(30)
            pair = opened["open"]
            print(f"{name}: {pair['local']['type']} -> {pair['remote']['type']} {pair['remote']['address']}; "
                  f"first byte {fetched['first_byte_seconds'] * 1000:.0f} ms; "
                  f"{fetched['fetched'] / 2**20:.0f} MiB in {fetched['seconds']:.2f} s, "
                  f"{fetched['fetched'] * 8 / fetched['seconds'] / 1e6:.0f} Mbit/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--piece-kib", type=int, default=1024)
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--netns", action="store_true", help="across the simulated internet's NATs and TURN")
    args = parser.parse_args()
    if args.netns:
        measure_netns(args)
        return
    with tempfile.TemporaryDirectory() as folder:
        data = write_random_video(os.path.join(folder, "alpha.mp4"), args.size_mib * 2**20)
        manifest = _manifest(data, args.piece_kib * 1024)
        del data
        ours, theirs = multiprocessing.Pipe()
        server = multiprocessing.Process(target=serve, args=(folder, args.piece_kib * 1024, theirs))
        server.start()
        try:
            port = ours.recv()
            asyncio.run(measure(args, manifest, ours, port))
        finally:
            ours.send(None)
            server.join(30)


if __name__ == "__main__":
    main()
