"""Serving a video's bytes to a ``<video>`` element."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import BinaryIO

from tornado.iostream import SSLIOStream, StreamClosedError

from handlers.base import ApiError, BaseHandler
from media.ranges import ByteRange, ResponsePlan, http_date, plan_response
from media.store import StoreError, VideoRecord, check_video_id

log = logging.getLogger("binge.stream")


class StreamHandler(BaseHandler):
    """``GET|HEAD /videos/{id}/stream`` (and the old ``/videos/video/{id}``).

    Follows RFC 9110: ``Accept-Ranges: bytes``; one range per request
    (``a-b``, ``a-``, ``-n``) answered with 206 and ``Content-Range``; an
    unsatisfiable range with 416 and ``Content-Range: bytes */SIZE``; a strong
    ``ETag`` and ``Last-Modified`` with ``If-None-Match``/``If-Modified-Since``
    (304), ``If-Match``/``If-Unmodified-Since`` (412) and ``If-Range``. HEAD
    answers the same headers without a body.

    From a store that keeps the video in a local file the body goes out with
    sendfile(2). Otherwise it goes out in chunks of at most
    ``storage.chunk_size`` bytes, each written straight from the store's
    buffer and awaited before the next is read, so a slow client holds one
    chunk of memory, and one that leaves releases its reader at once.
    """

    async def get(self, video_id: str) -> None:
        await self._serve(video_id, include_body=True)

    async def head(self, video_id: str) -> None:
        await self._serve(video_id, include_body=False)

    async def _serve(self, video_id: str, include_body: bool) -> None:
        video = self.application.store.get(check_video_id(video_id))
        plan = plan_response(self.request.headers, video.size, video.etag, video.last_modified)
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("ETag", video.etag)
        self.set_header("Last-Modified", http_date(video.last_modified))
        self.set_header("Cache-Control", "no-cache")
        if plan.status == 304:
            self.set_status(304)
            self.finish()
            return
        if plan.status == 412:
            raise ApiError(412, "the video no longer matches the request's If-Match/If-Unmodified-Since")
        if plan.status == 416:
            self.set_header("Content-Range", f"bytes */{video.size}")
            self.write_json({"error": f"range not satisfiable: the video has {video.size} bytes", "status": 416}, 416)
            return
        self._write_headers(video, plan)
        if include_body and plan.byte_range.length:
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
        if file is not None and not isinstance(self.request.connection.stream, SSLIOStream):
            with file:
                await self._send_file(file, plan.byte_range)
        else:
            if file is not None:
                file.close()
            await self._send_chunks(video, plan.byte_range)

    async def _send_file(self, file: BinaryIO, byte_range: ByteRange) -> None:
        """Sends the range with sendfile(2): the kernel moves the bytes, Python never holds them."""
        connection = self.request.connection
        try:
            await self.flush()
            sent = await asyncio.get_running_loop().sock_sendfile(
                connection.stream.socket, file, byte_range.start, byte_range.length, fallback=False
            )
        except (StreamClosedError, OSError):
            connection.close()  # the client went away, or the file did
            return
        # Tornado checks the body against Content-Length by counting what
        # passes through HTTP1Connection.write, which sendfile bypasses.
        connection._expected_content_remaining -= sent
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
                await connection.write(first)
                async for chunk in chunks:
                    await connection.write(chunk)
            except StreamClosedError:
                return  # the client went away; aclosing releases the reader
            except StoreError as e:
                # The status line is gone: all that is left is to cut the
                # connection so the client sees a short body, not a wrong one.
                log.warning("aborting %s after a store error: %s", self.request.uri, e)
                connection.close()
                return
        self.finish()
