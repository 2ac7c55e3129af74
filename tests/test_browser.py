"""The viewer's pages in a real browser: Debian's Chromium, headless, against ``server.py`` on real media.

One server process and one browser serve the whole module; each test gets
fresh browser contexts (separate cookies, caches and sockets: separate
viewers). Screenshots land in ``test-output/screenshots/``. Timings that the
issue bounds are printed; run with ``-rA`` to see them.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import pytest
import ujson

from harness.loopback import free_port
from media.filesystem_ingest import write_into_folder
from media.sample import cached_video
from tests.browser import get, launch_chromium, other_origin, running_server, screenshot
from tests.needs import skip_or_fail
from tests.conftest import new_video

# Long enough (about 10 MB of H.264) that Chromium cannot have the end of it
# buffered when it seeks there: the seek needs a range request.
LONG_SECONDS = 60
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PRESENCE_LIMIT_S = 2.0


@pytest.fixture(scope="module")
def browser_library(tmp_path_factory, sample_videos, media_dir) -> Path:
    """The shared samples (Alpha with English and French SRT, Beta in WebM), one without a poster, and two long videos."""
    folder = tmp_path_factory.mktemp("browser") / "library"
    folder.mkdir()
    alpha, beta = sample_videos
    videos = [
        alpha,
        beta,
        dataclasses.replace(beta, id="gamma", name="Gamma Clip", poster=None),
        new_video(cached_video("mp4", LONG_SECONDS, 640, 360), "long-mp4", "Long Take (H.264)",
                  {"en": str(media_dir / "clip.en.srt")}),
        new_video(cached_video("webm", LONG_SECONDS, 640, 360), "long-webm", "Long Take (VP9)"),
    ]
    for video in videos:
        write_into_folder(str(folder), video, lambda done: None)
    return folder


@pytest.fixture(scope="module")
def server(browser_library) -> str:
    with running_server(browser_library, browser_library.parent) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the browser tests", "the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


class Viewer:
    """One browser context (one person) and its page, with the page's uncaught errors and CSP violations."""

    def __init__(self, browser, viewport=DESKTOP) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        self.page.on("console", self._console)

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.problems.append(f"CSP: {message.text}")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def viewers(browser):
    """Makes viewers on demand; every one must end its test without page errors."""
    made: list[Viewer] = []

    def make(viewport=DESKTOP) -> Viewer:
        made.append(Viewer(browser, viewport))
        return made[-1]

    yield make
    problems = [p for v in made for p in v.problems]
    for viewer in made:
        viewer.close()
    assert not problems


def api(server: str, path: str):
    status, _, body = get(server + path)
    assert status == 200, path
    return ujson.loads(body)


def socket_id(page) -> str:
    """The presence socket id of a watch page, once the server has welcomed it."""
    return page.wait_for_function("() => document.documentElement.dataset.socketId").json_value()


def wait_for_viewers(catalog_page, video_id: str, count: int, timeout: float = 5000) -> None:
    """Waits until the catalog card of ``video_id`` shows ``count`` viewers."""
    catalog_page.wait_for_function(
        "([id, count]) => document.querySelector(`.card[data-video-id='${id}'] [data-viewers]`).dataset.viewers === count",
        arg=[video_id, str(count)], timeout=timeout)


def show_frame_at(page, seconds: float) -> None:
    """Pauses the player on the frame at ``seconds``, decoded and with its caption up, ready for a screenshot."""
    page.evaluate(
        """async (seconds) => {
            const v = document.getElementById("player");
            v.pause();
            v.currentTime = seconds;
            await new Promise((done) => v.addEventListener("seeked", done, { once: true }));
        }""",
        seconds,
    )
    page.wait_for_function(
        """() => { const v = document.getElementById("player");
                   return v.readyState >= HTMLMediaElement.HAVE_FUTURE_DATA && v.textTracks[0].activeCues.length === 1; }""")
    # Chromium's controls fade their loading spinner out for about a second after a seek.
    page.wait_for_timeout(1500)


def open_watch_page(page, server: str, video_id: str) -> None:
    """Opens the watch page and waits until the player knows the video's duration."""
    page.goto(f"{server}/watch/{video_id}")
    page.wait_for_function("() => document.getElementById('player').readyState >= 1")


@pytest.mark.browser
def test_catalog_lists_videos_and_a_click_plays_one(server, viewers):
    viewer = viewers()
    page = viewer.page
    page.goto(server + "/")
    names = page.locator(".card .card-title").all_inner_texts()
    assert names == [v["name"] for v in api(server, "/videos")]
    assert page.locator(".card", has_text="Gamma Clip").locator(".placeholder").inner_text() == "GC"
    assert page.locator(".card", has_text="Alpha Clip").locator(".badge.duration").inner_text() == "0:04"
    page.wait_for_function("() => Array.from(document.images).every(img => img.complete && img.naturalWidth > 0)")

    page.locator(".card-link", has_text="Alpha Clip").click()
    page.wait_for_url(f"{server}/watch/alpha")
    started = time.monotonic()
    page.evaluate("document.getElementById('player').play()")
    page.wait_for_function("() => document.getElementById('player').currentTime > 2", timeout=10_000)
    print(f"alpha played past 2 s of media in {time.monotonic() - started:.2f} s")
    assert page.evaluate("document.getElementById('player').error") is None


@pytest.mark.browser
def test_keyboard_reaches_and_opens_a_video(server, viewers):
    page = viewers().page
    page.goto(server + "/")
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('card-link')"):
            break
    focused = page.evaluate("document.activeElement.getAttribute('href')")
    assert focused == "/watch/alpha"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server}/watch/alpha")
    assert page.locator("label[for=caption-lang]").inner_text() == "Captions"
    assert page.evaluate("Array.from(document.images).every(img => img.hasAttribute('alt'))")


@pytest.mark.browser
@pytest.mark.parametrize("video_id", ["long-mp4", "long-webm"])
def test_seek_to_80_percent_plays_from_there(server, viewers, video_id):
    page = viewers().page
    stream = f"/videos/{video_id}/stream"
    ranges = []

    def note_range(response) -> None:
        if stream in response.url:
            ranges.append((response.status, response.headers.get("content-range")))

    page.on("response", note_range)
    open_watch_page(page, server, video_id)
    duration = page.evaluate("document.getElementById('player').duration")
    assert duration == pytest.approx(LONG_SECONDS, abs=0.5)
    target = 0.8 * duration
    started = time.monotonic()
    landed = page.evaluate(
        """async (target) => {
            const v = document.getElementById("player");
            v.currentTime = target;
            await new Promise((done) => v.addEventListener("seeked", done, { once: true }));
            window.lowestAfterSeek = v.currentTime;
            v.addEventListener("timeupdate", () => { window.lowestAfterSeek = Math.min(window.lowestAfterSeek, v.currentTime); });
            await v.play();
            return v.currentTime;
        }""",
        target,
    )
    page.wait_for_function(f"() => document.getElementById('player').currentTime > {target + 1.5}", timeout=15_000)
    print(f"{video_id}: seek to {target:.1f} s and 1.5 s of play took {time.monotonic() - started:.2f} s")
    assert landed == pytest.approx(target, abs=0.5)
    assert page.evaluate("window.lowestAfterSeek") >= target - 0.5
    assert page.evaluate("document.getElementById('player').error") is None
    # The far end came by a range request the server answered with 206.
    size = api(server, f"/videos/{video_id}")["size"]
    starts = [int(cr.split()[1].split("-")[0]) for status, cr in ranges if status == 206 and cr]
    assert any(start > size // 2 for start in starts), ranges


@pytest.mark.browser
def test_caption_tracks_from_srt_show_the_right_cue(server, viewers, browser_library):
    assert (browser_library / "alpha.en.srt").exists() and not (browser_library / "alpha.en.vtt").exists()
    status, headers, body = get(server + "/videos/alpha/captions/en.vtt")
    assert status == 200 and headers["content-type"].startswith("text/vtt") and body.startswith(b"WEBVTT")
    page = viewers().page
    open_watch_page(page, server, "alpha")
    tracks = page.evaluate(
        "Array.from(document.querySelectorAll('#player track')).map(t => [t.srclang, t.label, t.default])"
    )
    assert sorted(t[0] for t in tracks) == ["en", "fr"]
    assert [t[0] for t in tracks if t[2]] == ["en"]

    def cue_at(seconds: float, lang: str) -> str:
        page.wait_for_function(
            """(lang) => { const t = Array.from(document.getElementById('player').textTracks).find(t => t.language === lang);
                          return t.mode === 'showing' && t.cues && t.cues.length > 0; }""",
            arg=lang,
        )
        return page.evaluate(
            """async ([seconds, lang]) => {
                const v = document.getElementById("player");
                const track = Array.from(v.textTracks).find((t) => t.language === lang);
                v.pause();
                v.currentTime = seconds;
                await new Promise((done) => v.addEventListener("seeked", done, { once: true }));
                // Active cues update on the next time-marches-on step after the seek.
                await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 50)));
                return Array.from(track.activeCues).map((c) => c.getCueAsHTML().textContent).join("\\n");
            }""",
            [seconds, lang],
        )

    assert page.evaluate("document.getElementById('player').textTracks[0].cues.length") == 3
    assert cue_at(0.5, "en") == "Hello & welcome"
    assert cue_at(2.0, "en") == "Second line"
    page.select_option("#caption-lang", "fr")
    assert page.evaluate("Array.from(document.getElementById('player').textTracks).map(t => t.mode)") == [
        "disabled", "showing"]
    assert cue_at(2.0, "fr") == "Au revoir"
    page.select_option("#caption-lang", "")
    assert page.evaluate("Array.from(document.getElementById('player').textTracks).every(t => t.mode === 'disabled')")


@pytest.mark.browser
def test_watchers_come_and_go_within_two_seconds(server, viewers):
    first = viewers()
    open_watch_page(first.page, server, "alpha")
    me = socket_id(first.page)
    first.page.wait_for_selector(f'.watcher.me[data-socket-id="{me}"]')
    catalog = viewers().page
    catalog.goto(server + "/")
    alpha_count = catalog.locator('.card[data-video-id="alpha"] [data-viewers]')
    wait_for_viewers(catalog, "alpha", 1)

    second = viewers()
    opened = time.monotonic()
    second.page.goto(f"{server}/watch/alpha")
    other = socket_id(second.page)
    # From the server's welcome, not from goto: the page's own load is Chromium's time on this
    # machine (2 s under a busy loop per core), not presence's.
    welcomed = time.monotonic()
    first.page.wait_for_selector(f'.watcher[data-socket-id="{other}"]', timeout=PRESENCE_LIMIT_S * 1000)
    appeared = time.monotonic() - welcomed
    wait_for_viewers(catalog, "alpha", 2, timeout=PRESENCE_LIMIT_S * 1000)
    assert alpha_count.inner_text() == "2 watching"
    assert first.page.locator("[data-watcher-count]").inner_text() == "2"
    assert first.page.locator(f'.watcher[data-socket-id="{other}"] .where').inner_text() == "127.0.0.1"
    screenshot(catalog, "catalog.png")

    # The screenshot shows the page as a person sees it: two viewers, a caption on screen.
    show_frame_at(first.page, 0.7)
    screenshot(first.page, "watch.png")

    second.close()
    closed = time.monotonic()
    first.page.wait_for_selector(f'.watcher[data-socket-id="{other}"]', state="detached",
                                 timeout=PRESENCE_LIMIT_S * 1000)
    gone = time.monotonic() - closed
    wait_for_viewers(catalog, "alpha", 1, timeout=PRESENCE_LIMIT_S * 1000)
    print(f"second page welcomed {welcomed - opened:.2f} s after opening, seen by the first {appeared:.2f} s later, "
          f"gone {gone:.2f} s after closing")
    assert appeared <= PRESENCE_LIMIT_S and gone <= PRESENCE_LIMIT_S


def presence_messages(page) -> list[dict]:
    """Collects, from now on, every message the page's presence sockets receive, decoded, in order."""
    received: list[dict] = []

    def follow(socket) -> None:
        if "/presence" in socket.url:
            socket.on("framereceived", lambda payload: received.append(ujson.loads(payload)))

    page.on("websocket", follow)
    return received


@pytest.mark.browser
def test_watch_page_follows_presence_by_changes(server, viewers):
    """After one whole presence, a viewer arriving and leaving reach the page as changes only."""
    first = viewers()
    received = presence_messages(first.page)
    open_watch_page(first.page, server, "alpha")
    me = socket_id(first.page)
    first.page.wait_for_selector(f'.watcher.me[data-socket-id="{me}"]')

    second = viewers()
    second.page.goto(f"{server}/watch/alpha")
    other = socket_id(second.page)
    first.page.wait_for_selector(f'.watcher[data-socket-id="{other}"]', timeout=PRESENCE_LIMIT_S * 1000)
    assert first.page.locator("[data-watcher-count]").inner_text() == "2"
    second.close()
    first.page.wait_for_selector(f'.watcher[data-socket-id="{other}"]', state="detached",
                                 timeout=PRESENCE_LIMIT_S * 1000)
    assert first.page.locator("[data-watcher-count]").inner_text() == "1"

    kinds = [m["type"] for m in received]
    assert kinds[:2] == ["welcome", "presence"] and set(kinds[2:]) == {"changes"}, kinds
    changes = [c for m in received[2:] for c in m["changes"]]
    assert {"socketId": other, "ipaddress": "127.0.0.1", "video": "alpha"} in changes
    assert changes[-1] == {"socketId": other, "gone": True}


@pytest.mark.browser
def test_a_missed_change_makes_the_page_start_over_from_a_snapshot(server, viewers):
    """The changes message with a new watcher is lost: the page notices at the next one and reconnects.

    Applied as they come, the later changes would leave that watcher out of the list for good.
    """
    first = viewers()
    state = {"drop": False, "sockets": 0}

    def lose_one_arrival(page_socket) -> None:
        state["sockets"] += 1
        to_server = page_socket.connect_to_server()

        def relay(message) -> None:
            changes = ujson.loads(message).get("changes", [])
            if state["drop"] and any(c.get("video") == "alpha" for c in changes):
                state["drop"] = False
                return
            page_socket.send(message)

        to_server.on_message(relay)

    first.page.route_web_socket(re.compile(r"/presence\?changes=1$"), lose_one_arrival)
    open_watch_page(first.page, server, "alpha")
    me = socket_id(first.page)
    first.page.wait_for_selector(f'.watcher.me[data-socket-id="{me}"]')

    state["drop"] = True
    second = viewers()
    second.page.goto(f"{server}/watch/alpha")
    other = socket_id(second.page)
    # The next change shows the gap.
    viewers().page.goto(server + "/")
    first.page.wait_for_selector(f'.watcher[data-socket-id="{other}"]', timeout=5000)
    assert not state["drop"] and state["sockets"] == 2
    # The page came back as a new socket, and lists exactly the two viewers.
    assert socket_id(first.page) != me
    assert first.page.locator("[data-watcher-count]").inner_text() == "2"
    assert first.page.locator(".watcher").count() == 2


@pytest.mark.browser
def test_sources_panel_hidden_on_origin_and_sums_a_nodes_figures(server, viewers):
    origin_view = viewers().page
    with origin_view.expect_response(lambda r: r.url.endswith("/videos/alpha/sources")) as answer:
        open_watch_page(origin_view, server, "alpha")
    assert answer.value.status == 404
    assert origin_view.locator("[data-sources]").is_hidden()

    # Exact figures, as a node would answer them, check the arithmetic on screen.
    peer_view = viewers().page
    mb = 1024 * 1024
    # Running totals that grow, then hold still so the figures can be read.
    reached = {"http://203.0.113.10:8080": "direct-channel", "http://203.0.113.12:8080": "relayed-channel",
               "http://192.168.1.11:8080": "http"}
    answers = [{"local": mb // 2, "peers": 3 * mb, "origin": 2 * mb, "reached": {}},
               {"local": mb, "peers": 6 * mb, "origin": 2 * mb, "reached": reached}]

    def sources(route):
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        route.fulfill(status=200, content_type="application/json", body=ujson.dumps(answer))

    peer_view.route("**/videos/alpha/sources", sources)
    open_watch_page(peer_view, server, "alpha")
    panel = peer_view.locator("[data-sources]")
    panel.wait_for(state="visible")
    peer_view.wait_for_function("() => document.querySelector('[data-source=peers]').textContent === '6.0 MB'")
    assert peer_view.locator("[data-source=origin]").inner_text() == "2.0 MB"
    assert peer_view.locator("[data-source-total]").inner_text() == "9.0 MB"
    assert peer_view.locator("[data-sources-headline]").inner_text() == "78% served without the origin"
    # How each peer is reached, as the node's ICE pair says.
    assert peer_view.locator("[data-sources-peers] li").all_inner_texts() == [
        "203.0.113.10:8080: direct channel", "203.0.113.12:8080: relayed channel", "192.168.1.11:8080: HTTP"]


def start_node(upstream: str, workdir: Path):
    """A peer node below ``upstream``, with an empty library of its own."""
    port = free_port()
    (workdir / "library").mkdir(parents=True)
    return running_server(workdir / "library", workdir, port=port,
                          peer={"upstream": upstream, "public_url": f"http://127.0.0.1:{port}"})


def played_on_node(page, node: str, video_id: str, seconds: float) -> dict:
    """Plays ``video_id`` on ``node``'s watch page past ``seconds``; returns the node's source counts then."""
    open_watch_page(page, node, video_id)
    page.evaluate("document.getElementById('player').play()")
    page.wait_for_function(f"() => document.getElementById('player').currentTime > {seconds}", timeout=15_000)
    page.locator("[data-sources]").wait_for(state="visible")
    return ujson.loads(get(f"{node}/videos/{video_id}/sources")[2])


@pytest.mark.browser
def test_peer_nodes_show_where_their_bytes_came_from(server, viewers, tmp_path):
    """Two real nodes under the origin: the first gets its bytes from the origin, the second partly from the first."""
    with start_node(server, tmp_path / "a") as node_a, start_node(server, tmp_path / "b") as node_b:
        first = viewers().page
        counts = played_on_node(first, node_a, "long-mp4", 3)
        assert counts["origin"] > 0 and counts["peers"] == 0
        first.wait_for_function("() => document.querySelector('[data-source=origin]').textContent !== '0 B'")
        assert first.locator("[data-source=peers]").inner_text() == "0 B"

        second = viewers().page
        played_on_node(second, node_b, "long-mp4", 3)
        second.wait_for_function("() => document.querySelector('[data-source=peers]').textContent !== '0 B'",
                                 timeout=10_000)
        counts = ujson.loads(get(f"{node_b}/videos/long-mp4/sources")[2])
        print(f"node B's sources after 3 s of play: {counts}")
        assert counts["peers"] > 0
        screenshot(second, "watch-node.png")


@pytest.mark.browser
def test_narrow_window_has_no_sideways_scroll(server, viewers):
    page = viewers(PHONE).page
    for path, name in (("/", "catalog-narrow.png"), ("/watch/alpha", "watch-narrow.png")):
        page.goto(server + path)
        page.wait_for_function("() => Array.from(document.images).every(img => img.complete)")
        if path != "/":
            page.wait_for_selector(".watcher.me")
            show_frame_at(page, 1.0)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(page, name)


@pytest.mark.browser
def test_old_electron_paths_play_cross_origin(server, viewers):
    """A page from another origin, as the Electron app was, uses /videos, /videos/video/{id} and its caption."""
    page = viewers().page
    with other_origin("<!doctype html><title>Binge+ app</title>") as app_url:
        page.goto(app_url)
        result = page.evaluate(
            """async (server) => {
                const videos = await (await fetch(`${server}/videos`)).json();
                const v = document.createElement("video");
                v.crossOrigin = "anonymous";
                v.muted = true;
                v.src = `${server}/videos/video/${videos[0].id}`;
                const track = document.createElement("track");
                track.kind = "subtitles";
                track.srclang = "en";
                track.default = true;
                track.src = `${server}/videos/video/${videos[0].id}/caption`;
                v.append(track);
                document.body.append(v);
                const loaded = new Promise((done, fail) => { track.addEventListener("load", done); track.addEventListener("error", () => fail(new Error("caption track failed to load"))); });
                await v.play();
                await loaded;
                await new Promise((done) => setTimeout(done, 1200));
                return { id: videos[0].id, time: v.currentTime, cues: track.track.cues.length, error: v.error && v.error.message };
            }""",
            server,
        )
    assert (result["id"], result["cues"], result["error"]) == ("alpha", 3, None)
    assert result["time"] > 1.0


def test_unknown_video_is_a_friendly_html_page(server):
    status, headers, body = get(server + "/watch/no-such-video")
    assert status == 404
    assert headers["content-type"].startswith("text/html")
    assert b"couldn&#x27;t find that video" in body and b'href="/"' in body
    status, headers, _ = get(server + "/videos/no-such-video")
    assert status == 404 and headers["content-type"].startswith("application/json")


def test_pages_and_static_files_carry_cache_headers(server):
    status, headers, body = get(server + "/")
    assert status == 200 and headers["cache-control"] == "no-store"
    assert "script-src 'self' 'nonce-" in headers["content-security-policy"]
    html = body.decode()
    css = html.split('href="/static/binge.css?v=', 1)[1].split('"', 1)[0]
    status, headers, _ = get(f"{server}/static/binge.css?v={css}")
    assert status == 200 and headers["cache-control"] == "max-age=31536000, immutable"
    assert headers["content-type"].startswith("text/css")
    status, headers, _ = get(server + "/static/binge.css")
    assert status == 200 and headers["cache-control"] == "no-cache" and headers["etag"]
    status, _, _ = get(server + "/static/binge.css", **{"If-None-Match": headers["etag"]})
    assert status == 304
    # Modules import each other by plain URL; the import map sends each to its versioned one.
    import_map = ujson.loads(re.search(r'<script type="importmap" nonce="[^"]+">(.*?)</script>', html).group(1))
    assert import_map["imports"]["/static/presence.js"].startswith("/static/presence.js?v=")
