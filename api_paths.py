"""The paths of the HTTP API, in one place: the routes the server answers and the URLs its clients build.

Each :class:`Path` is written once, as a template (``/videos/{video_id}/have``):
``handlers/app.py`` routes its :attr:`Path.route`, and whoever names the
resource (a peer node asking its upstream or another peer, a video object
pointing at its stream) calls it with the fields, which are quoted. A path
added or moved here moves for both sides.
"""

from __future__ import annotations

import re
import string
from urllib.parse import quote

# What each field of a template matches in a route.
FIELDS = {"video_id": r"[^/]+", "index": r"[0-9]+", "lang": r"[^/]+?"}


class Path:
    """One path of the API: ``template`` with ``{field}`` parts; ``route`` is its pattern unless given."""

    def __init__(self, template: str, route: str | None = None) -> None:
        self.template = template
        self.route = route or "".join(
            re.escape(literal) + (f"(?P<{field}>{FIELDS[field]})" if field else "")
            for literal, field, _, _ in string.Formatter().parse(template)
        )

    def __call__(self, **fields: object) -> str:
        """The path for these fields, each quoted whole (a ``/`` in one stays inside it)."""
        return self.template.format(**{name: quote(str(value), safe="") for name, value in fields.items()})

    def __repr__(self) -> str:
        return f"Path({self.template!r})"


VIDEOS = Path("/videos", route=r"/videos/?")
VIDEO = Path("/videos/{video_id}")
VIDEO_DATA = Path("/videos/{video_id}/data")
STREAM = Path("/videos/{video_id}/stream")
CAPTIONS = Path("/videos/{video_id}/captions")
# A track is named with ``.vtt``, and found without it too.
CAPTION = Path("/videos/{video_id}/captions/{lang}.vtt",
               route=Path("/videos/{video_id}/captions/{lang}").route + r"(?:\.vtt)?")
POSTER = Path("/videos/{video_id}/poster")
MANIFEST = Path("/videos/{video_id}/manifest")
PEERS = Path("/videos/{video_id}/peers")
HAVE = Path("/videos/{video_id}/have")
PIECE = Path("/videos/{video_id}/pieces/{index}")
SOURCES = Path("/videos/{video_id}/sources")
# The old Electron app's paths.
OLD_STREAM = Path("/videos/video/{video_id}")
OLD_CAPTION = Path("/videos/video/{video_id}/caption")
PRESENCE = Path("/presence")
ICE_SERVERS = Path("/ice-servers")
HEALTH = Path("/healthz")
METRICS = Path("/metrics")
CATALOG_PAGE = Path("/")
WATCH_PAGE = Path("/watch/{video_id}")
