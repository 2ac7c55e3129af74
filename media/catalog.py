"""The catalog's public face: the JSON object a client sees for each video."""

from __future__ import annotations

from typing import Iterable

import api_paths
from media.probe import human_duration
from media.store import VideoRecord


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
