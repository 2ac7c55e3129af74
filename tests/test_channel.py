"""The piece protocol over a real WebRTC data channel (aiortc), between two peer connections on loopback.

The offer and answer are handed across in the test (host candidates only,
no STUN): what is tested here is the transport, not the signalling.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from harness.media import write_random_video
from peers.channel import BUFFER_HIGH, BUFFER_LOW, CHUNK_SIZE, ChannelClient, ChannelServer
from peers.have import from_ranges, to_ranges
from peers.manifest import Manifest
from peers.pieces import SparseFilePieces
from peers.transfer import TransferError

PIECE_SIZE = 1024 * 1024
VIDEO_SIZE = 5 * PIECE_SIZE + 12345
# Bounds on a 3x slower machine: ICE on loopback and a DTLS handshake take well under a second here.
CONNECT_TIMEOUT = 15.0
STALL = 2.0


async def _held_video(tmp_path) -> tuple[bytes, Manifest, SparseFilePieces]:
    data = write_random_video(str(tmp_path / "alpha.mp4"), VIDEO_SIZE)
    digests = tuple(hashlib.sha256(data[i : i + PIECE_SIZE]).digest() for i in range(0, len(data), PIECE_SIZE))
    manifest = Manifest("alpha", len(data), PIECE_SIZE, digests, '"v1"')
    storage = SparseFilePieces(str(tmp_path / "pieces"), "alpha")
    await storage.adopt(manifest)
    for n in range(manifest.piece_count):
        await storage.put(n, data[slice(*manifest.piece_range(n))])
    return data, manifest, storage


def _serve(storage: SparseFilePieces):
    def have(video_id: str) -> dict:
        if video_id != storage.video_id:
            raise KeyError(f"no video {video_id!r}")
        return {"root": storage.manifest.root, "pieceSize": storage.manifest.piece_size, "pieces": to_ranges(storage.held())}

    async def piece(video_id: str, n: int, root: str) -> bytes | None:
        if video_id != storage.video_id or root != storage.manifest.root:
            return None
        return await storage.raw(n)

    return have, piece


@contextlib.asynccontextmanager
async def _channel_pair(storage: SparseFilePieces):
    """A serving and an asking peer connection joined by one open data channel."""
    server_pc, client_pc = RTCPeerConnection(RTCConfiguration([])), RTCPeerConnection(RTCConfiguration([]))
    servers: list[ChannelServer] = []
    opened = asyncio.Event()

    @server_pc.on("datachannel")
    def on_datachannel(channel) -> None:
        servers.append(ChannelServer(channel, *_serve(storage)))

    channel = client_pc.createDataChannel("pieces")
    channel.on("open", opened.set)
    try:
        await client_pc.setLocalDescription(await client_pc.createOffer())
        await server_pc.setRemoteDescription(client_pc.localDescription)
        await server_pc.setLocalDescription(await server_pc.createAnswer())
        await client_pc.setRemoteDescription(server_pc.localDescription)
        await asyncio.wait_for(opened.wait(), CONNECT_TIMEOUT)
        yield ChannelClient(channel), servers, server_pc
    finally:
        await client_pc.close()
        await server_pc.close()


async def _read(client: ChannelClient, manifest: Manifest, n: int, start: int, end: int, got: bytearray) -> None:
    async with contextlib.aclosing(client.get_range("alpha", n, manifest.root, start, end, STALL)) as chunks:
        async for chunk in chunks:
            got += chunk


@pytest.mark.gen_test(timeout=60)
async def test_a_whole_video_crosses_a_channel_verified_with_bounded_buffering(tmp_path):
    data, manifest, storage = await _held_video(tmp_path)
    async with _channel_pair(storage) as (client, servers, _):
        have = await client.have("alpha", STALL)
        assert have["root"] == manifest.root
        assert from_ranges(have["pieces"], manifest.piece_count) == set(range(manifest.piece_count))
        video = bytearray()
        for n in range(manifest.piece_count):
            piece = bytearray()
            await _read(client, manifest, n, 0, manifest.piece_range(n)[1] - manifest.piece_range(n)[0], piece)
            assert hashlib.sha256(piece).digest() == manifest.digests[n]
            video += piece
        assert hashlib.sha256(video).digest() == hashlib.sha256(data).digest()
        # The writer outran SCTP (the buffer did fill past the low mark), yet never held more than the bound.
        assert BUFFER_LOW < servers[0].peak_buffered <= BUFFER_HIGH + CHUNK_SIZE + 4


@pytest.mark.gen_test(timeout=60)
async def test_a_slow_reader_holds_the_buffer_at_its_bound(tmp_path):
    _, manifest, storage = await _held_video(tmp_path)
    async with _channel_pair(storage) as (client, servers, _):
        got = bytearray()
        async with contextlib.aclosing(client.get_range("alpha", 0, manifest.root, 0, PIECE_SIZE, STALL)) as chunks:
            async for chunk in chunks:
                got += chunk
                await asyncio.sleep(0.001)
        assert bytes(got) == await storage.raw(0)
        assert servers[0].peak_buffered <= BUFFER_HIGH + CHUNK_SIZE + 4


@pytest.mark.gen_test(timeout=60)
async def test_a_range_inside_a_piece_and_refusals(tmp_path):
    _, manifest, storage = await _held_video(tmp_path)
    async with _channel_pair(storage) as (client, _, _):
        got = bytearray()
        await _read(client, manifest, 2, 1000, 70000, got)
        assert bytes(got) == (await storage.raw(2))[1000:70000]
        with pytest.raises(TransferError) as refused:
            async with contextlib.aclosing(client.get_range("alpha", 2, "0" * 64, 0, 10, STALL)) as chunks:
                async for _ in chunks:
                    pass
        assert refused.value.status == 404
        with pytest.raises(TransferError) as outside:
            await _read(client, manifest, 5, 0, PIECE_SIZE, bytearray())  # the last piece is shorter
        assert outside.value.status == 416
        with pytest.raises(TransferError) as unknown:
            await client.have("beta", STALL)
        assert unknown.value.status == 404


@pytest.mark.gen_test(timeout=60)
async def test_a_server_gone_midway_leaves_the_bytes_it_sent_and_the_rest_resumes_at_that_byte(tmp_path):
    _, manifest, storage = await _held_video(tmp_path)
    got = bytearray()
    async with _channel_pair(storage) as (client, _, server_pc):
        with pytest.raises(TransferError):
            async with contextlib.aclosing(client.get_range("alpha", 1, manifest.root, 0, PIECE_SIZE, STALL)) as chunks:
                async for chunk in chunks:
                    got += chunk
                    if len(got) >= PIECE_SIZE // 3:
                        await server_pc.close()
    assert PIECE_SIZE // 3 <= len(got) < PIECE_SIZE
    async with _channel_pair(storage) as (client, _, _):
        await _read(client, manifest, 1, len(got), PIECE_SIZE, got)
    assert hashlib.sha256(got).digest() == manifest.digests[1]


@pytest.mark.gen_test(timeout=60)
async def test_a_client_moved_to_another_channel_finishes_on_the_first_what_was_under_way_there(tmp_path):
    _, manifest, storage = await _held_video(tmp_path)
    async with _channel_pair(storage) as (client, _, first_server), _channel_pair(storage) as (other, _, _):
        pair = {"local": {"type": "host"}, "remote": {"type": "srflx"}}
        underway, moved = bytearray(), None
        async with contextlib.aclosing(client.get_range("alpha", 1, manifest.root, 0, PIECE_SIZE, STALL)) as chunks:
            async for chunk in chunks:
                underway += chunk
                if moved is None:
                    moved = asyncio.ensure_future(client.move_to(other.channel, pair))
                    later = bytearray()
                    await _read(client, manifest, 2, 0, PIECE_SIZE, later)
                    assert hashlib.sha256(later).digest() == manifest.digests[2]
                    # Piece 1 is still being read from the first channel, which is therefore kept.
                    assert not moved.done()
        assert hashlib.sha256(underway).digest() == manifest.digests[1]
        await asyncio.wait_for(moved, STALL)
        assert client.channel is other.channel and client.route == "direct-channel"
        # Nothing goes over the first channel any more: its end closing cuts nothing.
        await first_server.close()
        last = bytearray()
        await _read(client, manifest, 3, 0, PIECE_SIZE, last)
        assert hashlib.sha256(last).digest() == manifest.digests[3]
