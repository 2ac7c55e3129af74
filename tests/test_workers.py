"""``server.workers``: several worker processes behind one port, under one supervisor (ops.workers).

Every test runs ``server.py`` for real with two workers on a filesystem
library, and tells the workers apart by the ``worker`` field of /healthz.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from harness.clients import Download, silent_websocket
from harness.loopback import until
from harness.media import write_random_video
from harness.nodes import MiB
from harness.server_process import ROOT, ServerProcess
from peers.manifest_cache import PRECOMPUTE_DELAY
from tests.test_ops import sample

WORKERS = 2
BIG = 32 * MiB
# Seconds a killed worker may take to be replaced and answer: the back-off
# (ops.workers.RESTART_MIN, 0.5 s) and a worker's start (under 2 s here),
# with room for a machine three times slower.
REPLACED_WITHIN = 30.0


# Seconds between asking again when a worker has not answered: one being
# replaced takes a second or two, which is no reason to spin a core.
ASK_AGAIN = 0.02


def worker_of(url: str) -> tuple[int, int]:
    """(index, pid) of the worker that answers ``/healthz`` on a new connection."""
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
        worker = json.loads(response.read())["worker"]
    return worker["index"], worker["pid"]


def on_a_worker(server: ServerProcess, path: str, headers: dict | None = None) -> tuple[dict, int, dict]:
    """``/healthz``'s ``worker`` and the status and JSON of ``path``, both asked on one connection, so of one worker."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        health = json.loads(conn.getresponse().read())
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return health["worker"], response.status, json.loads(response.read())
    finally:
        conn.close()


def every_worker(server: ServerProcess, path: str = "/healthz", headers: dict | None = None
                 ) -> dict[int, tuple[dict, int, dict]]:
    """Index -> what :func:`on_a_worker` gives, asked on new connections until each worker has answered.

    SO_REUSEPORT spreads new connections evenly, so two running workers
    answer within a few; a worker being replaced, once it is back.
    """
    seen: dict[int, tuple] = {}
    deadline = time.monotonic() + REPLACED_WITHIN
    while len(seen) < WORKERS:
        assert time.monotonic() < deadline, f"not every worker answered: {sorted(seen)}\n{server.log_tail()}"
        try:
            answer = on_a_worker(server, path, headers)
        except ConnectionError:  # queued on a worker as it was killed (see ops.workers)
            time.sleep(ASK_AGAIN)
            continue
        if answer[0]["index"] in seen:
            time.sleep(ASK_AGAIN)
        seen[answer[0]["index"]] = answer
    return seen


def all_workers(server: ServerProcess) -> dict[int, int]:
    """Index -> pid of every worker (the last may still be starting)."""
    return {index: worker["pid"] for index, (worker, _, _) in every_worker(server).items()}


def workers_server(tmp_path, limits: dict | None = None, **server) -> ServerProcess:
    """``server.py`` with :data:`WORKERS` workers on the library in ``tmp_path/library`` (made if missing)."""
    library = tmp_path / "library"
    library.mkdir(exist_ok=True)
    return ServerProcess(tmp_path, {
        "server": {"workers": WORKERS, **server},
        "storage": {"library": str(library), "cache_dir": str(tmp_path / "cache")},
        **({"limits": limits} if limits else {}),
    })


def run_dirs() -> set[str]:
    return {name for name in os.listdir("/tmp") if name.startswith("binge-workers-")}


def test_workers_share_one_port_and_the_kernel_spreads_connections_evenly(tmp_path):
    with workers_server(tmp_path) as server:
        all_workers(server)
        counts = collections.Counter(worker_of(server.url)[0] for _ in range(400))
    print(f"400 connections over {WORKERS} workers: {dict(sorted(counts.items()))}")
    # SO_REUSEPORT hashes each connection onto a worker: about 200 each,
    # give or take 10 (one standard deviation); 140 is six of them off.
    assert sorted(counts) == list(range(WORKERS)) and min(counts.values()) >= 140, counts
    assert server.process.returncode == 0


def test_a_killed_worker_is_replaced_while_the_port_keeps_answering(tmp_path):
    with workers_server(tmp_path) as server:
        seen = all_workers(server)
        os.kill(seen[0], signal.SIGKILL)
        # Once it is dead (its connections not yet accepted are reset with
        # it: the price of SO_REUSEPORT, see ops.workers), the others answer
        # every new connection.
        deadline = time.monotonic() + REPLACED_WITHIN
        while f"worker 0 (pid {seen[0]}) killed by SIGKILL" not in open(server.log_path).read():
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.01)
        assert seen[0] not in {worker_of(server.url)[1] for _ in range(20)}, "a dead worker answered"
        deadline = time.monotonic() + REPLACED_WITHIN
        while (answer := worker_of(server.url))[0] != 0:
            assert time.monotonic() < deadline, f"no worker 0 again within {REPLACED_WITHIN} s:\n{server.log_tail()}"
        assert answer[1] != seen[0]
    assert "Traceback" not in open(server.log_path).read()


def test_sigterm_lets_bodies_in_flight_finish_then_exits_0_with_no_worker_left(tmp_path):
    asyncio.run(_sigterm_scenario(tmp_path))


async def _sigterm_scenario(tmp_path) -> None:
    grace = 5.0
    server = workers_server(tmp_path, shutdown_grace=grace)
    content = write_random_video(str(tmp_path / "library" / "big.mp4"), BIG)
    dirs_before = run_dirs()
    with server:
        await server.ready(video="big")
        pids = (await asyncio.to_thread(all_workers, server)).values()
        # Two bodies, read slowly through small buffers: held open by the reader, not the server.
        downloads = [await Download.start(server.port, "/videos/big/stream") for _ in range(2)]
        firsts = [await d.read(MiB) for d in downloads]
        signalled = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        await asyncio.sleep(1.0)  # still slow: the bodies stay in flight past the signal
        bodies = [first + await d.rest(timeout=grace) for first, d in zip(firsts, downloads)]
        assert time.monotonic() - signalled < grace
        assert all(body == content for body in bodies), [len(b) for b in bodies]
        await asyncio.to_thread(server.process.wait, grace + 10)
        assert server.process.returncode == 0, server.log_tail()
        for d in downloads:
            d.close()
    assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")], "a worker outlived its supervisor"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port)).close()
    assert run_dirs() <= dirs_before, "the run directory was left behind"
    log = open(server.log_path).read()
    assert "Traceback" not in log and " ERROR " not in log, log
    assert "SIGTERM: stopping 2 workers" in log


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        return response.read().decode()


def test_metrics_sum_every_worker_whichever_answers(tmp_path):
    asyncio.run(_metrics_scenario(tmp_path))


async def _metrics_scenario(tmp_path) -> None:
    server = workers_server(tmp_path)
    write_random_video(str(tmp_path / "library" / "big.mp4"), BIG)

    def health_count(text: str) -> float:
        return sample(text, "binge_http_requests_total", route="HealthHandler", status="200")

    with server:
        await server.ready(video="big")
        await asyncio.to_thread(all_workers, server)
        before = health_count(scrape(server.url))
        answered = collections.Counter(worker_of(server.url)[0] for _ in range(40))
        assert len(answered) == WORKERS, answered  # so the count below is of both workers
        stream = await Download.start(server.port, "/videos/big/stream")
        await stream.read(MiB)
        websocket = silent_websocket(server.port, rcvbuf=None)

        # Every scrape, from whichever worker takes it, sees the sums; the
        # other worker's gauges within GAUGE_REFRESH (1 s) of their change.
        def summed() -> list[str] | None:
            texts = [scrape(server.url) for _ in range(8)]
            ok = all(sample(t, "binge_active_streams") == sample(t, "binge_websocket_clients") == 1
                     and health_count(t) == before + 40 for t in texts)
            return texts if ok else None

        texts = await until(lambda: asyncio.to_thread(summed), timeout=10, what="metrics summed over the workers")
        assert sample(texts[0], "binge_streamed_bytes_total", store="filesystem") >= MiB
        stream.close()
        websocket.close()


def test_each_manifest_is_computed_once_whichever_workers_ask(tmp_path):
    asyncio.run(_manifests_scenario(tmp_path))


async def _manifests_scenario(tmp_path) -> None:
    server = workers_server(tmp_path)
    server.config["storage"]["scan_interval"] = 0.2
    videos = [f"v{n}" for n in range(2)]

    def manifest(video: str) -> dict:
        with urllib.request.urlopen(f"{server.url}/videos/{video}/manifest", timeout=30) as response:
            return json.loads(response.read())

    def catalog_sizes() -> dict[int, int]:
        """Index -> the number of videos in that worker's catalog, from each worker."""
        sizes: dict[int, int] = {}
        while len(sizes) < WORKERS:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as response:
                health = json.loads(response.read())
            sizes[health["worker"]["index"]] = health["store"]["videos"]
        return sizes

    with server:
        await server.ready()
        # The videos come while both workers run: each sees them within a
        # scan, and the requests below reach both at once, long before
        # either could hash 64 MiB, so that without the lock both would.
        for n, video in enumerate(videos):
            write_random_video(str(tmp_path / f"{video}.mp4"), 64 * MiB, seed=n)
            os.rename(tmp_path / f"{video}.mp4", tmp_path / "library" / f"{video}.mp4")
        await until(lambda: set(catalog_sizes().values()) == {len(videos)}, timeout=REPLACED_WITHIN,
                    what="both workers listing the videos")
        answers = await asyncio.gather(*(asyncio.to_thread(manifest, v) for _ in range(4) for v in videos))
        for video in videos:
            assert len({json.dumps(a) for a in answers if a["id"] == video}) == 1
        # Each worker's own precomputing (PRECOMPUTE_DELAY after the change) finds them done.
        await asyncio.sleep(PRECOMPUTE_DELAY + 1)
    log = open(server.log_path).read()
    computed = collections.Counter(line.split("manifest of ")[1].split(":")[0]
                                   for line in log.splitlines() if "manifest of " in line)
    assert computed == {video: 1 for video in videos}, computed


def run_server(tmp_path, text: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "library").mkdir(exist_ok=True)
    (tmp_path / "c.yaml").write_text(f"storage:\n  library: {tmp_path / 'library'}\n  cache_dir: {tmp_path / 'c'}\n"
                                     + text)
    return subprocess.run([sys.executable, os.path.join(ROOT, "server.py"), "--config", str(tmp_path / "c.yaml"),
                           *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("text, expected", [
    ("server:\n  workers: 0\n", "config error: server.workers: must be greater than 0, not 0\n"),
    ("server:\n  workers: 2\n  shutdown_grace: soon\n",
     "config error: server.shutdown_grace: must be a number, not 'soon'\n"),
    ("server:\n  workers: 2\npeer:\n  upstream: http://origin.example:8080\n",
     "config error: server.workers: a peer node (peer.upstream set) runs one worker, not 2: "
     "its pieces and swarm are per process; leave it unset or 1\n"),
], ids=["zero", "bad-grace", "node"])
def test_a_config_error_stops_everything_in_one_line_before_any_worker(tmp_path, text, expected):
    result = run_server(tmp_path, text)
    assert (result.returncode, result.stderr) == (2, expected)


def test_a_taken_port_is_one_line_and_exit_1_before_any_worker(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server(tmp_path, "server:\n  workers: 2\n", "--port", str(port))
    assert (result.returncode, result.stderr) == (1, f"cannot listen on 127.0.0.1:{port}: Address already in use\n")
