"""The catalog: videos, their captions and posters."""

from __future__ import annotations

from captions.convert import CaptionError
from handlers.base import ApiError, BaseHandler
from media.catalog import sorted_videos, video_json
from media.store import VideoRecord, check_video_id


class CatalogHandler(BaseHandler):
    """The catalog's JSON: ``no-cache``, since video objects carry live viewer
    counts, with an ETag over the JSON (see BaseHandler) so that asking again
    costs a 304 when nothing changed."""

    def video(self, video_id: str) -> VideoRecord:
        return self.application.store.get(check_video_id(video_id))

    def video_json(self, video: VideoRecord) -> dict:
        return video_json(video, self.application.presence.watchers(video.id))


class VideoListHandler(CatalogHandler):
    """``GET /videos``: every video object, sorted by name.

    On a peer node, 508 with a message naming the loop while its upstreams
    loop; asked by a node below before it ever read its upstream's catalog,
    it reads it first, and answers 503 (or 508) if it cannot (see
    :meth:`peers.catalog.UpstreamCatalog.servable`).
    """

    async def get(self) -> None:
        catalog = await self.application.store.servable()
        self.set_header("Cache-Control", "no-cache")
        self.write_json([self.video_json(v) for v in sorted_videos(catalog.values())])


class VideoHandler(CatalogHandler):
    """``GET /videos/{id}`` (and the old ``/videos/{id}/data``): one video object, 404 if unknown."""

    def get(self, video_id: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.write_json(self.video_json(self.video(video_id)))


class CaptionListHandler(CatalogHandler):
    """``GET /videos/{id}/captions``: the video's caption tracks."""

    def get(self, video_id: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.write_json(self.video_json(self.video(video_id))["captions"])


class CaptionHandler(CatalogHandler):
    """``GET /videos/{id}/captions/{lang}[.vtt]``: one track as WebVTT.

    SRT sources are converted on first use and cached until the source
    changes. The old ``/videos/video/{id}/caption`` path gets the default
    track: English if there is one, else the first.
    """

    async def get(self, video_id: str, lang: str | None = None) -> None:
        video = self.video(video_id)
        if not video.captions:
            raise ApiError(404, f"video {video.id!r} has no captions")
        if lang is None:
            lang = video.default_caption().lang
        track = video.caption(lang)
        if track is None:
            raise ApiError(404, f"video {video.id!r} has no {lang!r} captions")
        try:
            vtt = await self.application.captions.vtt(self.application.store, video, track)
        except CaptionError as e:
            raise ApiError(422, f"the {lang!r} captions of video {video.id!r} cannot be used: {e}") from None
        self.set_header("Content-Type", "text/vtt; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(vtt.encode("utf-8"))


class PosterHandler(CatalogHandler):
    """``GET /videos/{id}/poster``: the poster JPEG, or a redirect to the metadata's poster URL.

    Kept for five minutes, then revalidated by its ETag (a hash of the
    image). It has no Last-Modified: the store knows when the video
    changed, not when its poster did.
    """

    async def get(self, video_id: str) -> None:
        video = self.video(video_id)
        if not video.has_poster:
            if video.poster_url:
                self.redirect(video.poster_url)
                return
            raise ApiError(404, f"video {video.id!r} has no poster")
        image = await self.application.store.poster(video)
        self.set_header("Content-Type", "image/jpeg")
        self.set_header("Cache-Control", "max-age=300")
        self.finish(image)
