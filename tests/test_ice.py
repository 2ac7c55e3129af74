"""ICE servers: config, the origin's TURN credentials, and a real coturn relaying a real data channel with them.

The peer connections are signalled through the origin's presence
websocket (presence.signalling), as two peers behind NATs would be, and
may only use relayed candidates: the data channel opens only if coturn
took the credentials the origin handed out.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection, RTCSessionDescription

from harness.http import fetch_json, get_json
from harness.media import write_random_video
from harness.presence import Client
from harness.turn import TurnServer, turnserver
from peers.ice import turn_credential

TTL = 600
# Seconds for ICE through a TURN server on loopback and the DTLS handshake, on a machine 3x slower.
CONNECT_TIMEOUT = 20.0


def test_a_credential_is_the_expiry_and_user_then_an_hmac_sha1_of_them_in_base64():
    username, credential = turn_credential("secret", "node1", 1_800_000_000)
    assert username == "1800000000:node1"
    assert len(credential) == 28 and credential.endswith("=")  # 20 bytes of SHA-1, in base64
    assert credential != turn_credential("other", "node1", 1_800_000_000)[1]
    assert credential != turn_credential("secret", "node2", 1_800_000_000)[1]


def test_a_credential_matches_one_made_by_openssl():
    # printf %s "1700003600:node-a" | openssl dgst -sha1 -hmac "north-wind" -binary | base64
    assert turn_credential("north-wind", "node-a", 1700003600) == ("1700003600:node-a", "t6Z9r/GB4FBQxsuPQUDX3VwDtME=")


@pytest.fixture
def turn(tmp_path):
    assert turnserver(), "coturn's turnserver is not installed: run scripts/setup --test"
    with TurnServer(tmp_path / "turn", "s3cret-" + os.urandom(8).hex()) as server:
        yield server


def _relay_only(servers: list[dict]) -> RTCConfiguration:
    return RTCConfiguration([RTCIceServer(**server) for server in servers],
                            iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def test_the_origin_hands_out_credentials_coturn_accepts_and_a_channel_opens_through_it(servers, turn):
    stun = f"stun:127.0.0.1:{turn.port}"
    origin = servers("origin", peer={"ice_servers": [stun, turn.turn_url()], "turn_secret": turn.secret,
                                     "turn_ttl": TTL})
    write_random_video(os.path.join(origin.library, "clip.mp4"), 100_000, seed=3)

    async def scenario():
        origin.start()
        await origin.ready(video="clip")
        status, body, response = await fetch_json(f"{origin.url}/ice-servers", headers={"Binge-Via": "node1"})
        assert status == 200 and response.headers["Cache-Control"] == "no-store"
        assert body["ttl"] == TTL and body["iceServers"][0] == {"urls": [stun]}
        turn_entry = body["iceServers"][1]
        expiry, user = turn_entry["username"].split(":")
        assert user == "node1" and abs(int(expiry) - (time.time() + TTL)) < 30
        assert turn_entry["urls"] == [turn.turn_url()]
        # A player (no Binge-Via) gets credentials of its own.
        assert (await get_json(f"{origin.url}/ice-servers"))["iceServers"][1]["username"].endswith(":viewer")

        offerer, answerer = await Client().connect(origin), await Client().connect(origin)
        for client in (offerer, answerer):
            client.send({"type": "watch", "video": "clip"})
        await answerer.presence_until(lambda p: len(p["videos"].get("clip", [])) == 2, 10)
        a, b = RTCPeerConnection(_relay_only(body["iceServers"])), RTCPeerConnection(_relay_only(body["iceServers"]))
        received: asyncio.Future = asyncio.get_running_loop().create_future()

        @b.on("datachannel")
        def on_datachannel(channel) -> None:
            channel.on("message", lambda message: received.done() or received.set_result(message))

        channel = a.createDataChannel("pieces")
        channel.on("open", lambda: channel.send("through the relay"))
        try:
            await a.setLocalDescription(await a.createOffer())
            assert "typ relay" in a.localDescription.sdp and "typ host" not in a.localDescription.sdp
            offerer.send({"type": "signal", "to": answerer.socket_id,
                          "data": {"type": a.localDescription.type, "sdp": a.localDescription.sdp}})
            offer = await answerer.relayed()
            assert offer["from"] == offerer.socket_id
            await b.setRemoteDescription(RTCSessionDescription(**offer["data"]))
            await b.setLocalDescription(await b.createAnswer())
            answerer.send({"type": "signal", "to": offer["from"],
                           "data": {"type": b.localDescription.type, "sdp": b.localDescription.sdp}})
            answer = await offerer.relayed()
            await a.setRemoteDescription(RTCSessionDescription(**answer["data"]))
            assert await asyncio.wait_for(received, CONNECT_TIMEOUT) == "through the relay"
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("case", ["wrong secret", "expired"])
def test_coturn_refuses_a_credential_of_another_secret_or_past_its_expiry(turn, case):
    secret = "not-" + turn.secret if case == "wrong secret" else turn.secret
    expiry = int(time.time()) + (TTL if case == "wrong secret" else -60)
    username, credential = turn_credential(secret, "node1", expiry)

    async def gather() -> str:
        pc = RTCPeerConnection(_relay_only([{"urls": [turn.turn_url()], "username": username,
                                             "credential": credential}]))
        try:
            pc.createDataChannel("pieces")
            await pc.setLocalDescription(await pc.createOffer())
            return pc.localDescription.sdp
        finally:
            await pc.close()

    assert "typ relay" not in asyncio.run(gather())
