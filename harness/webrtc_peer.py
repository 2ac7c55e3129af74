"""One aiortc peer in a process of its own (run inside a namespace of the simulated internet), and its driver.

The process (``python -m harness.webrtc_peer``) is one side of a peer
connection. The *serving* side (``--serve FILE``) holds the file as a node
holds a video (a sparse piece file) and answers :class:`peers.channel.ChannelServer`
requests on the data channel offered to it; the *fetching* side
(``--fetch MANIFEST``) offers the connection and the channel, then reads
every piece over :class:`peers.channel.ChannelClient`, checking each against
the manifest. Signalling is out of band, JSON lines on stdin and stdout::

    fetching side  -> {"offer": {"sdp": ..., "type": "offer"}}
    serving side   <- that line; -> {"answer": {...}}
    fetching side  <- the answer
    both           -> {"open": {"local": CANDIDATE, "remote": CANDIDATE}, "seconds": s}
    fetching side  -> {"fetched": bytes, "sha256": hex, "first_byte_seconds": s, "seconds": s}
    both           <- {"close": true} (or end of input); -> {"closed": true}, then exit

Each SDP holds every candidate (aiortc gathers before it answers), so no
trickling. ``CANDIDATE`` is the nominated pair's end, ``{"type": "host" |
"srflx" | "prflx" | "relay", "address", "port"}``. ``seconds`` in ``open``
and ``first_byte_seconds`` count from the start of the connection (on the
fetching side, before it gathers its candidates: STUN and TURN included;
on the serving side, from the offer read); the fetch's ``seconds`` count
from the channel open to the last byte. ``--ice``
is the RTCIceServer list as JSON: given empty, no STUN or TURN at all
(never aiortc's default, a public STUN server).

:class:`PeerProcess` starts one in a namespace and talks to it;
:func:`connect` signals two of them and returns their ``open`` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time

from harness.netns import Namespace

VIDEO_ID = "alpha"
STALL = 10.0


def manifest_json(data: bytes, piece_size: int) -> dict:
    """The manifest (as :meth:`peers.manifest.Manifest.to_json`) of ``data`` cut into ``piece_size`` pieces."""
    from peers.manifest import Manifest

    digests = tuple(hashlib.sha256(data[i : i + piece_size]).digest() for i in range(0, len(data), piece_size))
    return Manifest(VIDEO_ID, len(data), piece_size, digests, '"v1"').to_json()


class PeerProcess:
    """A peer process in ``namespace``; its stderr (aiortc's log) goes to ``log_path``."""

    def __init__(self, namespace: Namespace, args: list[str], log_path: str) -> None:
        self.namespace = namespace
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = namespace.python(["-m", "harness.webrtc_peer", *args], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def send(self, message: dict) -> None:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def expect(self, key: str, timeout: float) -> dict:
        """The next line, which must hold ``key``; AssertionError (with the peer's log) if none comes in ``timeout`` s."""
        try:
            message = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"peer in {self.namespace.name}: no {key!r} within {timeout:g} s:\n"
                                 f"{self.log_tail()}") from None
        if message is None or key not in message:
            raise AssertionError(f"peer in {self.namespace.name} gave {message!r}, not {key!r}:\n{self.log_tail()}")
        return message

    def log_tail(self, lines: int = 30) -> str:
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def close(self, timeout: float) -> None:
        """Asks it to close its peer connection (TURN allocations deleted, so coturn logs their totals) and exit."""
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self.send({"close": True})
                self.expect("closed", timeout)
            self.process.wait(timeout)
        self._log.close()


def connect(fetcher: PeerProcess, server: PeerProcess, timeout: float) -> tuple[dict, dict]:
    """Hands the offer and answer across; returns both ``open`` lines (fetcher's, server's)."""
    server.send(fetcher.expect("offer", timeout))
    fetcher.send(server.expect("answer", timeout))
    return fetcher.expect("open", timeout), server.expect("open", timeout)


# --- the process ---------------------------------------------------------------------------------


async def _run(args) -> None:
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

    from peers.links import selected_pair

    loop = asyncio.get_running_loop()

    def say(message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def hear() -> dict:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        return json.loads(line) if line.strip() else {"close": True}

    servers = [RTCIceServer(**server) for server in json.loads(args.ice)]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
    opened = asyncio.Event()
    channels = []
    try:
        if args.serve:
            have, piece = await _held(args.serve, args.piece_size)

            @pc.on("datachannel")
            def on_datachannel(channel) -> None:
                from peers.channel import ChannelServer

                channels.append(ChannelServer(channel, have, piece))
                opened.set()

            offer = (await hear())["offer"]
            started = time.monotonic()
            await pc.setRemoteDescription(RTCSessionDescription(**offer))
            await pc.setLocalDescription(await pc.createAnswer())
            say({"answer": {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}})
        else:
            started = time.monotonic()
            channel = pc.createDataChannel("pieces")
            channel.on("open", opened.set)
            await pc.setLocalDescription(await pc.createOffer())
            say({"offer": {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}})
            await pc.setRemoteDescription(RTCSessionDescription(**(await hear())["answer"]))
        await opened.wait()
        say({"open": selected_pair(pc), "seconds": time.monotonic() - started})
        if not args.serve:
            say(await _fetch(channel, args.fetch, started))
        while not (await hear()).get("close"):
            pass
    finally:
        await pc.close()
    say({"closed": True})


async def _held(path: str, piece_size: int):
    from peers.have import to_ranges
    from peers.manifest import Manifest
    from peers.pieces import SparseFilePieces

    with open(path, "rb") as f:
        data = f.read()
    manifest = Manifest.from_json(manifest_json(data, piece_size))
    storage = SparseFilePieces(f"{path}.pieces-{os.getpid()}", VIDEO_ID)
    await storage.adopt(manifest)
    for n in range(manifest.piece_count):
        await storage.put(n, data[slice(*manifest.piece_range(n))])

    def have(video_id: str) -> dict:
        if video_id != VIDEO_ID:
            raise KeyError(f"no video {video_id!r}")
        return {"root": manifest.root, "pieceSize": piece_size, "pieces": to_ranges(storage.held())}

    async def piece(video_id: str, n: int, root: str) -> bytes | None:
        return await storage.raw(n) if video_id == VIDEO_ID and root == manifest.root else None

    return have, piece


async def _fetch(channel, manifest_path: str, started: float) -> dict:
    from peers.channel import ChannelClient
    from peers.manifest import Manifest

    with open(manifest_path) as f:
        manifest = Manifest.from_json(json.load(f))
    fetch_started = time.monotonic()
    client = ChannelClient(channel)
    have = await client.have(VIDEO_ID, STALL)
    assert have["root"] == manifest.root, have
    whole, first_byte = hashlib.sha256(), None
    for n in range(manifest.piece_count):
        start, end = manifest.piece_range(n)
        piece = hashlib.sha256()
        async with contextlib.aclosing(client.get_range(VIDEO_ID, n, manifest.root, 0, end - start, STALL)) as chunks:
            async for chunk in chunks:
                first_byte = first_byte or time.monotonic() - started
                piece.update(chunk)
                whole.update(chunk)
        if piece.digest() != manifest.digests[n]:
            raise AssertionError(f"piece {n} does not hash to the manifest's digest")
    return {"fetched": manifest.size, "sha256": whole.hexdigest(), "first_byte_seconds": first_byte,
            "seconds": time.monotonic() - fetch_started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ice", required=True, help="the RTCIceServer list, as JSON")
    side = parser.add_mutually_exclusive_group(required=True)
    side.add_argument("--serve", metavar="FILE", help="hold FILE and answer piece requests")
    side.add_argument("--fetch", metavar="MANIFEST", help="fetch every piece the manifest JSON names")
    parser.add_argument("--piece-size", type=int, default=1024 * 1024)
    # aioice tells each candidate pair's checks at INFO: what a failed connection is read by.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
