"""Streaming a video's bytes over real HTTP, as RFC 9110 and a <video> element expect."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest
import ujson

from tests.conftest import read_bytes


# pytest-tornado asks for ``app`` by name at run time, too late to parametrize;
# naming ``config`` here runs every test against both stores.
pytestmark = pytest.mark.usefixtures("config")


async def fetch(http_client, base_url, path, method="GET", **headers):
    """Fetches without raising on 4xx; header names are given as If_None_Match=..."""
    headers = {name.replace("_", "-"): value for name, value in headers.items()}
    return await http_client.fetch(base_url + path, method=method, headers=headers, raise_error=False)


@pytest.fixture
def alpha(sample_videos):
    return read_bytes(sample_videos[0].source_path)


async def wait_for_video(http_client, base_url, video_id, changed_from=None, timeout=10.0):
    """Polls until the store lists ``video_id`` (with an ETag other than ``changed_from``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await fetch(http_client, base_url, f"/videos/{video_id}/stream", method="HEAD")
        if r.code == 200 and r.headers["ETag"] != changed_from:
            return r
        assert asyncio.get_running_loop().time() < deadline, f"{video_id} did not show up"
        await asyncio.sleep(0.1)


@pytest.mark.gen_test
async def test_whole_video(http_client, base_url, alpha):
    r = await fetch(http_client, base_url, "/videos/alpha/stream")
    assert r.code == 200
    assert r.body == alpha
    assert r.headers["Content-Length"] == str(len(alpha))
    assert r.headers["Content-Type"] == "video/mp4"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["ETag"].startswith('"') and not r.headers["ETag"].startswith("W/")
    assert r.headers["Last-Modified"].endswith("GMT")
    assert r.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.gen_test
async def test_webm_content_type_and_old_path(http_client, base_url, sample_videos):
    r = await fetch(http_client, base_url, "/videos/video/beta")
    assert r.code == 200
    assert r.headers["Content-Type"] == "video/webm"
    assert r.body == read_bytes(sample_videos[1].source_path)


@pytest.mark.gen_test
@pytest.mark.parametrize("spec", ["0-99", "100-", "-100", "0-0", "-999999999", "5-999999999"])
async def test_single_ranges(http_client, base_url, alpha, spec):
    size = len(alpha)
    first, _, last = spec.partition("-")
    if not first:
        start, end = max(0, size - int(last)), size
    else:
        start, end = int(first), min(int(last) + 1, size) if last else size
    r = await fetch(http_client, base_url, "/videos/alpha/stream", Range=f"bytes={spec}")
    assert r.code == 206
    assert r.body == alpha[start:end]
    assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
    assert r.headers["Content-Length"] == str(end - start)


@pytest.mark.gen_test
async def test_random_ranges_byte_for_byte(http_client, base_url, alpha):
    rng = random.Random(7)
    for _ in range(25):
        start = rng.randrange(len(alpha))
        end = rng.randrange(start, len(alpha))
        r = await fetch(http_client, base_url, "/videos/alpha/stream", Range=f"bytes={start}-{end}")
        assert r.code == 206 and r.body == alpha[start : end + 1]


@pytest.mark.gen_test
async def test_unsatisfiable_range(http_client, base_url, alpha):
    r = await fetch(http_client, base_url, "/videos/alpha/stream", Range=f"bytes={len(alpha)}-")
    assert r.code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(alpha)}"
    assert "range not satisfiable" in ujson.loads(r.body)["error"]


@pytest.mark.gen_test
async def test_ignored_ranges_send_everything(http_client, base_url, alpha):
    for header in ("bytes=0-1,5-9", "lines=1-2", "bytes=9-2", "garbage"):
        r = await fetch(http_client, base_url, "/videos/alpha/stream", Range=header)
        assert (r.code, len(r.body)) == (200, len(alpha)), header


@pytest.mark.gen_test
async def test_conditional_requests(http_client, base_url, alpha):
    first = await fetch(http_client, base_url, "/videos/alpha/stream")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]

    r = await fetch(http_client, base_url, "/videos/alpha/stream", If_None_Match=etag)
    assert (r.code, r.body) == (304, b"")
    assert r.headers["ETag"] == etag
    r = await fetch(http_client, base_url, "/videos/alpha/stream", If_Modified_Since=modified)
    assert r.code == 304
    r = await fetch(http_client, base_url, "/videos/alpha/stream", If_None_Match='"not-it"')
    assert r.code == 200

    r = await fetch(http_client, base_url, "/videos/alpha/stream", Range="bytes=10-19", If_Range=etag)
    assert (r.code, r.body) == (206, alpha[10:20])
    r = await fetch(http_client, base_url, "/videos/alpha/stream", Range="bytes=10-19", If_Range='"stale"')
    assert (r.code, r.body) == (200, alpha)

    r = await fetch(http_client, base_url, "/videos/alpha/stream", If_Match='"stale"')
    assert r.code == 412 and "error" in ujson.loads(r.body)


@pytest.mark.gen_test(timeout=30)
async def test_a_replaced_video_gets_a_new_etag(http_client, base_url, ingest, sample_videos, alpha):
    etag = (await fetch(http_client, base_url, "/videos/alpha/stream", method="HEAD")).headers["ETag"]
    ingest(dataclasses.replace(sample_videos[0], source_path=sample_videos[1].source_path))
    await wait_for_video(http_client, base_url, "alpha", changed_from=etag)
    r = await fetch(http_client, base_url, "/videos/alpha/stream", Range="bytes=10-19", If_Range=etag)
    assert r.code == 200 and r.body == read_bytes(sample_videos[1].source_path)
    assert r.headers["ETag"] != etag


@pytest.mark.gen_test
async def test_head(http_client, base_url, alpha):
    r = await fetch(http_client, base_url, "/videos/alpha/stream", method="HEAD")
    assert (r.code, r.body) == (200, b"")
    assert r.headers["Content-Length"] == str(len(alpha))
    # Only GET defines Range (RFC 9110 §14.2): a HEAD with one describes the whole video.
    r = await fetch(http_client, base_url, "/videos/alpha/stream", method="HEAD", Range="bytes=0-9")
    assert (r.code, r.body) == (200, b"")
    assert r.headers["Content-Length"] == str(len(alpha)) and r.headers["Accept-Ranges"] == "bytes"
    assert "Content-Range" not in r.headers
    r = await fetch(http_client, base_url, "/videos/alpha/stream", method="HEAD", Range=f"bytes={len(alpha)}-")
    assert r.code == 200 and r.headers["Content-Length"] == str(len(alpha))


@pytest.mark.gen_test
async def test_unknown_and_invalid_ids(http_client, base_url):
    r = await fetch(http_client, base_url, "/videos/nope/stream")
    assert r.code == 404 and ujson.loads(r.body)["error"] == "no video with id 'nope'"
    r = await fetch(http_client, base_url, "/videos/%2E%2Ehidden/stream")
    assert r.code == 400 and "invalid video id" in ujson.loads(r.body)["error"]
    r = await fetch(http_client, base_url, "/videos/nope/stream", method="HEAD")
    assert (r.code, r.body) == (404, b"")


@pytest.mark.gen_test
async def test_cors_preflight(http_client, base_url):
    r = await fetch(http_client, base_url, "/videos/alpha/stream", method="OPTIONS")
    assert r.code == 204
    assert "Range" in r.headers["Access-Control-Allow-Headers"]
    assert r.headers["Access-Control-Allow-Origin"] == "*"

