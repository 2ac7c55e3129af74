"""Data channels to peers that no HTTP request reaches, set up through signalling.

A node whose requests to a peer's ``public_url`` get no answer at all (the
peer is behind a NAT, say) asks it over a WebRTC data channel instead
(:mod:`peers.channel`). The node is its own signalling endpoint: its
:class:`peers.announce.Announcer` socket at the upstream for the video,
through which it sends the peer's socket (the ``socketId`` the upstream's
``/peers`` lists) ``{"type": "signal", "to": SOCKET, "data": {"type":
"offer", "sdp"}}`` and gets ``{"type": "answer", "sdp"}`` back (see
:mod:`presence.signalling`). aiortc gathers every ICE candidate before it
gives a description, so one offer and one answer are all there is; ICE
servers are the upstream's ``/ice-servers`` (STUN, TURN with fresh
credentials), asked for each connection.

A node answers offers the same way: at most ``MAX_ACCEPTED`` peer
connections at once, each with a :class:`~peers.channel.ChannelServer`
answering ``have`` and ``piece`` from what the node holds, as ``/have``
and ``/pieces/{n}`` do. A dialled channel is kept while it stays open, and
dialled anew when it closes. A channel that opens over a TURN relay tries
once for a direct pair beside it and, if one opens, moves its requests
there (see ``PeerLinks._upgrade``): a relay costs its operator bandwidth,
and a direct path is usually the shorter one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from aiortc import RTCConfiguration, RTCDataChannel, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from media.store import StoreError
from peers.channel import ChannelClient, ChannelServer
from peers.transfer import TransferError

log = logging.getLogger("binge.peers")

# Seconds for the answer to come back through the presence sockets and for
# ICE and DTLS to open the channel; on loopback well under one.
CONNECT_TIMEOUT = 10.0
MAX_ACCEPTED = 32


class PeerLinks:
    """This node's data channels to and from peers, for every video.

    ``send(video_id, message)`` writes a signal on the node's socket at the
    upstream for the video (False when none is open); ``ice_servers()``
    gives the RTCIceServer dicts to use; ``have`` and ``piece`` are the
    :class:`~peers.channel.ChannelServer`'s.
    """

    def __init__(
        self,
        send: Callable[[str, dict], bool],
        ice_servers: Callable[[], Awaitable[list[dict]]],
        have: Callable[[str], dict],
        piece: Callable[[str, int, str], Awaitable[bytes | None]],
    ) -> None:
        self._send = send
        self._ice_servers = ice_servers
        self._have = have
        self._piece = piece
        # (video id, peer's address) -> its open channel, or the dial under way.
        self._clients: dict[tuple[str, str], ChannelClient] = {}
        self._dialling: dict[tuple[str, str], asyncio.Task] = {}
        # A relayed channel's try for a direct one (see _upgrade).
        self._upgrades: dict[tuple[str, str], asyncio.Task] = {}
        self._answers: dict[tuple[str, str], asyncio.Future] = {}
        self._accepted: set[RTCPeerConnection] = set()
        self._connections: set[RTCPeerConnection] = set()

    async def dial(self, video_id: str, address: str) -> ChannelClient:
        """An open channel to the peer whose socket is ``address``; TransferError if none opens."""
        key = (video_id, address)
        client = self._clients.get(key)
        if client is not None and client.channel.readyState == "open":
            return client
        task = self._dialling.get(key)
        if task is None:
            task = self._dialling[key] = asyncio.ensure_future(self._dial(video_id, address))
            task.add_done_callback(lambda _: self._dialling.pop(key, None))
        return await asyncio.shield(task)

    async def _dial(self, video_id: str, address: str) -> ChannelClient:
        key = (video_id, address)
        servers = await self._servers()
        pc, channel = await self._open(video_id, address, servers)
        client = self._clients[key] = ChannelClient(channel, selected_pair(pc))
        channel.on("close", lambda: self._closed(key, client, channel, pc))
        log.info("data channel open to peer %s for %s (%s: %s)", address, video_id, client.route, client.pair)
        stun = [s for s in servers if all(url.startswith("stun") for url in _urls(s))]
        if client.route == "relayed-channel" and stun:
            self._upgrades[key] = asyncio.ensure_future(self._upgrade(video_id, address, client, pc, stun))
        return client

    async def _upgrade(self, video_id: str, address: str, client: ChannelClient, relayed: RTCPeerConnection,
                       stun: list[dict]) -> None:
        """Moves ``client`` from its relayed channel to a direct one, if one opens with ``stun`` alone.

        aioice nominates the first pair whose check succeeds, and the direct
        pair's first check is often dropped by the far router (no packet has
        gone out from there yet) and resent only 500 ms later, by when the
        relayed pair may have won. One more connection without TURN has
        nothing to lose that race to; where the NATs let no direct pair
        through (symmetric ones), it times out and the relay stays.
        """
        key = (video_id, address)
        try:
            pc, channel = await self._open(video_id, address, stun)
        except TransferError as e:
            log.info("peer %s for %s stays relayed: %s", address, video_id, e)
            return
        finally:
            if self._upgrades.get(key) is asyncio.current_task():
                del self._upgrades[key]
        if self._clients.get(key) is not client:  # the relayed channel closed meanwhile
            await self._drop(pc)
            return
        channel.on("close", lambda: self._closed(key, client, channel, pc))
        pair = selected_pair(pc)
        log.info("data channel to peer %s for %s moves to a direct pair (%s)", address, video_id, pair)
        await client.move_to(channel, pair)
        await self._drop(relayed)

    async def _open(self, video_id: str, address: str, servers: list[dict]) -> tuple[RTCPeerConnection, RTCDataChannel]:
        """A peer connection to ``address`` through ``servers`` and its open data channel; TransferError if none opens."""
        key = (video_id, address)
        pc = self._connection(servers)
        channel = pc.createDataChannel("pieces")
        opened = asyncio.Event()
        channel.on("open", opened.set)
        answer = self._answers[key] = asyncio.get_running_loop().create_future()
        try:
            await pc.setLocalDescription(await pc.createOffer())
            if not self._send(video_id, _signal(address, pc.localDescription)):
                raise TransferError(f"peer {address}: no socket at the upstream for {video_id!r} to signal on")
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await pc.setRemoteDescription(await answer)
                await opened.wait()
        except TimeoutError:
            await self._drop(pc)
            raise TransferError(f"peer {address}: no data channel within {CONNECT_TIMEOUT:g} s") from None
        except BaseException:
            await self._drop(pc)
            raise
        finally:
            if self._answers.get(key) is answer:
                del self._answers[key]
        return pc, channel

    def _closed(self, key: tuple[str, str], client: ChannelClient, channel: RTCDataChannel,
                pc: RTCPeerConnection) -> None:
        if channel is client.channel and self._clients.get(key) is client:
            del self._clients[key]
            upgrade = self._upgrades.pop(key, None)
            if upgrade is not None:
                upgrade.cancel()
        asyncio.ensure_future(self._drop(pc))

    def on_signal(self, video_id: str, message: dict) -> None:
        """A signal, or a signal's error, addressed to this node itself (see presence.signalling)."""
        if message.get("type") == "error":
            answer = self._answers.get((video_id, message.get("to")))
            if answer is not None and not answer.done():
                answer.set_exception(TransferError(f"peer {message.get('to')}: not reached", None, message.get("error")))
            return
        sender, data = message.get("from"), message.get("data")
        if not isinstance(sender, str) or not isinstance(data, dict) or not isinstance(data.get("sdp"), str):
            log.info("a signal that is not an offer or answer: %.200r", message)
            return
        if data.get("type") == "answer":
            answer = self._answers.get((video_id, sender))
            if answer is not None and not answer.done():
                answer.set_result(RTCSessionDescription(sdp=data["sdp"], type="answer"))
        elif data.get("type") == "offer":
            asyncio.ensure_future(self._accept(video_id, sender, data["sdp"]))

    async def _accept(self, video_id: str, sender: str, sdp: str) -> None:
        if len(self._accepted) >= MAX_ACCEPTED:
            log.info("refusing an offer from %s: %d peer connections accepted already", sender, MAX_ACCEPTED)
            return
        pc = self._connection(await self._servers())
        self._accepted.add(pc)
        pc.on("datachannel", lambda channel: self._serve(channel, pc))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._gone(pc)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except ValueError as e:  # aiortc's word for an offer it cannot take
            log.info("refusing an offer from %s: %s", sender, e)
            self._gone(pc)
            return
        if not self._send(video_id, _signal(sender, pc.localDescription)):
            self._gone(pc)

    def _serve(self, channel: RTCDataChannel, pc: RTCPeerConnection) -> None:
        ChannelServer(channel, self._have, self._piece)
        channel.on("close", lambda: self._gone(pc))

    def _gone(self, pc: RTCPeerConnection) -> None:
        self._accepted.discard(pc)
        asyncio.ensure_future(self._drop(pc))

    async def _servers(self) -> list[dict]:
        try:
            return await self._ice_servers()
        except StoreError as e:
            log.info("no ICE servers from the upstream (%s); host candidates only", e)
            return []

    def _connection(self, servers: list[dict]) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration([
            RTCIceServer(s["urls"], s.get("username"), s.get("credential")) for s in servers
        ]))
        self._connections.add(pc)
        return pc

    async def _drop(self, pc: RTCPeerConnection) -> None:
        self._connections.discard(pc)
        await pc.close()

    async def close(self) -> None:
        for task in [*self._dialling.values(), *self._upgrades.values()]:
            task.cancel()
        await asyncio.gather(*(self._drop(pc) for pc in list(self._connections)), return_exceptions=True)


def selected_pair(pc: RTCPeerConnection) -> dict:
    """The ICE candidate pair ``pc`` carries its data over: ``{"local"|"remote": {"type", "address", "port"}}``.

    ``type`` is ICE's: host, srflx, prflx (learnt from a check) or relay.
    """
    # aiortc 1.16 has no getSelectedCandidatePair(); its ICE connection (aioice) keeps the nominated pair per component.
    pair = pc.sctp.transport.transport._connection._nominated[1]

    def end(candidate, address: tuple[str, int]) -> dict:
        return {"type": candidate.type, "address": address[0], "port": address[1]}

    return {"local": end(pair.local_candidate, pair.local_addr), "remote": end(pair.remote_candidate, pair.remote_addr)}


def _urls(server: dict) -> list[str]:
    urls = server["urls"]
    return [urls] if isinstance(urls, str) else urls


def _signal(to: str, description: RTCSessionDescription) -> dict:
    return {"type": "signal", "to": to, "data": {"type": description.type, "sdp": description.sdp}}
