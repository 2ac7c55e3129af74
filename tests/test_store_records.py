"""What both stores make of a video's metadata, and the video object read back by a node.

The filesystem store and the Pravega store build their records with one
poster rule (:func:`media.store.poster_url`): a URL or a path from the
metadata is the poster when the store holds none of its own, and a relative
file name is never a URL. The Pravega side runs through its record codec
only, which needs no Pravega.
"""

from __future__ import annotations

import asyncio
import shutil

import pytest

from media.catalog import record_from_json, video_json
from media.filesystem import FilesystemStore
from media.pravega_catalog import Extent, decode_record, encode_record
from media.store import CaptionTrack, InvalidInput, VideoRecord
from tests.conftest import make_config

# (metadata's poster, whether the store holds a poster) -> (has_poster, poster_url)
POSTER_CASES = [
    ("https://example.org/p.jpg", False, (False, "https://example.org/p.jpg")),
    ("/static/p.jpg", False, (False, "/static/p.jpg")),
    # A relative name is no URL: the store's own poster is served whatever the metadata calls it.
    ("cover.png", True, (True, None)),
    ("cover.png", False, (False, None)),
    ("v.jpg", False, (False, None)),
    (None, True, (True, None)),
]


def filesystem_record(tmp_path, media_dir, poster: str | None, holds_poster: bool) -> VideoRecord:
    folder = tmp_path / "library"
    folder.mkdir()
    shutil.copy(media_dir / "clip.webm", folder / "v.webm")
    if poster is not None:
        (folder / "v.json").write_text(f'{{"poster": "{poster}", "durationSeconds": 4}}')
    if holds_poster:
        (folder / "v.jpg").write_bytes(b"\xff\xd8\xff")

    async def scan():
        store = FilesystemStore(make_config(tmp_path).storage)
        await store.start()
        try:
            return store.get("v")
        finally:
            await store.close()

    return asyncio.run(scan())


def pravega_record(poster: str | None, holds_poster: bool) -> VideoRecord:
    encoded = encode_record(
        video_id="v", stream="v-abc-1", size=100, name="V", mime_type="video/webm", duration_seconds=4.0,
        written_at=1.0, digest="d", poster=Extent(100, 3) if holds_poster else None, captions=[],
        metadata={} if poster is None else {"poster": poster},
    )
    return decode_record(encoded).record


@pytest.mark.parametrize(("poster", "holds_poster", "expected"), POSTER_CASES)
def test_both_stores_read_the_metadata_poster_alike(tmp_path, media_dir, poster, holds_poster, expected):
    on_disk = filesystem_record(tmp_path, media_dir, poster, holds_poster)
    in_pravega = pravega_record(poster, holds_poster)
    assert (on_disk.has_poster, on_disk.poster_url) == expected
    assert (in_pravega.has_poster, in_pravega.poster_url) == expected


def test_store_locators_stay_out_of_the_metadata(tmp_path, media_dir):
    on_disk = filesystem_record(tmp_path, media_dir, "cover.png", False)
    in_pravega = pravega_record("cover.png", False)
    assert (on_disk.locator, on_disk.metadata) == ("v.webm", {"poster": "cover.png", "durationSeconds": 4})
    assert (in_pravega.locator, in_pravega.metadata) == ("v-abc-1", {"poster": "cover.png"})


def test_a_video_object_reads_back_into_the_record_it_came_from():
    original = VideoRecord(
        id="a_b", name="A b", size=1234, mime_type="video/mp4", etag='"x"', last_modified=5.0,
        duration_seconds=4.5, captions=(CaptionTrack("en", "English", "srt"), CaptionTrack("fr", "Français", "vtt")),
        has_poster=True, metadata={"width": 640}, locator="a_b.mp4",
    )
    back = record_from_json(video_json(original, [{"ipaddress": "1.2.3.4", "socketId": "s"}]), "http://up:1")
    # Validators and the locator are not in the object; captions come back as the server's WebVTT.
    assert back == VideoRecord(
        id="a_b", name="A b", size=1234, mime_type="video/mp4", etag="", last_modified=0.0, duration_seconds=4.5,
        captions=(CaptionTrack("en", "English", "vtt"), CaptionTrack("fr", "Français", "vtt")), has_poster=True,
    )
    elsewhere = record_from_json({**video_json(original, []), "poster": "/static/x.jpg"}, "http://up:1")
    assert (elsewhere.has_poster, elsewhere.poster_url) == (False, "http://up:1/static/x.jpg")
    with pytest.raises(InvalidInput):
        record_from_json({"id": "a", "name": "A", "size": -1, "mimeType": "video/mp4"}, "http://up:1")
