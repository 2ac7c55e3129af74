"""Hostile input against a real served app: raw HTTP requests and raw websocket frames.

The app runs on loopback in a thread of its own (:class:`Served`), so every
case is plain blocking socket code that hypothesis can drive, and the
server's tasks and file descriptors can be counted between cases. Whatever
comes in, an answer must be a clean one: a status below 500, an API error as
JSON ``{"error", "status"}`` (pages may answer in HTML), no traceback in the
body or the log, nothing from outside the library or the static folder, or
else a closed connection; and the server keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import socket
import struct
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backends
from harness.clients import BINARY, CLOSE, CONTINUATION, PING, TEXT, frame, upgrade_request
from harness.in_process import ServingInThread
from tests.conftest import make_config

ANSWER_TIMEOUT = 5.0
SECRET = secrets.token_hex(16).encode()
# Bytes that may only come back if a path escaped the library or the static folder.
LEAK_MARKERS = (SECRET, b"class BingeApp(", b"root:x:0:0", b"import tornado")
HYPOTHESIS = settings(
    max_examples=120, deadline=2000,
    # The fixtures hold one server per module and check it once per test, not once per example.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------- the server under test


class LogErrors(logging.Handler):
    """Keeps every ERROR logged anywhere: a 5xx, an uncaught exception, a failed callback."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        records, self.records = self.records, []
        return [f"{r.name}: {r.getMessage()}" + (" (with traceback)" if r.exc_info else "") for r in records]


class Served(ServingInThread):
    """The app for ``config`` on a loop of its own (the fuzzing clients block), keeping every error logged."""

    def __init__(self, config) -> None:
        super().__init__(config, name="fuzz-server")
        self.errors = LogErrors()
        logging.getLogger().addHandler(self.errors)

    def counts(self) -> tuple[int, int]:
        """Tasks on the server's loop, and open file descriptors of this process."""

        async def tasks() -> int:
            return len(asyncio.all_tasks())

        return self.call(tasks()), len(os.listdir("/proc/self/fd"))

    def settled(self, baseline: tuple[int, int], seconds: float = 5.0) -> None:
        """Waits for the task and descriptor counts to come back to ``baseline``; fails if they do not."""
        deadline = time.monotonic() + seconds
        now = self.counts()
        while (now[0] > baseline[0] or now[1] > baseline[1]) and time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.counts()
        assert now[0] <= baseline[0], f"tasks left behind: {now[0]} > {baseline[0]}"
        assert now[1] <= baseline[1], f"file descriptors left behind: {now[1]} > {baseline[1]}"

    def close(self) -> None:
        logging.getLogger().removeHandler(self.errors)
        super().close()


@pytest.fixture(scope="module", params=["filesystem", pytest.param("pravega", marks=pytest.mark.pravega)])
def served(request, tmp_path_factory, sample_videos):
    """The app on both stores, over the sample videos, with a secret planted beside its library."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "library").mkdir()
    (root / "secret.txt").write_bytes(b"the secret is " + SECRET)
    if request.param == "filesystem":
        config = make_config(root)
    else:
        uri = request.getfixturevalue("controller_uri")
        config = make_config(root, storage={"backend": "pravega", "library": str(root / "library")},
                             pravega={"controller_uri": uri, "scope": f"fuzz-{uuid.uuid4().hex[:12]}"})
    for item in sample_videos:
        backends.ingest(config, item, lambda done: None)
    server = Served(config)
    server.root = root
    yield server
    server.close()


@pytest.fixture
def clean(served):
    """The served app; after the test, no error was logged, it still serves, and nothing was left behind."""
    # A first request makes the lazily created parts (manifests, caches) before counting.
    assert status_of(exchange(served.port, request_bytes("GET", "/videos/alpha/stream", Range="bytes=0-0"))) == 206
    baseline = served.counts()
    served.errors.take()
    yield served
    assert served.errors.take() == []
    assert_still_serving(served.port)
    served.settled(baseline)


# ---------------------------------------------------------------- raw HTTP


def request_bytes(method: str, target: str | bytes, *headers: tuple[str, str], close: bool = True,
                  **named: str) -> bytes:
    """An HTTP/1.1 request asking the server to close after answering (unless ``close`` is false);
    ``named`` headers are given as If_None_Match=..., ``headers`` as (name, value) pairs."""
    target = target.encode("utf-8", "surrogateescape") if isinstance(target, str) else target
    lines = [b"%s %s HTTP/1.1" % (method.encode(), target), b"Host: 127.0.0.1"] + [b"Connection: close"] * close
    pairs = [*headers, *((name.replace("_", "-"), value) for name, value in named.items())]
    lines += [name.encode("latin-1") + b": " + value.encode("latin-1") for name, value in pairs]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def exchange(port: int, raw: bytes, method: str = "GET", patience: float = 1.0) -> bytes:
    """Sends ``raw`` on a fresh connection and returns what the server sends until it closes,
    or until it has answered in full and sends nothing more for a moment (a kept-alive connection).

    A server still silent after ``patience`` seconds is taken to wait for more
    of the request (a body shorter than its Content-Length): the client then
    half-closes, and the server must close. Fails if an answer stalls halfway,
    or if nothing ends within ANSWER_TIMEOUT.
    """
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=patience) as sock:
        deadline = time.monotonic() + ANSWER_TIMEOUT
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                break
            except TimeoutError:
                if received and split_responses(received, method) is not None:
                    break
                if received or sock.gettimeout() != patience:
                    pytest.fail(f"the answer to {raw[:200]!r} stalled: {bytes(received[:300])!r}")
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(ANSWER_TIMEOUT)
                continue
            if not chunk:
                break
            received += chunk
            if split_responses(received, method) is not None:
                sock.settimeout(0.2)  # for the close, or another answer to a pipelined request
            assert time.monotonic() < deadline, f"the answer to {raw[:200]!r} never ends"
    return bytes(received)


STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3}) [^\r\n]*")


def split_responses(data: bytes, method: str) -> list[tuple[int, dict[str, str], bytes]] | None:
    """Every response in ``data``: status, headers (lower-case names) and body; None if the last is not whole."""
    found = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return None
        status_line, *lines = head.split(b"\r\n")
        match = STATUS_LINE.fullmatch(status_line)
        assert match, f"not a status line: {status_line!r}"
        status = int(match[1])
        headers = {}
        for line in lines:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304) or status < 200:
            length = 0
        else:
            length = int(headers.get("content-length", len(rest)))
        if len(rest) < length:
            return None
        found.append((status, headers, rest[:length]))
        data = rest[length:]
    return found


def responses(data: bytes, method: str) -> list[tuple[int, dict[str, str], bytes]]:
    """As split_responses, and each must be whole."""
    found = split_responses(data, method)
    assert found is not None, f"an answer cut short: {data[:300]!r}"
    return found


def status_of(data: bytes, method: str = "GET") -> int | None:
    """The status of the first response, or None if the server closed without answering."""
    return responses(data, method)[0][0] if data else None


def is_page(target: bytes) -> bool:
    """Paths whose errors people read: HTML is fine there. Everything else is API, with JSON errors."""
    path = target.split(b"?", 1)[0]
    return path == b"/" or path.startswith((b"/watch/", b"/static/"))


def assert_clean(data: bytes, method: str, target: bytes) -> None:
    """Each answer is a status below 500 with nothing leaked, and an API error is JSON; no answer means a close."""
    for status, headers, body in responses(data, method):
        assert status < 500, f"{status} for {method} {target[:200]!r}: {body[:300]!r}"
        assert b"Traceback" not in body
        for marker in LEAK_MARKERS:
            assert marker not in data, f"{method} {target[:200]!r} leaked {marker!r}"
        if status < 400 or not body:
            # A bodiless error comes from the HTTP layer (a request it could not parse) or answers a HEAD.
            bodiless_error_allowed = method == "HEAD" or "content-type" not in headers or is_page(target)
            assert status < 400 or bodiless_error_allowed, (status, headers)
            continue
        if is_page(target) and not headers.get("content-type", "").startswith("application/json"):
            continue
        error = json.loads(body)
        assert isinstance(error, dict) and isinstance(error["error"], str) and error["status"] == status, error


def assert_still_serving(port: int) -> None:
    data = exchange(port, request_bytes("GET", "/videos/alpha/stream", Range="bytes=0-99"))
    [(status, headers, body)] = responses(data, "GET")
    assert status == 206 and len(body) == 100


def send_and_check(port: int, method: str, target: bytes, raw: bytes | None = None) -> int | None:
    raw = raw if raw is not None else request_bytes(method, target)
    data = exchange(port, raw, method)
    assert_clean(data, method, target)
    return status_of(data, method)


def escape_routes(library_root) -> list[bytes]:
    """Every path trick aimed at the secret beside the library, at the server's source and at /etc/passwd."""
    secret = os.fspath(library_root / "secret.txt").encode()
    app_source = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "handlers", "app.py")).encode()
    # Enough parent steps to climb to / from anywhere, spelled every way a decoder might accept.
    ups = [step * 16 for step in (b"../", b"%2e%2e/", b"..%2f", b"%2e%2e%2f", b"..%5c", b"%252e%252e%252f", b".%2e/",
                                  b"..;/", b"%c0%ae%c0%ae/")]
    routes = []
    for absolute in (secret, app_source, b"/etc/passwd"):
        encoded = absolute.replace(b"/", b"%2f")
        for up in ups:
            relative = up + absolute.lstrip(b"/")
            routes += [b"/static/" + relative, b"/static/" + up + encoded.removeprefix(b"%2f")]
            for prefix in (b"/videos/", b"/videos/video/", b"/watch/", b"/"):
                routes.append(prefix + up.replace(b"/", b"%2f") + encoded.removeprefix(b"%2f"))
        routes += [b"/static/" + absolute, b"/static/" + encoded, b"/static//" + absolute, b"/static" + absolute]
    for name in (b"..%2fsecret.txt", b"%2e%2e%2fsecret.txt", b"..%2f..%2fsecret.txt", b"..", b"%2e%2e", b"secret.txt"):
        routes += [
            b"/videos/" + name, b"/videos/" + name + b"/stream", b"/videos/" + name + b"/poster",
            b"/videos/" + name + b"/captions", b"/videos/alpha/captions/" + name,
            b"/videos/alpha/captions/" + name + b".vtt",
            b"/videos/video/" + name, b"/videos/video/" + name + b"/caption", b"/videos/" + name + b"/manifest",
            b"/videos/" + name + b"/pieces/0", b"/watch/" + name,
        ]
    return routes


def test_no_path_reaches_outside_the_library_or_static_folder(clean):
    """Dot segments, encoded and double-encoded slashes and backslashes, overlong UTF-8, absolute paths:
    no route of the API, the pages or /static/ answers with a byte from outside its own folder."""
    for target in escape_routes(clean.root):
        for method in ("GET", "HEAD"):
            status = send_and_check(clean.port, method, target)
            assert status is None or status >= 300, (method, target)


LONG = b"a" * 9000
ODD_REQUESTS = {
    # Paths.
    "NUL in a static path": request_bytes("GET", b"/static/binge.css%00"),
    "NUL alone in a static path": request_bytes("GET", b"/static/%00"),
    "raw NUL in the path": request_bytes("GET", b"/videos/al\x00pha/stream"),
    "encoded NUL in an id": request_bytes("GET", b"/videos/alpha%00/stream"),
    "encoded NUL in a language": request_bytes("GET", b"/videos/alpha/captions/en%00.vtt"),
    "invalid percent-encoded UTF-8": request_bytes("GET", b"/videos/%ff%fe/stream"),
    "raw bytes that are not UTF-8": request_bytes("GET", b"/videos/\xff\xfe/stream"),
    "invalid UTF-8 in a page path": request_bytes("GET", b"/watch/%ff"),
    "invalid UTF-8 in a static path": request_bytes("GET", b"/static/%ff"),
    "unicode id": request_bytes("GET", "/videos/álpha‮/stream".encode()),
    "8 KiB path": request_bytes("GET", b"/" + LONG),
    "8 KiB id": request_bytes("GET", b"/videos/" + LONG + b"/stream"),
    "8 KiB page id": request_bytes("GET", b"/watch/" + LONG),
    "8 KiB static name": request_bytes("GET", b"/static/" + LONG),
    "8 KiB language": request_bytes("GET", b"/videos/alpha/captions/" + LONG),
    "a path longer than the header limit": request_bytes("GET", b"/videos/" + b"a" * 70000),
    "huge piece number": request_bytes("GET", b"/videos/alpha/pieces/" + b"9" * 500),
    "bad percent escapes": request_bytes("GET", b"/videos/%zz%/stream"),
    "query with NUL and bad escapes": request_bytes("GET", b"/videos?%ff=%fe&a=%00&&=&"),
    "asterisk target": request_bytes("OPTIONS", b"*"),
    "absolute-form target": request_bytes("GET", b"http://evil.example/videos/alpha/stream"),
    "target without a slash": request_bytes("GET", b"videos"),
    # Methods.
    "unknown method": request_bytes("BREW", b"/videos"),
    "lower-case method": request_bytes("get", b"/videos"),
    "DELETE": request_bytes("DELETE", b"/videos/alpha"),
    "PUT with a body": request_bytes("PUT", b"/videos/alpha/stream", Content_Length="4")[:-2] + b"\r\nbody",
    "TRACE": request_bytes("TRACE", b"/videos"),
    "CONNECT": request_bytes("CONNECT", b"127.0.0.1:443"),
    "POST to the websocket path": request_bytes("POST", b"/presence", Content_Length="2")[:-2] + b"\r\n{}",
    # Request lines.
    "no version": b"GET /videos\r\n\r\n",
    "HTTP/2.0": b"GET /videos HTTP/2.0\r\nHost: x\r\n\r\n",
    "HTTP/0.9": b"GET /videos\r\n",
    "extra token": b"GET /videos HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "two spaces": b"GET  /videos HTTP/1.1\r\nHost: x\r\n\r\n",
    "bare LF line ends": b"GET /videos HTTP/1.1\nHost: x\nConnection: close\n\n",
    "empty request": b"\r\n\r\n",
    "binary junk": bytes(range(256)) * 4,
    "TLS hello on plain HTTP": bytes.fromhex("16030100a5010000a10303") + os.urandom(160),
    # Headers.
    "no Host": b"GET /videos HTTP/1.1\r\n\r\n",
    "two Hosts": request_bytes("GET", b"/videos", ("Host", "evil.example")),
    "control bytes in Host": request_bytes("GET", b"/videos", ("Host", "\x01\x02")),
    "broken IPv6 Host": b"GET /videos HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n",
    "8 KiB Host": b"GET /videos HTTP/1.1\r\nHost: " + LONG + b"\r\n\r\n",
    "headers over the limit": request_bytes("GET", b"/videos", X_Filler="x" * 70000),
    "a thousand headers": request_bytes("GET", b"/videos", *((f"X-{n}", "y") for n in range(1000))),
    "header without a colon": b"GET /videos HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    "empty header name": b"GET /videos HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n",
    "NUL in a header": b"GET /videos HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "obsolete line folding": b"GET /videos HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n",
    "space before the colon": b"GET /videos HTTP/1.1\r\nHost: x\r\nRange : bytes=0-1\r\n\r\n",
    "non-latin-1 header bytes": b"GET /videos/alpha/stream HTTP/1.1\r\nHost: x\r\nRange: bytes=\xff\xfe-\r\n\r\n",
    "two Ranges": request_bytes("GET", b"/videos/alpha/stream", ("Range", "bytes=0-1"), ("Range", "bytes=5-9")),
    "huge Range numbers": request_bytes("GET", b"/videos/alpha/stream", Range="bytes=" + "9" * 1000 + "-"),
    "Range of 8 KiB": request_bytes("GET", b"/videos/alpha/stream", Range="bytes=" + "0-0," * 2000),
    "Range in another unit": request_bytes("GET", b"/videos/alpha/stream", Range="seconds=1-2"),
    "negative Range": request_bytes("GET", b"/videos/alpha/stream", Range="bytes=-1-5"),
    "garbage If-Range": request_bytes("GET", b"/videos/alpha/stream", Range="bytes=0-1", If_Range="\x7f\x01garbage"),
    "year-10000 If-Modified-Since": request_bytes("GET", b"/videos/alpha/stream",
                                                   If_Modified_Since="Sat, 01 Jan 10000 00:00:00 GMT"),
    "year-1 If-Unmodified-Since": request_bytes("GET", b"/videos/alpha/stream",
                                                 If_Unmodified_Since="Mon, 01 Jan 0001 00:00:00 GMT"),
    "8 KiB If-None-Match": request_bytes("GET", b"/videos/alpha/stream", If_None_Match='"x", ' * 1500),
    "star If-Match": request_bytes("GET", b"/videos/alpha/stream", If_Match="*"),
    "garbage dates on a poster": request_bytes("GET", b"/videos/alpha/poster", If_Modified_Since="\x01\x02"),
    "garbage Range on a static file": request_bytes("GET", b"/static/binge.css", Range="bytes=99999999-"),
    "Binge-Via that is no chain of ids": request_bytes("GET", b"/videos", Binge_Via="a b,\x7f, ../x"),
    "Binge-Via of 8 KiB": request_bytes("GET", b"/videos/alpha/manifest", Binge_Via="x" * 9000),
    "odd X-Forwarded-For": request_bytes("GET", b"/presence", X_Forwarded_For="\x7f, ,,, 1.2.3.4, ::ffff:1.1.1.1"),
    "long X-Forwarded-For": request_bytes("GET", b"/presence", X_Forwarded_For="1.1.1.1, " * 3000),
    "Content-Length on a GET": request_bytes("GET", b"/videos", Content_Length="5")[:-2] + b"\r\nhello",
    "Content-Length larger than the body": request_bytes("GET", b"/videos", Content_Length="500")[:-2] + b"\r\nhi",
    "negative Content-Length": request_bytes("GET", b"/videos", Content_Length="-1"),
    "huge Content-Length": request_bytes("GET", b"/videos", Content_Length="9" * 30),
    "two different Content-Lengths": request_bytes("GET", b"/videos", ("Content-Length", "1"),
                                                   ("Content-Length", "2"))[:-2] + b"\r\nab",
    "Content-Length list": request_bytes("GET", b"/videos", Content_Length="1, 2")[:-2] + b"\r\nab",
    "Expect: 100-continue": request_bytes("GET", b"/videos", Expect="100-continue", Content_Length="2")[:-2]
    + b"\r\nab",
    "websocket upgrade without a key": request_bytes("GET", b"/presence", Upgrade="websocket", Connection="Upgrade"),
    "websocket upgrade without Connection": request_bytes("GET", b"/presence", Upgrade="websocket"),
    "websocket upgrade, version 99": request_bytes("GET", b"/presence", Upgrade="websocket", Connection="Upgrade",
                                                   Sec_WebSocket_Key="eA==", Sec_WebSocket_Version="99"),
    "websocket upgrade on a stream": request_bytes("GET", b"/videos/alpha/stream", Upgrade="websocket",
                                                   Connection="Upgrade"),
    # Smuggling-ish: a second request hidden in the first one's framing.
    "CL.TE": request_bytes("POST", b"/videos", Content_Length="6", Transfer_Encoding="chunked")[:-2]
    + b"\r\n0\r\n\r\nGET /videos/alpha/stream HTTP/1.1\r\nHost: x\r\n\r\n",
    "TE.CL": request_bytes("POST", b"/videos", Transfer_Encoding="chunked", Content_Length="3")[:-2]
    + b"\r\n1\r\nZ\r\n0\r\n\r\n",
    "obfuscated Transfer-Encoding": request_bytes("POST", b"/videos", Transfer_Encoding=" chunked, identity")[:-2]
    + b"\r\n0\r\n\r\n",
    "chunked GET with a bad size": request_bytes("GET", b"/videos", Transfer_Encoding="chunked")[:-2]
    + b"\r\nzz\r\n\r\n",
    "chunk size overflow": request_bytes("POST", b"/videos", Transfer_Encoding="chunked")[:-2]
    + b"\r\n" + b"f" * 40 + b"\r\nx\r\n0\r\n\r\n",
    "CRLF injected in a header value": b"GET /videos HTTP/1.1\r\nHost: x\r\nX-A: a\rGET /secret HTTP/1.1\r\n\r\n",
    "pipelined after a bad request": b"GET /videos HTTP/1.1\r\n\r\n"
    b"GET /videos/alpha/stream HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("name", ODD_REQUESTS)
def test_odd_requests_get_a_clean_answer_or_a_close(clean, name):
    """Each malformed or hostile request gets a 4xx (or a legitimate 2xx/3xx/206/304/416), with a JSON
    body on API paths, or a closed connection; never a 5xx, a traceback or a hang."""
    raw = ODD_REQUESTS[name]
    method = raw.split(b" ", 1)[0].decode("latin-1")
    target = raw.split(b" ")[1] if raw.count(b" ") >= 1 else b""
    send_and_check(clean.port, method, target, raw)


SEGMENTS = [
    b"..", b".", b"", b"%2e%2e", b"%2E%2e", b".%2e", b"%2f", b"%2F", b"%5c", b"\\", b"%00", b"%ff", b"%c0%af", b"%25",
    b"%252e%252e%252f", b"%", b"%zz", b";", b"*", b"~", b"#", b"?", b"%3f", b"%20", b"+", b"\xc3\xa9", b"%C3%A9",
    b"\xe2\x80\xae", b"videos", b"video", b"alpha", b"beta", b"stream", b"captions", b"caption", b"en", b"en.vtt",
    b"fr", b"poster", b"data", b"manifest", b"pieces", b"0", b"peers", b"have", b"sources", b"static",
    b"binge.css", b"watch", b"presence", b"healthz", b"secret.txt", LONG,
]
METHODS = ["GET", "GET", "GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH", "TRACE", "PROPFIND"]
TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

targets = st.builds(
    lambda segments, query: b"/" + b"/".join(segments) + query,
    st.lists(st.one_of(st.sampled_from(SEGMENTS), st.binary(max_size=12)), max_size=6),
    st.one_of(st.just(b""), st.binary(max_size=20).map(lambda q: b"?" + q)),
)


@HYPOTHESIS
@given(method=st.one_of(st.sampled_from(METHODS), st.text(TOKEN_CHARS, min_size=1, max_size=12)), target=targets)
def test_any_request_target_gets_a_clean_answer(clean, method, target):
    """Any method and any target bytes (dot segments, encoded slashes, NULs, bad escapes,
    unicode, 8 KiB segments) get a clean answer or a close, and nothing leaks."""
    send_and_check(clean.port, method, target, request_bytes(method, target))


HEADER_NAMES = [
    "Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "Host",
    "X-Forwarded-For", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Origin", "Expect",
    "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Accept-Encoding", "Cookie", "Binge-Via",
]
HEADER_VALUES = [
    "bytes=0-0", "bytes=0-", "bytes=-1", "bytes=1-0", "bytes=0-1,2-3", "bytes=99999999999999999999-", "bytes=",
    '"x"', "W/\"x\"", "*", "Mon, 01 Jan 0001 00:00:00 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
    "0", "-1", "5", "99999999999999999999", "chunked", "identity", "close", "keep-alive, Upgrade", "websocket",
    "1.2.3.4", "1.2.3.4, 5.6.7.8", "::1", "", " ", "null", "http://evil.example", "100-continue", "x" * 9000,
]
header_values = st.one_of(
    st.sampled_from(HEADER_VALUES),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),  # CR, LF, NUL and all
)
headers = st.lists(
    st.tuples(st.one_of(st.sampled_from(HEADER_NAMES), st.text(TOKEN_CHARS, min_size=1, max_size=20)), header_values),
    max_size=6,
)
PATHS = [b"/videos/alpha/stream", b"/videos/video/beta", b"/videos", b"/videos/alpha", b"/videos/alpha/captions/en",
         b"/videos/video/alpha/caption", b"/videos/alpha/poster", b"/healthz", b"/presence", b"/", b"/watch/alpha",
         b"/static/binge.css", b"/nope"]


@HYPOTHESIS
@given(method=st.sampled_from(["GET", "GET", "HEAD", "OPTIONS", "POST"]), target=st.sampled_from(PATHS),
       fields=headers, body=st.binary(max_size=16))
def test_any_headers_get_a_clean_answer(clean, method, target, fields, body):
    """Duplicate, oversized and garbage Range, If-*, Host, X-Forwarded-For, Content-Length and
    Transfer-Encoding headers, raw control bytes included, on every route: a clean answer or a close."""
    send_and_check(clean.port, method, target, request_bytes(method, target, *fields) + body)


def test_a_pipelined_flood_is_answered_in_order(clean):
    """Two hundred requests in one write are all answered, in order, on the one connection."""
    raw = b"".join(request_bytes("GET", b"/videos/alpha/stream", close=n == 199, Range=f"bytes={n}-{n}")
                   for n in range(200))
    answers = responses(exchange(clean.port, raw), "GET")
    assert [status for status, _, _ in answers] == [206] * 200
    starts = [headers["content-range"].split()[1].split("-")[0] for _, headers, _ in answers]
    assert starts == [str(n) for n in range(200)]


def test_idle_and_half_sent_connections_do_not_block_others(clean):
    """Fifty connections that send part of a request and stall do not keep others from being served."""
    stalled = []
    try:
        for n in range(50):
            sock = socket.create_connection(("127.0.0.1", clean.port))
            sock.sendall(b"GET /videos/alpha/stream HTTP/1.1\r\nHost: x\r\nRange: bytes=0-"[: n + 1])
            stalled.append(sock)
        assert_still_serving(clean.port)
    finally:
        for sock in stalled:
            sock.close()


# ---------------------------------------------------------------- raw websocket

CLOSED = "closed"


class RawWebSocket:
    """A websocket client on a blocking socket that sends any frame, well-formed or not."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT)
        self.sock.sendall(upgrade_request())
        self.buffer = b""
        self.closed = False
        while b"\r\n\r\n" not in self.buffer:
            self._receive()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        welcome = self.next_message()
        assert welcome["type"] == "welcome"
        self.socket_id = welcome["socketId"]

    def send(self, *frames: bytes) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(b"".join(frames))

    def send_text(self, text: str | bytes) -> None:
        self.send(frame(TEXT, text.encode() if isinstance(text, str) else text))

    def read_frame(self) -> tuple[int, bytes] | None:
        """The next frame from the server: (opcode, payload); None once the connection is closed."""
        try:
            while len(self.buffer) < 2:
                self._receive()
            length = self.buffer[1] & 0x7F
            start = 2 + {126: 2, 127: 8}.get(length, 0)
            while len(self.buffer) < start:
                self._receive()
            if length >= 126:
                length = int.from_bytes(self.buffer[2:start], "big")
            while len(self.buffer) < start + length:
                self._receive()
        except (ConnectionError, EOFError):
            return None
        opcode, payload = self.buffer[0] & 0x0F, self.buffer[start : start + length]
        self.buffer = self.buffer[start + length :]
        return opcode, payload

    def next_message(self) -> dict:
        opcode, payload = self.read_frame()
        assert opcode == TEXT
        return json.loads(payload)

    def outcome(self) -> str | int:
        """What the last bad message got: its error text, or the close code ("closed" without one)."""
        while (received := self.read_frame()) is not None:
            opcode, payload = received
            if opcode == CLOSE:
                return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else CLOSED
            if opcode == TEXT and (message := json.loads(payload))["type"] == "error":
                return message["error"]
        return CLOSED

    def presence_until(self, predicate) -> dict:
        while True:
            received = self.read_frame()
            assert received is not None, "the socket closed"
            opcode, payload = received
            message = json.loads(payload) if opcode == TEXT else {}
            if message.get("type") == "presence" and predicate(message["presence"]):
                return message["presence"]

    def _receive(self) -> None:
        try:
            chunk = self.sock.recv(1 << 20)
        except TimeoutError:
            pytest.fail(f"no frame and no close within {ANSWER_TIMEOUT}s")
        if not chunk:
            raise EOFError()
        self.buffer += chunk

    def __enter__(self) -> "RawWebSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()
        self.closed = True


@pytest.fixture(scope="module")
def ws_served(tmp_path_factory, sample_videos):
    """The app with room for 256 KiB messages, so a 100k-deep JSON reaches the parser, and a high rate limit."""
    from media.filesystem_ingest import ingest_into_library

    root = tmp_path_factory.mktemp("wsfuzz")
    (root / "library").mkdir()
    config = make_config(root, presence={"max_message_bytes": 256 * 1024, "messages_per_second": 1000})
    for item in sample_videos:
        ingest_into_library(config, item, lambda done: None)
    server = Served(config)
    yield server
    server.close()


@pytest.fixture
def ws_clean(ws_served):
    """As ``clean``, and a bystander socket that must still hear presence changes after the test."""
    with RawWebSocket(ws_served.port) as bystander:
        baseline = ws_served.counts()
        ws_served.errors.take()
        yield ws_served
        assert ws_served.errors.take() == []
        with RawWebSocket(ws_served.port) as watcher:
            watcher.send_text('{"type": "watch", "video": "beta"}')
            presence = bystander.presence_until(lambda p: watcher.socket_id in watching(p, "beta"))
            assert bystander.socket_id in presence["sockets"]
    # The bystander's two ends, client and server, are closed now.
    ws_served.settled((baseline[0], baseline[1] - 2))


def watching(presence: dict, video: str) -> set[str]:
    return {entry["socketId"] for entry in presence["videos"].get(video, [])}


def deep(opening: str, closing: str, depth: int) -> str:
    return opening * depth + closing * depth


# Frames to send, and the outcome each must get: an error text, a close code, or CLOSED (any close).
BIG = 300 * 1024
FRAME_CASES = {
    "empty text frame": ([frame(TEXT, b"")], "message is not JSON"),
    "invalid UTF-8": ([frame(TEXT, b'{"type": "\xff\xfe"}')], CLOSED),
    "lone surrogate in UTF-8": ([frame(TEXT, b'{"type": "\xed\xa0\x80"}')], CLOSED),
    "binary frame of JSON": ([frame(BINARY, b'{"type": "dance"}')], "unknown message type 'dance'"),
    "binary garbage": ([frame(BINARY, os.urandom(64))], "message is not JSON"),
    "fragmented message": ([frame(TEXT, b'{"type"', fin=False), frame(CONTINUATION, b': "da', fin=False),
                            frame(CONTINUATION, b'nce"}')], "unknown message type 'dance'"),
    "ping between fragments": ([frame(TEXT, b'{"type"', fin=False), frame(PING, b"hi"), frame(CONTINUATION, b': "x"}')],
                               "unknown message type 'x'"),
    "continuation without a start": ([frame(CONTINUATION, b"{}")], CLOSED),
    "new message inside a fragmented one": ([frame(TEXT, b"{", fin=False), frame(TEXT, b"}")], CLOSED),
    "fragments over the frame limit": ([frame(TEXT, b" " * (600 * 1024), fin=False),
                                       frame(CONTINUATION, b" " * (600 * 1024))], 1009),
    "message over the size limit": ([frame(TEXT, b" " * BIG)], f"message too large: {BIG} bytes, at most {256 * 1024}"),
    "frame claiming 2**63 bytes": ([frame(TEXT, b"", length=(1 << 63) - 1)], 1009),
    # RFC 6455 has a server close on an unmasked client frame; Tornado reads it as any other.
    "unmasked frame": ([frame(TEXT, b"{}", masked=False)], "unknown message type None"),
    "reserved bits set": ([frame(TEXT, b"{}", rsv=0b111)], CLOSED),
    "reserved opcode": ([frame(0x3, b"{}")], CLOSED),
    "ping over 125 bytes": ([frame(PING, b"x" * 200)], CLOSED),
    "fragmented ping": ([frame(PING, b"x", fin=False)], CLOSED),
    "close with a one-byte payload": ([frame(CLOSE, b"\x03")], CLOSED),
    "100k-deep arrays": ([frame(TEXT, deep("[", "]", 100_000).encode())], "message is not JSON"),
    "40k-deep objects": ([frame(TEXT, ('{"a":' * 40_000 + "1" + "}" * 40_000).encode())], "message is not JSON"),
    "100k unclosed brackets": ([frame(TEXT, b"[" * 100_000)], "message is not JSON"),
    "deep nesting inside a watch": (
        [frame(TEXT, ('{"type": "watch", "video": ' + deep("[", "]", 100_000) + "}").encode())], "message is not JSON"),
    "1000-deep arrays": ([frame(TEXT, deep("[", "]", 1000).encode())], "a message must be a JSON object"),
    "huge number": ([frame(TEXT, b'{"type": ' + b"9" * 5000 + b"}")], "message is not JSON"),
    "NaN and Infinity": ([frame(TEXT, b'{"type": NaN, "video": Infinity}')], "unknown message type nan"),
    "escaped lone surrogate": ([frame(TEXT, b'{"type": "\\ud800"}')], "unknown message type '\\ud800'"),
    "video that is a list": ([frame(TEXT, b'{"type": "watch", "video": ["alpha"]}')], "unknown video ['alpha']"),
    "peer with a lone surrogate": (
        [frame(TEXT, b'{"type": "watch", "video": "alpha", "peer": "http://127.0.0.1:1/\\ud800"}')],
        "'peer' must be an http(s) URL whose host is your address 127.0.0.1"),
    "peer with a broken IPv6 host": (
        [frame(TEXT, b'{"type": "watch", "video": "alpha", "peer": "http://[::1"}')],
        "'peer' must be an http(s) URL whose host is your address 127.0.0.1"),
    "peer that is not a string": ([frame(TEXT, b'{"type": "watch", "video": "alpha", "peer": {"a": 1}}')],
                                  "'peer' must be a URL"),
}


@pytest.mark.parametrize("case", FRAME_CASES)
def test_hostile_frames_get_an_error_or_a_close(ws_clean, case):
    """Huge, fragmented, binary, non-UTF-8, unmasked and malformed frames, and malformed or 100k-deep
    JSON, each get an error message or a close; another client keeps receiving presence."""
    frames, expected = FRAME_CASES[case]
    with RawWebSocket(ws_clean.port) as ws:
        ws.send(*frames)
        got = ws.outcome()
        if expected == CLOSED:
            assert isinstance(got, int) or got == CLOSED, got
            return
        assert got == expected
        if isinstance(expected, str):
            # An error leaves the socket usable.
            ws.send_text('{"type": "watch", "video": "alpha"}')
            ws.presence_until(lambda p: ws.socket_id in watching(p, "alpha"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(["watch", "leave", "alpha", "beta", "http://127.0.0.1:1/", "type", "video", "peer"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["type", "video", "peer"]) | st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
messages = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=60),
)


@pytest.fixture
def reused_socket(ws_clean):
    """``get()``: an open socket, the same one until it is closed, then a new one."""
    sockets: list[RawWebSocket] = []

    def get() -> RawWebSocket:
        if not sockets or sockets[-1].closed:
            sockets.append(RawWebSocket(ws_clean.port))
        return sockets[-1]

    yield get
    for ws in sockets:
        ws.close()


SENTINEL_ERROR = "unknown message type 'sentinel'"


@HYPOTHESIS
@given(message=messages, binary=st.booleans())
def test_any_message_gets_an_answer_and_the_socket_stays_sane(reused_socket, message, binary):
    """Any JSON, text or bytes, in a text or binary frame: the socket stays usable, which an error
    for a following bad message proves, except that a text frame that is not UTF-8 closes it."""
    ws = reused_socket()
    ws.send(frame(BINARY if binary else TEXT, message), frame(TEXT, b'{"type": "sentinel"}'))
    while (got := ws.outcome()) != SENTINEL_ERROR:
        if got == CLOSED or isinstance(got, int):
            assert not binary and not is_utf8(message), (message, got)
            ws.close()
            return


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_a_message_flood_is_cut_off_and_others_keep_receiving(ws_clean):
    """Five thousand messages in one burst: the sender is closed with 1008, everyone else carries on."""
    with RawWebSocket(ws_clean.port) as ws:
        ws.send(frame(TEXT, b'{"type": "leave"}') * 5000)
        while (got := ws.outcome()) == "too many messages; slow down":
            pass
        assert got == 1008


def test_many_sockets_connecting_and_leaving_leave_nothing_behind(ws_clean):
    """Twenty-five sockets that connect, watch and drop without a close handshake leave presence as it was."""
    before = ws_clean.app.presence.socket_count()
    sockets = [RawWebSocket(ws_clean.port) for _ in range(25)]
    for ws in sockets:
        ws.send_text('{"type": "watch", "video": "alpha"}')
    for ws in sockets:
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.close()
    deadline = time.monotonic() + 5
    while ws_clean.app.presence.socket_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ws_clean.app.presence.socket_count() == before
