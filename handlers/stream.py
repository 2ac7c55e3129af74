"""Serving a video's bytes to a ``<video>`` element."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import BinaryIO

from tornado.iostream import StreamClosedError

from handlers import tornado_internals
from handlers.base import ApiError, BaseHandler
from media.ranges import ByteRange, ResponsePlan, http_date, plan_response
from media.store import StoreError, VideoRecord, check_video_id

log = logging.getLogger("binge.stream")

# Bytes handed to one sendfile(2) call: the unit a client must take within
# server.stall_timeout, big enough that the per-call cost does not show.
SENDFILE_SEGMENT = 4 * 1024 * 1024


async def sendfile(sock: socket.socket, file: BinaryIO, offset: int, count: int) -> int:
    """Sends ``count`` bytes of ``file`` from ``offset`` to the non-blocking ``sock`` with sendfile(2).

    Returns the bytes sent, fewer than ``count`` only if the file ended.
    While the socket is full it waits for it to drain, watched the whole
    time: asyncio's ``loop.sock_sendfile`` instead stops watching and watches
    anew on every wakeup, two epoll_ctl(2) calls and a selector key each
    time, which a paced player (a wakeup for every read it makes) turns into
    a fifth of the loop's time. Cancelled (a timeout), it stops watching.
    """
    loop = asyncio.get_running_loop()
    fd, file_fd = sock.fileno(), file.fileno()
    done = loop.create_future()
    sent = 0

    def send() -> None:
        nonlocal sent
        if done.done():
            return
        try:
            n = os.sendfile(fd, file_fd, offset + sent, count - sent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            done.set_exception(e)
            return
        sent += n
        if n == 0 or sent == count:
            done.set_result(sent)

    send()
    if done.done():
        return done.result()
    loop.add_writer(fd, send)
    try:
        return await done
    finally:
        loop.remove_writer(fd)


class StreamHandler(BaseHandler):
    """``GET|HEAD /videos/{id}/stream`` (and the old ``/videos/video/{id}``).

    Follows RFC 9110: ``Accept-Ranges: bytes``; one range per request
    (``a-b``, ``a-``, ``-n``) answered with 206 and ``Content-Range``; an
    unsatisfiable range with 416 and ``Content-Range: bytes */SIZE``; a strong
    ``ETag`` and ``Last-Modified`` (never past the Date) with
    ``If-None-Match``/``If-Modified-Since`` (304), ``If-Match``/
    ``If-Unmodified-Since`` (412) and ``If-Range``. HEAD answers a GET's
    headers without a body, and as a GET of the whole video: only GET
    defines Range.

    From a store that keeps the video in a local file the body goes out with
    sendfile(2). Otherwise it goes out in chunks of at most
    ``storage.chunk_size`` bytes, each written straight from the store's
    buffer and awaited before the next is read, so a slow client holds one
    chunk of memory, and one that leaves releases its reader at once. Either
    way a client that stops reading is disconnected after
    ``server.stall_timeout``.
    """

    async def get(self, video_id: str) -> None:
        await self._serve(video_id, include_body=True)

    async def head(self, video_id: str) -> None:
        await self._serve(video_id, include_body=False)

    async def _serve(self, video_id: str, include_body: bool) -> None:
        video = self.application.store.get(check_video_id(video_id))
        plan = plan_response(self.request.headers, self.request.method, video.size, video.etag, video.last_modified,
                             self.date)
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("ETag", video.etag)
        self.set_header("Last-Modified", http_date(plan.last_modified))
        self.set_header("Cache-Control", "no-cache")
        if plan.status == 304:
            self.set_status(304)
            self.finish()
            return
        if plan.status == 412:
            raise ApiError(412, "the video no longer matches the request's If-Match/If-Unmodified-Since")
        if plan.status == 416:
            self.refuse_range(video.size, "the video")
            return
        self._write_headers(video, plan)
        if include_body and plan.byte_range.length:
            # One slot per body in flight, refused (429) past limits.streams_per_ip.
            with self.application.streams.hold(self.client_ip(), self.request.connection.close):
                self.body_bytes = 0
                await self._write_body(video, plan)
        else:
            self.finish()

    def _write_headers(self, video: VideoRecord, plan: ResponsePlan) -> None:
        byte_range = plan.byte_range
        self.set_status(plan.status)
        self.set_header("Content-Type", video.mime_type)
        self.set_header("Content-Length", byte_range.length)
        if plan.status == 206:
            self.set_header("Content-Range", byte_range.content_range(video.size))

    async def _write_body(self, video: VideoRecord, plan: ResponsePlan) -> None:
        store = self.application.store
        file = store.open_file(video)
        if file is not None and tornado_internals.sends_plain(self.request.connection):
            with file:
                await self._send_file(file, plan.byte_range)
        else:
            if file is not None:
                file.close()
            await self._send_chunks(video, plan.byte_range)

    async def _send_file(self, file: BinaryIO, byte_range: ByteRange) -> None:
        """Sends the range with sendfile(2): the kernel moves the bytes, Python never holds them.

        The range goes in segments of ``SENDFILE_SEGMENT`` bytes; a client
        that does not take one within ``server.stall_timeout`` is disconnected.
        """
        connection = self.request.connection
        sent = 0
        try:
            await self.flush()
            sock = tornado_internals.socket_of(connection)
            if sock is None:
                return  # the client hung up meanwhile
            # The loop watches the socket while sendfile waits, through a
            # duplicate: Tornado closes its own the moment the client hangs up,
            # and a loop left watching a closed fd number (which the next
            # connection may reuse) breaks that connection's registration.
            with sock.dup() as out:
                while sent < byte_range.length:
                    count = min(SENDFILE_SEGMENT, byte_range.length - sent)
                    async with asyncio.timeout(self.application.config.server.stall_timeout):
                        done = await sendfile(out, file, byte_range.start + sent, count)
                    sent += done
                    self._sent(done)
                    if done < count:
                        # The file shrank. The status line is gone: cut the connection
                        # so the client sees a short body, as _send_chunks does on a
                        # store error (finish() would raise, logged as a crash).
                        log.warning("aborting %s: the file shrank after %d bytes", self.request.uri, sent)
                        connection.close()
                        return
        except TimeoutError:
            self._drop_stalled()
            return
        except (StreamClosedError, OSError):
            # The client went away, or the file did.
            connection.close()
            return
        tornado_internals.body_sent_around(connection, sent)
        self.finish()

    async def _send_chunks(self, video: VideoRecord, byte_range: ByteRange) -> None:
        """Sends the range as the store reads it, one chunk in memory at a time."""
        chunks = self.application.store.read(video, byte_range.start, byte_range.end, self.application.config.storage.chunk_size)
        connection = self.request.connection
        async with contextlib.aclosing(chunks):
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                raise StoreError(f"video {video.id!r} ended early") from None
            # Headers go out only once the store has produced bytes, so a store
            # failure before that is still a clean JSON error.
            try:
                await self.flush()
                # Chunks go to the connection directly: RequestHandler.write
                # would copy each into a buffer of its own first.
                await self._write_chunk(first)
                async for chunk in chunks:
                    await self._write_chunk(chunk)
            except StreamClosedError:
                return  # the client went away; aclosing releases the reader
            except StoreError as e:
                # The status line is gone: all that is left is to cut the
                # connection so the client sees a short body, not a wrong one.
                log.warning("aborting %s after a store error: %s", self.request.uri, e)
                connection.close()
                return
        self.finish()

    async def _write_chunk(self, chunk: memoryview) -> None:
        """Writes one chunk of the body; a client that does not take it within
        ``server.stall_timeout`` is disconnected, and this raises StreamClosedError."""
        try:
            async with asyncio.timeout(self.application.config.server.stall_timeout):
                await self.request.connection.write(chunk)
        except TimeoutError:
            self._drop_stalled()
            raise StreamClosedError() from None
        self._sent(len(chunk))

    def _drop_stalled(self) -> None:
        """Disconnects a client that took nothing for ``server.stall_timeout`` seconds."""
        log.info("dropping %s: it stopped reading %s", self.client_ip(), self.request.uri)
        self.request.connection.close()

    def _sent(self, size: int) -> None:
        """Counts body bytes handed to the socket, for the access line and the metrics."""
        self.body_bytes += size
        self.application.metrics.streamed.inc(size)
