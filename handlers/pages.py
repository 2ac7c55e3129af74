"""The viewer's pages: the catalog at ``/`` and the player at ``/watch/{id}``, as HTML.

Pages are Tornado templates (autoescaped) around the same video objects the
JSON API serves; the page scripts then keep them live over the presence
websocket. Errors on these routes are HTML pages a person can read, unlike the
API's JSON errors. Static files are served with ``static_url()``'s content
hash in the URL, so a versioned URL can be cached for good.
"""

from __future__ import annotations

import datetime
import os
import secrets
import zlib
from typing import Awaitable

import tornado.web

import api_paths
from handlers import tornado_internals
from handlers.base import allowed_methods, stamp_date
from handlers.catalog import CatalogHandler
from media.catalog import sorted_videos
from media.ranges import sent_last_modified
from media.store import StoreError

STATIC_PATH = os.path.join(os.path.dirname(__file__), "static")
TEMPLATE_PATH = os.path.join(os.path.dirname(__file__), "templates")
# A versioned static URL names one exact content: browsers may keep it for a year unasked.
IMMUTABLE = "max-age=31536000, immutable"

ERROR_TEXT = {
    404: ("Not found", "We couldn't find that page."),
    500: ("Something went wrong", "Something went wrong on our side. Please try again in a moment."),
    503: ("Temporarily unavailable", "The library can't be reached right now. Please try again in a moment."),
}


def clock(seconds: float | None) -> str | None:
    """A running time as a player shows it: ``4:05``, ``1:02:03``; None when unknown."""
    if seconds is None:
        return None
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def size_text(size: int) -> str:
    """A byte count in the largest unit that keeps it at or above one: ``9.7 MB``."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            break
        value /= 1024
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


def viewers_text(count: int) -> str:
    """What a card says about its audience; the page script writes the same words."""
    return "No one watching" if count == 0 else f"{count} watching"


def hue(video_id: str) -> int:
    """One of eight placeholder colours, the same for a video every time."""
    return zlib.crc32(video_id.encode()) % 8


def initials(name: str) -> str:
    """Up to two letters standing for ``name`` on a placeholder poster."""
    words = [w for w in name.split() if w[:1].isalnum()]
    return "".join(w[0] for w in words[:2]).upper() or "?"


def watch_path(video_id: str) -> str:
    """The path of a video's player page."""
    return api_paths.WATCH_PAGE(video_id=video_id)


TEMPLATE_HELPERS = {f.__name__: f for f in (clock, size_text, viewers_text, hue, initials, watch_path)}


class StaticFiles(tornado.web.StaticFileHandler):
    """Static assets: cached for a year when the URL carries ``?v=``, revalidated on every use otherwise.

    As the API's resources: Last-Modified never past the Date, Range on GET
    only, ``Allow`` on a 405.
    """

    def set_default_headers(self) -> None:
        self.date = stamp_date(self)

    def get_modified_time(self) -> datetime.datetime | None:
        modified = super().get_modified_time()
        if modified is None:
            return None
        return datetime.datetime.fromtimestamp(sent_last_modified(modified.timestamp(), self.date), datetime.UTC)

    def head(self, path: str) -> Awaitable[None]:
        # RFC 9110 §14.2: only GET defines Range; a HEAD describes the whole file.
        self.request.headers.pop("Range", None)
        return super().head(path)

    def write_error(self, status_code: int, **kwargs) -> None:
        if status_code == 405:
            self.set_header("Allow", allowed_methods(type(self)))
        super().write_error(status_code, **kwargs)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", IMMUTABLE if "v" in self.request.arguments else "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        # A NUL (``/static/x%00``) makes os.path.realpath raise ValueError,
        # which Tornado would answer with a 500: no file has one in its name.
        if "\0" in absolute_path:
            raise tornado.web.HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)


class PageError(tornado.web.HTTPError):
    """An error page whose ``message`` is meant for the person looking at it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status)
        self.message = message


class PageHandler(CatalogHandler):
    """An HTML page: a strict Content-Security-Policy, never stored, HTML errors.

    Each response gets a fresh nonce; only the page's import map carries it,
    so no other inline script can run. A stored page would hand its nonce
    out again, and no two bodies are alike, so there is nothing to
    revalidate either: ``no-store``, no ETag.
    """

    etag_from_body = False

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.nonce = secrets.token_urlsafe(16)
        self.set_header(
            "Content-Security-Policy",
            "default-src 'self'; "
            f"script-src 'self' 'nonce-{self.nonce}'; "
            # Posters may be any URL a video's metadata names.
            "img-src 'self' data: http: https:; "
            "media-src 'self' blob:; "
            "connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        )
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Cache-Control", "no-store")

    def get_template_namespace(self) -> dict:
        namespace = super().get_template_namespace()
        namespace.update(TEMPLATE_HELPERS, nonce=self.nonce, import_map=self.import_map())
        return namespace

    def import_map(self) -> dict:
        """Maps each script's plain URL to its versioned one, so modules importing
        each other (``./presence.js``) get the cacheable, cache-busted URL too."""
        static = self.settings["static_path"]
        scripts = sorted(name for name in os.listdir(static) if name.endswith(".js"))
        prefix = self.settings.get("static_url_prefix", "/static/")
        return {"imports": {prefix + name: self.static_url(name) for name in scripts}}

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, StoreError):
            status_code = exc.status
        title, message = ERROR_TEXT.get(status_code, (tornado_internals.reason(self), "That request didn't work."))
        if isinstance(exc, PageError):
            message = exc.message
        self.set_error_headers(status_code, exc)
        self.render("error.html", status=status_code, title=title, message=message)

    def catalog(self) -> list[dict]:
        """Every video object, sorted by name as ``GET /videos`` sorts them."""
        return [self.video_json(v) for v in sorted_videos(self.application.store.videos().values())]


class CatalogPage(PageHandler):
    """``GET /``: the catalog as a grid of posters, with live viewer counts."""

    def get(self) -> None:
        self.render("catalog.html", videos=self.catalog())


class WatchPage(PageHandler):
    """``GET /watch/{id}``: the player, its captions, who is watching, and where the bytes come from.

    An id not in the catalog, well-formed or not, is a 404 page.
    """

    def get(self, video_id: str) -> None:
        videos = self.application.store.videos()
        record = videos.get(video_id)
        if record is None:
            raise PageError(404, "We couldn't find that video. It may have been removed from the library.")
        default = record.default_caption()
        others = [v for v in sorted_videos(videos.values()) if v.id != video_id][:8]
        self.render(
            "watch.html",
            video=self.video_json(record),
            default_lang=default.lang if default else None,
            more=[self.video_json(v) for v in others],
        )
