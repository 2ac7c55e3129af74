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
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from tests.loopback import free_port, stop_process

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


def unavailable(reason: str) -> None:
    """Skips the test, or fails it in CI, where a missing browser is a broken image."""
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def launch_chromium(playwright):
    """Debian's Chromium, headless, with Playwright's fresh temporary profile (user-data-dir) per launch."""
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@contextlib.contextmanager
def running_server(library: Path, workdir: Path, port: int | None = None, **sections: dict) -> Iterator[str]:
    """Runs ``server.py`` over ``library`` on a loopback port; yields its base URL.

    ``sections`` are further config sections (``peer={"upstream": ...}``
    makes a peer node). The server's log goes to ``workdir/server.log`` and
    is quoted if it fails to start. It is stopped with SIGTERM, as an
    operator would, and killed if it does not exit in time.
    """
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"host": "127.0.0.1"},
        "storage": {"backend": "filesystem", "library": str(library), "cache_dir": str(workdir / "cache"),
                    "scan_interval": 0.5},
        **sections,
    }))
    port = port or free_port()
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "server.py", "--config", str(config), "--port", str(port)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(process, base_url, log_path)
        yield base_url
    finally:
        stop_process(process)


def _wait_until_serving(process: subprocess.Popen, base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    pytest.fail(f"server did not answer within {SERVER_START_TIMEOUT:.0f} s:\n{log_path.read_text()[-3000:]}",
                pytrace=False)


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
