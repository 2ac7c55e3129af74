"""REDbot, the HTTP resource linter, on every route of a real origin and a real peer node.

REDbot (PyPI ``redbot``, pinned in setup.py) runs in this process on its own
event loop (thor) against two ``server.py`` processes on loopback: an origin
and a node below it that has fetched a video, so that its ``/have``,
``/pieces/{n}`` and ``/sources`` hold something. Each route is checked with
GET and with HEAD, and REDbot's own follow-up requests (conditional, ranged,
compressed) are checked too. A note of level "bad" fails the test, and so
does a "warning" unless it is listed in ``EXPECTED_WARNINGS`` with the
reason it does not apply.

The origin's library also holds a video whose file is dated tomorrow:
REDbot calls a Last-Modified past the Date "bad" (RFC 9110 §8.8.2.1).
"""

from __future__ import annotations

import asyncio
import email.utils
import http.client
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from configparser import ConfigParser

import pytest
import thor
from httplint.note import levels
from redbot.resource import HttpResource

from handlers.app import routes
from harness.http import get_json
from harness.nodes import Server
from media.filesystem_ingest import write_into_folder

# Warnings REDbot gives that do not apply here, by note class: when each is expected (given
# the note and the URL linted), and why.
EXPECTED_WARNINGS = {
    # httplint sniffs the body with sniffpy 1.0.0, whose audio/video branch runs the image
    # matcher and takes its "undefined/undefined" (no image) for a verdict: every MP4 and
    # WebM, however well formed, "doesn't match" its video/* type.
    "CONTENT_TYPE_MISMATCH": lambda note, url: str(note.vars.get("sniffed_type")) == "undefined/undefined"
    and str(note.vars.get("declared_type")).startswith("video/"),
    # A file dated in the future is sent with Last-Modified held to each response's Date
    # (RFC 9110 §8.8.2.1), so the Last-Modified moves with the clock until the file's time
    # comes: an If-Modified-Since of an earlier one gets the whole body, as it must.
    "IMS_FULL": lambda note, url: url.endswith("/videos/future/stream"),
}
# How long REDbot may take over all its requests: a few hundred small requests
# to two local servers take seconds; the bound allows a machine many times slower.
LINT_TIMEOUT = 180


@pytest.fixture(scope="module")
def linted_servers(tmp_path_factory, sample_videos):
    """An origin holding the sample videos and ``future`` (alpha's bytes, its file dated tomorrow),
    and a node below it that has read alpha whole."""
    folder = str(tmp_path_factory.mktemp("redbot"))
    origin = Server(folder, "origin")
    node = Server(folder, "node", upstream=origin.url)
    for item in sample_videos:
        write_into_folder(origin.library, item, lambda done: None)
    future = os.path.join(origin.library, "future.mp4")
    shutil.copyfile(sample_videos[0].source_path, future)
    tomorrow = time.time() + 86400
    os.utime(future, (tomorrow, tomorrow))
    try:
        origin.start()
        asyncio.run(origin.ready(video="future"))
        node.start()
        asyncio.run(node.ready(video="alpha"))
        with urllib.request.urlopen(f"{node.url}/videos/alpha/stream", timeout=30) as response:
            response.read()
        yield origin, node
    finally:
        for server in (node, origin):
            server.stop()
            print(f"--- {server.name} ({server.url}) ---\n{server.log_tail()}")


def origin_paths(origin: Server) -> list[str]:
    return [
        "/videos", "/videos/", "/videos/alpha", "/videos/alpha/data", "/videos/alpha/stream", "/videos/video/alpha",
        "/videos/future/stream", "/videos/future", "/videos/beta/stream",
        "/videos/alpha/captions", "/videos/alpha/captions/en", "/videos/alpha/captions/fr.vtt",
        "/videos/video/alpha/caption", "/videos/alpha/poster", "/videos/alpha/manifest", "/videos/alpha/peers",
        "/presence", "/ice-servers", "/healthz", "/metrics", "/", "/watch/alpha", "/static/binge.css", "/static/catalog.js",
        f"/static/binge.css?v={static_version(origin, 'binge.css')}",
        # Errors are responses too.
        "/videos/nope", "/no/such/thing", "/watch/nope", "/videos/alpha/have",
    ]


def node_paths(node: Server) -> list[str]:
    have = asyncio.run(get_json(f"{node.url}/videos/alpha/have"))
    assert have["pieces"], "the node holds no piece of alpha after reading it whole"
    return [
        "/videos", "/videos/alpha", "/videos/alpha/stream", "/videos/alpha/captions", "/videos/alpha/captions/en",
        "/videos/alpha/poster", "/videos/alpha/manifest", "/videos/alpha/peers", "/videos/alpha/have",
        f"/videos/alpha/pieces/{have['pieces'][0][0]}?root={have['root']}", "/videos/alpha/sources",
        "/presence", "/healthz", "/metrics", "/", "/watch/alpha", "/videos/video/alpha", "/videos/video/alpha/caption",
        "/videos/alpha/data",
    ]


def static_version(server: Server, name: str) -> str:
    with urllib.request.urlopen(f"{server.url}/", timeout=10) as response:
        page = response.read().decode()
    return re.search(rf"/static/{re.escape(name)}\?v=([0-9a-f]+)", page)[1]


def lint(urls: list[tuple[str, str]]) -> dict[tuple[str, str], HttpResource]:
    """Runs REDbot on each (method, URL) at once, on thor's loop, until all are done."""
    parser = ConfigParser()
    parser.read_dict({"redbot": {"enable_local_access": "True"}})  # loopback, which REDbot refuses by default
    config = parser["redbot"]
    resources = {}
    pending = set(urls)

    def done(key):
        pending.discard(key)
        if not pending:
            thor.stop()

    for method, url in urls:
        resource = HttpResource(config)
        resource.set_request(url, method=method)
        resource.once("check_done", lambda key=(method, url): done(key))
        resources[(method, url)] = resource
    for resource in resources.values():
        resource.check()
    timeout = thor.schedule(LINT_TIMEOUT, thor.stop)
    thor.run()
    timeout.delete()
    assert not pending, f"REDbot did not finish within {LINT_TIMEOUT} s: {sorted(pending)}"
    return resources


def objections(resource: HttpResource, url: str) -> list[str]:
    """The bad notes, and the warnings not expected, of a resource and of REDbot's follow-up requests to it."""
    found = []
    for who, response in [("", resource.response)] + [(f"{name}: ", sub.response) for name, sub in resource.subreqs.items()]:
        for note in response.notes:
            expected = EXPECTED_WARNINGS.get(type(note).__name__)
            if note.level == levels.BAD or note.level == levels.WARN and not (expected and expected(note, url)):
                found.append(f"{who}{note.level.value}: {note.summary} [{type(note).__name__}]")
    return sorted(set(found))


def test_redbot_finds_nothing_bad_on_any_route(linted_servers):
    origin, node = linted_servers
    paths = [(origin, p) for p in origin_paths(origin)] + [(node, p) for p in node_paths(node)]
    urls = [(method, server.url + path) for server, path in paths for method in ("GET", "HEAD")]
    resources = lint(urls)
    report = {}
    for key, resource in resources.items():
        assert resource.fetch_error is None, (key, resource.fetch_error)
        assert resource.response.complete, key
        if found := objections(resource, key[1]):
            report[f"{key[0]} {key[1]}"] = found
    assert not report, "REDbot objects:\n" + "\n".join(f"{k}\n  " + "\n  ".join(v) for k, v in report.items())


def test_every_route_is_linted(linted_servers):
    """A route added to the app without a path above fails here, so that REDbot sees it too."""
    origin, node = linted_servers
    paths = [p.split("?")[0] for p in origin_paths(origin) + node_paths(node)]
    for pattern, handler in routes():
        assert any(re.fullmatch(pattern, p) for p in paths), f"no path of {pattern} ({handler.__name__}) is linted"
    assert any(p.startswith("/static/") for p in paths)


def test_redbot_sees_a_future_modification_time_held_to_the_date(linted_servers):
    """The check above would miss a Last-Modified sent as the file has it, if REDbot could not see one: it can."""
    origin, _ = linted_servers
    resource = lint([("GET", f"{origin.url}/videos/future/stream")])[("GET", f"{origin.url}/videos/future/stream")]
    names = {type(note).__name__ for note in resource.response.notes}
    assert "LM_PRESENT" in names and "LM_FUTURE" not in names
    headers = dict(resource.response.headers.text)
    assert headers["Last-Modified"] == headers["Date"]


def fetch(url: str, method: str = "GET", **headers: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Status, headers and body, errors and 304s included; header names are given as If_None_Match=..."""
    request = urllib.request.Request(url, method=method, headers={k.replace("_", "-"): v for k, v in headers.items()})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def http_time(header: str) -> float:
    return email.utils.parsedate_to_datetime(header).timestamp()


def test_a_future_modification_time_is_sent_as_the_date(linted_servers):
    """RFC 9110 §8.8.2.1: Last-Modified never later than Date, and the validators agree with what was sent."""
    origin, _ = linted_servers
    url = f"{origin.url}/videos/future/stream"
    status, headers, _ = fetch(url, method="HEAD")
    sent, etag = headers["Last-Modified"], headers["ETag"]
    assert status == 200 and sent == headers["Date"]
    # While the file's time lies ahead, the Last-Modified sent moves with the clock: any date
    # before it may precede a change, so it is no 304, and If-Unmodified-Since of it a 412.
    before = email.utils.formatdate(http_time(sent) - 1, usegmt=True)
    assert fetch(url, If_Modified_Since=before)[0] == 200
    assert fetch(url, If_Unmodified_Since=before)[0] == 412
    # A date past the file's own time is after every change.
    after = email.utils.formatdate(time.time() + 2 * 86400, usegmt=True)
    status, headers, body = fetch(url, If_Modified_Since=after)
    assert (status, body) == (304, b"")
    assert http_time(headers["Last-Modified"]) <= http_time(headers["Date"])
    assert fetch(url, If_None_Match=etag)[0] == 304
    # A Last-Modified held back to the Date says nothing of when the bytes changed: If-Range by it sends all.
    status, _, body = fetch(url, Range="bytes=0-9", If_Range=sent)
    assert status == 200 and len(body) > 10
    assert fetch(url, Range="bytes=0-9", If_Range=etag)[:1] == (206,)


def test_node_routes_answer_head_as_get_and_list_allow(linted_servers):
    """HEAD wherever GET, on a node too (RFC 9110 §9.3.2); a 405 there names its methods (§15.5.6)."""
    _, node = linted_servers
    for path in node_paths(node):
        get, head = fetch(node.url + path), fetch(node.url + path, method="HEAD")
        assert head[0] == get[0] == 200, path
        assert head[2] == b""
        assert head[1]["Content-Length"] == get[1]["Content-Length"] or path in ("/healthz", "/metrics", "/", "/watch/alpha")
        status, headers, body = fetch(node.url + path, method="DELETE")
        assert status == 405 and headers["Allow"] == "GET, HEAD, OPTIONS", path


def test_a_piece_head_ignores_range(linted_servers):
    """RFC 9110 §14.2 on a node's pieces: HEAD with Range describes the whole piece; GET still ranges."""
    _, node = linted_servers
    piece = next(p for p in node_paths(node) if "/pieces/" in p)
    _, _, whole = fetch(node.url + piece)
    status, headers, body = fetch(node.url + piece, method="HEAD", Range="bytes=0-9")
    assert (status, body) == (200, b"") and headers["Content-Length"] == str(len(whole))
    assert headers["Accept-Ranges"] == "bytes" and "Content-Range" not in headers
    assert fetch(node.url + piece, method="HEAD", Range=f"bytes={len(whole)}-")[0] == 200
    status, _, body = fetch(node.url + piece, Range="bytes=0-9")
    assert (status, body) == (206, whole[:10])
