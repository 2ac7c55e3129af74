"""Helpers for the browser tests: the real server in a subprocess, and Debian's Chromium driven by Playwright.

Only Playwright's Python package is used; it drives the system's Chromium
(``/usr/bin/chromium``), never a browser of its own. Without Chromium or
Playwright the browser tests skip on a developer's machine and fail in CI
(where ``CI`` is set), so a broken CI image cannot pass them silently.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from harness.server_process import ServerNotReady, ServerProcess
from tests.needs import skip_or_fail

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
SERVER_START_TIMEOUT = 30.0


def launch_chromium(playwright):
    """Debian's Chromium, headless, with Playwright's fresh temporary profile (user-data-dir) per launch."""
    if not os.access(CHROMIUM, os.X_OK):
        skip_or_fail("the browser tests", f"{CHROMIUM} is not installed (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@contextlib.contextmanager
def running_server(library: Path, workdir: Path, port: int | None = None, **sections: dict) -> Iterator[str]:
    """Runs ``server.py`` over ``library`` on a loopback port; yields its base URL.

    ``sections`` are further config sections (``peer={"upstream": ...}``
    makes a peer node). The server's log goes to ``workdir/server.log`` and
    is quoted if it fails to start.
    """
    server = ServerProcess(workdir, {
        "server": {"port": port} if port else {},
        "storage": {"backend": "filesystem", "library": str(library), "cache_dir": str(workdir / "cache"),
                    "scan_interval": 0.5},
        **sections,
    })
    try:
        server.start().wait_until_serving(SERVER_START_TIMEOUT)
    except ServerNotReady as e:
        server.stop()
        pytest.fail(str(e), pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def other_origin(html: str) -> Iterator[str]:
    """Serves ``html`` at ``/`` from a second loopback port, a different origin from the server's; yields its URL.

    Loopback to loopback, so Chromium's local-network-access rules, which
    guard private addresses from public pages, are not what is tested.
    """
    body = html.encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP GET: status, headers (lower-case names) and body, errors included."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def screenshot(page, name: str) -> Path:
    """Saves a full-page PNG under test-output/screenshots/, animations settled, and returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path
