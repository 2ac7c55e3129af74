"""The catalog's public face: the JSON object a client sees for each video."""

from __future__ import annotations

from typing import Iterable
from urllib.parse import quote

from media.probe import human_duration
from media.store import VideoRecord


def sorted_videos(videos: Iterable[VideoRecord]) -> list[VideoRecord]:
    """Videos in the catalog's order: by name, case aside, then by id."""
    return sorted(videos, key=lambda v: (v.name.lower(), v.id))


def video_path(video_id: str) -> str:
    return f"/videos/{quote(video_id)}"


def video_json(video: VideoRecord, watchers: list[dict]) -> dict:
    """A video object as ``GET /videos`` lists it; ``watchers`` comes from presence."""
    base = video_path(video.id)
    if video.has_poster:
        poster = f"{base}/poster"
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
        "stream": f"{base}/stream",
        "captions": [
            {"lang": t.lang, "label": t.label, "url": f"{base}/captions/{quote(t.lang)}.vtt"} for t in video.captions
        ],
        "activeUsers": watchers,
        "viewers": len(watchers),
    }
