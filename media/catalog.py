"""The catalog's public face: the JSON object a client sees for each video, and back.

:func:`video_json` makes the object ``GET /videos`` lists;
:func:`record_from_json` reads one back into a record, as a peer node does
with its upstream's catalog.
"""

from __future__ import annotations

from typing import Iterable

import api_paths
from media.probe import human_duration
from media.store import CaptionTrack, InvalidInput, VideoRecord, check_video_id

# Fields of a video object that change with its viewers, not with the video.
LIVE_FIELDS = ("activeUsers", "viewers")


def sorted_videos(videos: Iterable[VideoRecord]) -> list[VideoRecord]:
    """Videos in the catalog's order: by name, case aside, then by id."""
    return sorted(videos, key=lambda v: (v.name.lower(), v.id))


def video_json(video: VideoRecord, watchers: list[dict]) -> dict:
    """A video object as ``GET /videos`` lists it; ``watchers`` comes from presence."""
    if video.has_poster:
        poster = api_paths.POSTER(video_id=video.id)
    else:
        poster = video.poster_url
    return {
        "id": video.id,
        "name": video.name,
        "duration": human_duration(video.duration_seconds),
        "durationSeconds": video.duration_seconds,
        "size": video.size,
        "mimeType": video.mime_type,
        "poster": poster,
        "stream": api_paths.STREAM(video_id=video.id),
        "captions": [
            {"lang": t.lang, "label": t.label, "url": api_paths.CAPTION(video_id=video.id, lang=t.lang)} for t in video.captions
        ],
        "activeUsers": watchers,
        "viewers": len(watchers),
    }


def record_from_json(obj: dict, server_url: str) -> VideoRecord:
    """The record a video object of the server at ``server_url`` describes; InvalidInput if it is not one.

    The object carries no validators: the record's ``etag`` is empty and its
    ``last_modified`` 0 until the caller sets them (from a HEAD of the stream,
    say). A poster at the video's own ``/poster`` is the server's; a path of
    the server's other than that becomes a URL on it; a URL stays as it is.
    Captions are the server's WebVTT.
    """
    try:
        video_id = check_video_id(obj["id"])
        name, size, mime_type = obj["name"], obj["size"], obj["mimeType"]
        duration = obj.get("durationSeconds")
        captions = tuple(CaptionTrack(c["lang"], c["label"], "vtt") for c in obj.get("captions") or ())
    except (KeyError, TypeError) as e:
        raise InvalidInput(f"{obj.get('id')!r}: missing or malformed {e}") from None
    if not isinstance(name, str) or not isinstance(mime_type, str) or not isinstance(size, int) or size < 0:
        raise InvalidInput(f"{video_id!r}: name, size or mimeType is malformed")
    if not all(isinstance(t.lang, str) and isinstance(t.label, str) for t in captions):
        raise InvalidInput(f"{video_id!r}: malformed captions")
    if not isinstance(duration, (int, float)) or isinstance(duration, bool):
        duration = None
    poster = obj.get("poster")
    has_poster, url = False, None
    if isinstance(poster, str):
        if poster == api_paths.POSTER(video_id=video_id):
            has_poster = True
        else:
            url = f"{server_url}{poster}" if poster.startswith("/") else poster
    return VideoRecord(
        id=video_id, name=name, size=size, mime_type=mime_type, etag="", last_modified=0.0,
        duration_seconds=duration, captions=captions, poster_url=url, has_poster=has_poster,
    )
