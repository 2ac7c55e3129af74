"""The catalog API: video objects, captions, posters, health and JSON errors."""

from __future__ import annotations

import asyncio
import dataclasses
import os

import pytest
import ujson
import webvtt

from harness.http import fetch_json


# pytest-tornado asks for ``app`` by name at run time, too late to parametrize;
# naming ``config`` here runs every test against both stores.
pytestmark = pytest.mark.usefixtures("config")


@pytest.mark.gen_test
async def test_video_list(http_server, base_url, sample_videos):
    code, videos, r = await fetch_json(base_url + "/videos")
    assert code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert [v["id"] for v in videos] == ["alpha", "beta"]
    alpha = videos[0]
    assert alpha["name"] == "Alpha Clip"
    assert alpha["size"] == os.path.getsize(sample_videos[0].source_path)
    assert alpha["mimeType"] == "video/mp4"
    assert alpha["durationSeconds"] == pytest.approx(4.0, abs=0.2)
    assert alpha["duration"] == "4 secs"
    assert alpha["stream"] == "/videos/alpha/stream"
    assert alpha["poster"] == "/videos/alpha/poster"
    assert alpha["captions"] == [
        {"lang": "en", "label": "English", "url": "/videos/alpha/captions/en.vtt"},
        {"lang": "fr", "label": "Français", "url": "/videos/alpha/captions/fr.vtt"},
    ]
    assert (alpha["activeUsers"], alpha["viewers"]) == ([], 0)
    assert videos[1]["mimeType"] == "video/webm" and videos[1]["captions"] == []


@pytest.mark.gen_test
async def test_one_video_and_old_data_path(http_server, base_url):
    code, video, _ = await fetch_json(base_url + "/videos/alpha")
    assert code == 200 and video["id"] == "alpha"
    code, old, _ = await fetch_json(base_url + "/videos/alpha/data")
    assert code == 200 and old == video


@pytest.mark.gen_test
async def test_unknown_video_and_endpoint_are_json_404s(http_client, base_url):
    code, body, _ = await fetch_json(base_url + "/videos/missing")
    assert code == 404 and body["error"] == "no video with id 'missing'"
    code, body, _ = await fetch_json(base_url + "/no/such/thing")
    assert code == 404 and "no such endpoint" in body["error"]
    code, body, _ = await fetch_json(base_url + "/videos")
    r = await http_client.fetch(base_url + "/videos", method="DELETE", raise_error=False)
    assert r.code == 405 and ujson.loads(r.body)["error"]


@pytest.mark.gen_test
async def test_caption_tracks(http_client, base_url):
    code, tracks, _ = await fetch_json(base_url + "/videos/alpha/captions")
    assert code == 200 and [t["lang"] for t in tracks] == ["en", "fr"]
    for path in ("/videos/alpha/captions/en", "/videos/alpha/captions/en.vtt", "/videos/video/alpha/caption"):
        r = await http_client.fetch(base_url + path)
        assert r.headers["Content-Type"] == "text/vtt; charset=utf-8", path
        vtt = webvtt.from_string(r.body.decode())
        assert [c.raw_text for c in vtt] == ["Hello &amp; welcome", "<i>Second</i> line", "Third"]
        assert vtt[1].start == "00:00:01.500"
    r = await http_client.fetch(base_url + "/videos/alpha/captions/fr.vtt")
    assert [c.text for c in webvtt.from_string(r.body.decode())] == ["Bonjour", "Au revoir"]
    code, body, _ = await fetch_json(base_url + "/videos/alpha/captions/de")
    assert code == 404 and "'de'" in body["error"]
    code, body, _ = await fetch_json(base_url + "/videos/beta/captions/en")
    assert code == 404


@pytest.mark.gen_test
async def test_poster(http_client, base_url):
    r = await http_client.fetch(base_url + "/videos/alpha/poster")
    assert r.headers["Content-Type"] == "image/jpeg" and r.body[:2] == b"\xff\xd8"


@pytest.mark.gen_test
async def test_health(http_server, base_url, config):
    code, body, _ = await fetch_json(base_url + "/healthz")
    assert code == 200 and body["status"] == "ok"
    assert body["store"]["backend"] == config.storage.backend and body["store"]["videos"] == 2


@pytest.mark.gen_test(timeout=30)
async def test_videos_added_while_running_appear(http_server, base_url, ingest, sample_videos):
    ingest(dataclasses.replace(sample_videos[1], id="gamma", name="Gamma"))
    for _ in range(100):
        code, videos, _ = await fetch_json(base_url + "/videos")
        if "gamma" in [v["id"] for v in videos]:
            break
        await asyncio.sleep(0.1)
    assert [v["id"] for v in videos] == ["alpha", "beta", "gamma"]


@pytest.mark.gen_test
async def test_unusable_captions_are_a_422_not_a_500(http_server, base_url, ingest, sample_videos):
    ingest(dataclasses.replace(sample_videos[1], id="mute", captions={"en": (b"\x89PNG\r\n\x1a\n\0\0binary", "srt")}))
    for _ in range(100):
        code, body, _ = await fetch_json(base_url + "/videos/mute/captions/en.vtt")
        if code != 404:
            break
        await asyncio.sleep(0.1)
    assert code == 422 and "cannot be used" in body["error"]


@pytest.mark.gen_test(timeout=30)
async def test_legacy_captions_are_read_in_their_tracks_language(http_client, base_url, ingest, sample_videos):
    # cp1257 Latvian, which without its tag reads as Turkish cp1254 ("Mçs tevi gaidîjâm."):
    # only the track's language picks the right code page.
    source = "1\n00:00:01,000 --> 00:00:02,000\nKur tu biji visu nakti? Mēs tevi gaidījām.\n".encode("cp1257")
    ingest(dataclasses.replace(sample_videos[1], id="riga", captions={"lv": (source, "srt")}))
    for _ in range(100):
        r = await http_client.fetch(base_url + "/videos/riga/captions/lv.vtt", raise_error=False)
        if r.code != 404:
            break
        await asyncio.sleep(0.1)
    assert r.code == 200
    assert [c.text for c in webvtt.from_string(r.body.decode())] == ["Kur tu biji visu nakti? Mēs tevi gaidījām."]
