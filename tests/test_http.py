"""RFC 9110 on every route of the origin, over real HTTP: HEAD, Allow, OPTIONS, validators and caching.

Peer nodes' routes, a file dated in the future, and REDbot's reading of
every route are in tests/test_redbot.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import ujson

from tests.test_stream import fetch

pytestmark = pytest.mark.usefixtures("config")

# Every GET route an origin answers, by a path that reaches it; with True where
# two GETs in a row get the same body (others carry a clock, a counter or a nonce).
ORIGIN_GETS = {
    "/videos": True,
    "/videos/": True,
    "/videos/alpha": True,
    "/videos/alpha/data": True,
    "/videos/alpha/stream": True,
    "/videos/video/alpha": True,
    "/videos/alpha/captions": True,
    "/videos/alpha/captions/en": True,
    "/videos/alpha/captions/fr.vtt": True,
    "/videos/video/alpha/caption": True,
    "/videos/alpha/poster": True,
    "/videos/alpha/manifest": True,
    "/videos/alpha/peers": True,
    "/presence": True,
    "/healthz": False,
    "/metrics": False,
    "/": False,
    "/watch/alpha": False,
    "/static/binge.css": True,
    # Answered 404 by an origin, which holds whole videos: HEAD must agree.
    "/videos/alpha/have": True,
    "/videos/alpha/pieces/0": True,
    "/videos/alpha/sources": True,
}
# Headers that differ between any two responses.
PER_RESPONSE = {"Date", "X-Request-Id", "Content-Security-Policy"}
# And those that follow a body which differs between two GETs.
PER_BODY = {"Etag", "Content-Length"}


def comparable(headers, stable_body: bool) -> dict[str, str]:
    skip = PER_RESPONSE | (set() if stable_body else PER_BODY)
    return {name: value for name, value in headers.get_all() if name not in skip}


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("path", ORIGIN_GETS)
async def test_head_answers_as_get_without_a_body(http_client, base_url, path):
    """RFC 9110 §9.3.2: HEAD wherever GET, with the GET's status and headers (Content-Length too) and no body."""
    get = await fetch(http_client, base_url, path)
    head = await fetch(http_client, base_url, path, method="HEAD")
    assert head.code == get.code, (path, get.body[:200])
    assert head.body == b""
    assert comparable(head.headers, ORIGIN_GETS[path]) == comparable(get.headers, ORIGIN_GETS[path])
    if ORIGIN_GETS[path]:
        assert head.headers["Content-Length"] == str(len(get.body))


@pytest.mark.gen_test
async def test_head_is_compared_with_real_answers(http_client, base_url):
    """The routes above that an origin serves do answer 200: HEAD is compared with a real answer, not a 404."""
    for path, _ in ORIGIN_GETS.items():
        r = await fetch(http_client, base_url, path, method="HEAD")
        expected = 404 if path.endswith(("/have", "/pieces/0", "/sources")) else 200
        assert r.code == expected, path


@pytest.mark.gen_test
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "PROPFIND"])
async def test_a_405_lists_the_methods_the_resource_has(http_client, base_url, method):
    """RFC 9110 §15.5.6: every 405 carries Allow, and each method it names is answered."""
    for path in ORIGIN_GETS:
        body = b"" if method in ("POST", "PUT", "PATCH") else None
        r = await http_client.fetch(base_url + path, method=method, body=body, raise_error=False,
                                    allow_nonstandard_methods=True)
        if path.endswith(("/have", "/pieces/0", "/sources")):
            continue  # 404 first: an origin has no such resource, whatever the method
        assert r.code == 405, (method, path)
        allowed = [m.strip() for m in r.headers["Allow"].split(",")]
        expected = ["GET", "HEAD"] if path.startswith("/static/") else ["GET", "HEAD", "OPTIONS"]
        assert allowed == expected, path
        if not path.startswith(("/static/", "/watch/")) and path != "/":
            assert ujson.loads(r.body) == {"error": "Method Not Allowed", "status": 405}
        for listed in allowed:
            assert (await fetch(http_client, base_url, path, method=listed)).code != 405, (listed, path)


@pytest.mark.gen_test
async def test_options_is_a_cors_preflight_naming_the_methods(http_client, base_url):
    for path in ("/videos", "/videos/alpha/stream", "/videos/alpha/captions/en", "/healthz"):
        r = await fetch(http_client, base_url, path, method="OPTIONS", Origin="https://app.example",
                        Access_Control_Request_Method="GET", Access_Control_Request_Headers="range")
        assert (r.code, r.body) == (204, b"")
        assert r.headers["Allow"] == r.headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"
        assert "Range" in r.headers["Access-Control-Allow-Headers"]
        assert r.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/videos/alpha/stream", "/static/binge.css"])
async def test_head_ignores_range(http_client, base_url, path):
    """RFC 9110 §14.2: only GET defines Range; a HEAD gets the whole representation's headers, Accept-Ranges kept."""
    whole = await fetch(http_client, base_url, path)
    for spec in ("bytes=0-9", "bytes=-5", f"bytes={len(whole.body)}-"):
        r = await fetch(http_client, base_url, path, method="HEAD", Range=spec)
        assert (r.code, r.body) == (200, b""), spec
        assert r.headers["Content-Length"] == str(len(whole.body))
        assert r.headers["Accept-Ranges"] == "bytes"
        assert "Content-Range" not in r.headers
    r = await fetch(http_client, base_url, path, Range="bytes=0-9")
    assert (r.code, r.body) == (206, whole.body[:10])


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/videos", "/videos/alpha", "/videos/alpha/captions"])
async def test_live_json_revalidates_by_etag(http_client, base_url, path):
    """Viewer counts change at any time: no-cache, and an If-None-Match of the JSON's ETag costs a 304 until they do."""
    first = await fetch(http_client, base_url, path)
    assert first.headers["Cache-Control"] == "no-cache"
    etag = first.headers["ETag"]
    again = await fetch(http_client, base_url, path, If_None_Match=etag)
    assert (again.code, again.body) == (304, b"")
    assert again.headers["ETag"] == etag and again.headers["Cache-Control"] == "no-cache"
    head = await fetch(http_client, base_url, path, method="HEAD", If_None_Match=etag)
    assert head.code == 304


@pytest.mark.gen_test(timeout=30)
async def test_a_new_viewer_changes_the_etag(http_client, base_url):
    from tornado.websocket import websocket_connect

    etag = (await fetch(http_client, base_url, "/videos/alpha")).headers["ETag"]
    socket = await websocket_connect(base_url.replace("http", "ws") + "/presence")
    try:
        socket.write_message(ujson.dumps({"type": "watch", "video": "alpha"}))
        deadline = time.monotonic() + 10
        while True:
            r = await fetch(http_client, base_url, "/videos/alpha", If_None_Match=etag)
            if r.code == 200:
                break
            assert time.monotonic() < deadline, "the viewer never showed in /videos/alpha"
            await asyncio.sleep(0.05)
        assert len(ujson.loads(r.body)["activeUsers"]) == 1 and r.headers["ETag"] != etag
    finally:
        socket.close()


@pytest.mark.gen_test
async def test_every_route_says_how_it_may_be_cached(http_client, base_url):
    """No route leaves caches to guess a freshness lifetime (RFC 9111 §4.2.2) from its headers."""
    expected = {
        "/videos": "no-cache", "/videos/alpha": "no-cache", "/videos/alpha/captions": "no-cache",
        "/videos/alpha/captions/en": "no-cache", "/videos/alpha/stream": "no-cache",
        "/videos/alpha/poster": "max-age=300", "/videos/alpha/manifest": "no-cache", "/videos/alpha/peers": "no-store",
        "/presence": "no-store", "/healthz": "no-store", "/metrics": "no-store", "/": "no-store",
        "/watch/alpha": "no-store", "/static/binge.css": "no-cache", "/videos/nope": "no-store",
    }
    for path, cache_control in expected.items():
        r = await fetch(http_client, base_url, path)
        assert r.headers["Cache-Control"] == cache_control, path


@pytest.mark.gen_test
async def test_poster_revalidates_by_its_own_etag(http_client, base_url):
    first = await fetch(http_client, base_url, "/videos/alpha/poster")
    assert first.code == 200 and first.headers["Content-Type"] == "image/jpeg"
    assert "Last-Modified" not in first.headers  # the store knows when the video changed, not the poster
    r = await fetch(http_client, base_url, "/videos/alpha/poster", If_None_Match=first.headers["ETag"])
    assert r.code == 304


@pytest.mark.gen_test
async def test_a_head_never_upgrades_to_a_websocket(http_client, base_url):
    """RFC 6455 §4.1: the handshake is a GET. A HEAD asking to upgrade gets the GET's plain answer's headers."""
    r = await fetch(http_client, base_url, "/presence", method="HEAD", Upgrade="websocket", Connection="Upgrade",
                    Sec_WebSocket_Key="dGhlIHNhbXBsZSBub25jZQ==", Sec_WebSocket_Version="13")
    assert (r.code, r.body) == (200, b"")
    assert r.headers["Content-Type"].startswith("application/json") and "Upgrade" not in r.headers


@pytest.mark.gen_test
async def test_an_unknown_path_allows_nothing(http_client, base_url):
    """A method Tornado refuses before routing (405) on a path we do not serve: Allow is empty, not a lie."""
    r = await http_client.fetch(base_url + "/no/such/thing", method="PROPFIND", raise_error=False,
                                allow_nonstandard_methods=True)
    assert r.code == 405 and r.headers["Allow"] == ""
    assert (await fetch(http_client, base_url, "/no/such/thing", method="OPTIONS")).code == 404
