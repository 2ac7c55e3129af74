"""The piece protocol over a WebRTC data channel, for peers no HTTP request reaches.

It carries what ``/have`` and ``/pieces/{n}`` carry over HTTP. The asking
side sends text messages, one JSON request each, with an ``id`` it chose::

    {"id": 1, "op": "have", "video": "alpha"}
    {"id": 2, "op": "piece", "video": "alpha", "n": 3, "root": "<hex>", "start": 0, "end": 65536}

and the serving side answers each with one text message, ``{"id": 1,
"have": {...}}`` (the ``/have`` document), ``{"id": 2, "length": L}`` or
``{"id": 2, "status": 404, "error": "..."}``; a piece's ``L`` bytes follow
as binary messages, each a 4-byte big-endian request id and then bytes, in
order. ``start`` and ``end`` are offsets inside the piece (end excluded), so
a transfer that stops midway resumes at the exact byte, as with a Range.

Back-pressure: the server writes a chunk only while the channel's
``bufferedAmount`` is at most :data:`BUFFER_HIGH`, and otherwise waits for
the ``bufferedamountlow`` event (fired at :data:`BUFFER_LOW`), so a slow
peer costs a bounded buffer per channel rather than a whole piece's worth.
Chunks fit in one SCTP message (:data:`CHUNK_SIZE`, well inside what every
WebRTC stack accepts). The receiving side holds at most the range it asked
for, one piece at most. Bytes are sent as stored: the receiver verifies them
against the upstream's manifest, as for HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import AsyncIterator, Awaitable, Callable

import ujson
from aiortc import RTCDataChannel

from peers.transfer import TransferError

log = logging.getLogger("binge.peers")

# 16 KiB messages pass every SCTP stack unfragmented at the application level.
CHUNK_SIZE = 16 * 1024
BUFFER_LOW = 64 * 1024
BUFFER_HIGH = 256 * 1024
_REQUEST_ID = struct.Struct(">I")
# Largest request a server reads: a few hundred bytes are enough for any.
REQUEST_MAX = 4096


class ChannelServer:
    """Answers the requests arriving on ``channel`` from ``have`` and ``piece``.

    ``have(video_id)`` is the ``/have`` document (KeyError or ValueError for
    a video this node does not know), ``piece(video_id, n, root)`` the
    stored bytes of piece ``n`` of the manifest ``root`` names, or None.
    """

    def __init__(
        self,
        channel: RTCDataChannel,
        have: Callable[[str], dict],
        piece: Callable[[str, int, str], Awaitable[bytes | None]],
    ) -> None:
        self.channel = channel
        self._have = have
        self._piece = piece
        # One gate for every answer: the bound holds for the channel, not per request.
        self._drained = asyncio.Event()
        self._drained.set()
        self._sending = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        # Largest bufferedAmount seen after a write: what the bound is checked by.
        self.peak_buffered = 0
        channel.bufferedAmountLowThreshold = BUFFER_LOW
        channel.on("bufferedamountlow", self._drained.set)
        channel.on("message", self._on_message)
        channel.on("close", self._cancel_all)

    def _on_message(self, message: str | bytes) -> None:
        if not isinstance(message, str) or len(message) > REQUEST_MAX:
            log.info("channel %s: dropping a request that is not a short JSON text", self.channel.label)
            return
        task = asyncio.ensure_future(self._answer(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _answer(self, message: str) -> None:
        try:
            request = ujson.loads(message)
            request_id = request["id"]
            if not isinstance(request_id, int) or not 0 <= request_id < 2**32:
                raise ValueError
        except (ValueError, TypeError, KeyError):
            log.info("channel %s: a request without a JSON object and id", self.channel.label)
            return
        try:
            if request.get("op") == "have":
                await self._send_text({"id": request_id, "have": self._have(str(request.get("video")))})
            elif request.get("op") == "piece":
                await self._answer_piece(request_id, request)
            else:
                await self._send_error(request_id, 400, f"unknown op {request.get('op')!r}")
        except (KeyError, ValueError, TypeError) as e:
            await self._send_error(request_id, 404 if isinstance(e, KeyError) else 400, str(e))

    async def _answer_piece(self, request_id: int, request: dict) -> None:
        video_id, n, root, start, end = (request.get(k) for k in ("video", "n", "root", "start", "end"))
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (n, start, end)) or not isinstance(video_id, str):
            raise ValueError("piece: video must be a string, n, start and end whole numbers")
        data = await self._piece(video_id, n, root)
        if data is None:
            await self._send_error(request_id, 404, f"this node does not hold piece {n} of that manifest of {video_id!r}")
            return
        if not 0 <= start < end <= len(data):
            await self._send_error(request_id, 416, f"bytes {start}-{end} are not inside piece {n} of {len(data)} bytes")
            return
        await self._send_text({"id": request_id, "length": end - start})
        prefix = _REQUEST_ID.pack(request_id)
        view = memoryview(data)
        for offset in range(start, end, CHUNK_SIZE):
            await self._send(prefix + view[offset : min(offset + CHUNK_SIZE, end)])

    async def _send_error(self, request_id: int, status: int, error: str) -> None:
        await self._send_text({"id": request_id, "status": status, "error": error})

    async def _send_text(self, obj: dict) -> None:
        await self._send(ujson.dumps(obj))

    async def _send(self, message: str | bytes) -> None:
        async with self._sending:
            while self.channel.bufferedAmount > BUFFER_HIGH:
                self._drained.clear()
                await self._drained.wait()
            if self.channel.readyState != "open":
                raise asyncio.CancelledError
            self.channel.send(message)
            self.peak_buffered = max(self.peak_buffered, self.channel.bufferedAmount)


class ChannelClient:
    """Asks a peer's :class:`ChannelServer` on ``channel`` for have lists and pieces.

    ``pair`` is the ICE candidate pair the channel runs over, as
    :func:`peers.links.selected_pair` gives it, when known.
    """

    def __init__(self, channel: RTCDataChannel, pair: dict | None = None) -> None:
        self._next_id = 0
        # Each request under way: where its answers go, and the channel it went over (after a move it finishes there).
        self._answers: dict[int, tuple[asyncio.Queue, RTCDataChannel]] = {}
        self._request_ended = asyncio.Event()
        self._carry_on(channel, pair)

    def _carry_on(self, channel: RTCDataChannel, pair: dict | None) -> None:
        self.channel, self.pair = channel, pair
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._on_close(channel))

    @property
    def route(self) -> str:
        """``"relayed-channel"`` when an end of its pair is a TURN relay, else ``"direct-channel"`` (NATs punched, or a LAN)."""
        ends = (self.pair["local"]["type"], self.pair["remote"]["type"]) if self.pair else ()
        return "relayed-channel" if "relay" in ends else "direct-channel"

    async def move_to(self, channel: RTCDataChannel, pair: dict | None) -> None:
        """Sends every request from now on over ``channel``; returns once none is left on the channel before.

        Nothing is cut short: a piece under way on the old channel arrives
        there, and the caller closes that channel afterwards.
        """
        previous = self.channel
        self._carry_on(channel, pair)
        while any(over is previous for _, over in self._answers.values()):
            self._request_ended.clear()
            await self._request_ended.wait()

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            try:
                answer = ujson.loads(message)
                under_way = self._answers.get(answer["id"])
            except (ValueError, TypeError, KeyError):
                return
        elif len(message) >= _REQUEST_ID.size:
            (request_id,) = _REQUEST_ID.unpack_from(message)
            under_way, answer = self._answers.get(request_id), message[_REQUEST_ID.size :]
        else:
            return  # too short to name a request
        if under_way is not None:
            under_way[0].put_nowait(answer)

    def _on_close(self, channel: RTCDataChannel) -> None:
        for queue, over in self._answers.values():
            if over is channel:
                queue.put_nowait(None)

    def _ask(self, request: dict) -> tuple[int, asyncio.Queue]:
        if self.channel.readyState != "open":
            raise TransferError(f"channel {self.channel.label}: not open")
        self._next_id = (self._next_id + 1) % 2**32
        queue: asyncio.Queue = asyncio.Queue()
        self._answers[self._next_id] = queue, self.channel
        self.channel.send(ujson.dumps({"id": self._next_id, **request}))
        return self._next_id, queue

    def _end(self, request_id: int) -> None:
        del self._answers[request_id]
        self._request_ended.set()

    async def _next(self, queue: asyncio.Queue, timeout: float, what: str) -> object:
        try:
            answer = await asyncio.wait_for(queue.get(), timeout)
        except asyncio.TimeoutError:
            raise TransferError(f"channel {self.channel.label}: nothing for {timeout:g} s {what}") from None
        if answer is None:
            raise TransferError(f"channel {self.channel.label}: closed {what}")
        return answer

    async def have(self, video_id: str, timeout: float) -> dict:
        """The peer's ``/have`` document for ``video_id``; TransferError if it does not give one."""
        request_id, queue = self._ask({"op": "have", "video": video_id})
        try:
            answer = await self._next(queue, timeout, "waiting for a have list")
        finally:
            self._end(request_id)
        if not isinstance(answer, dict) or not isinstance(answer.get("have"), dict):
            raise _refusal(answer, f"have of {video_id!r}")
        return answer["have"]

    async def get_range(
        self, video_id: str, n: int, root: str, start: int, end: int, stall: float
    ) -> AsyncIterator[bytes]:
        """Yields bytes ``start`` to ``end`` of piece ``n`` as they arrive, as :func:`peers.transfer.get_range` does.

        Every failure is a TransferError raised after the bytes that did
        arrive were yielded, so the caller knows where to resume.
        """
        what = f"piece {n} of {video_id!r}"
        request_id, queue = self._ask({"op": "piece", "video": video_id, "n": n, "root": root, "start": start, "end": end})
        try:
            head = await self._next(queue, stall, f"waiting for {what}")
            if not isinstance(head, dict) or head.get("length") != end - start:
                raise _refusal(head, what)
            remaining = end - start
            while remaining:
                chunk = await self._next(queue, stall, f"{remaining} bytes short of {what}")
                if not isinstance(chunk, bytes) or len(chunk) > remaining:
                    raise TransferError(f"channel {self.channel.label}: {what} overran its length")
                remaining -= len(chunk)
                yield chunk
        finally:
            self._end(request_id)


def _refusal(answer: object, what: str) -> TransferError:
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        status = answer.get("status") if isinstance(answer.get("status"), int) else None
        return TransferError(f"peer refused {what}", status, answer["error"])
    return TransferError(f"{what}: not an answer of the channel protocol")
