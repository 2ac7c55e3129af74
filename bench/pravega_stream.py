"""Streaming throughput on Pravega: Binge+ against the raw client reading the same stream.

A 256 MiB video of random bytes is ingested into a fresh scope, and two
loads read random 1 MiB ranges of it for the same time, in alternating
rounds so that noise on this shared machine hits both alike:

- Binge+: ``server.py`` on that scope, loaded by wrk over ``--connections``
  connections (as in ``bench/stream_http.py``);
- raw: as many processes as the server has reader workers
  (``pravega.workers``), each reading ranges with the client in a plain loop
  (seek, then ``readinto`` until the range is in). That is the limit of this
  path: the server's workers make exactly these calls, then hand the bytes on.

The server's event loop must never be blocked for long. A probe inside it,
a task that sleeps 5 ms over and over and notes how late it wakes, writes
the worst lag of every half second to a file; the worst during the server's
rounds is reported. On a busy machine a process also waits for a CPU, and
the loop is late without being blocked, so each lag is also bounded by the
CPU time the loop's thread used meanwhile: that second figure is the time
the loop really spent running something else. The probe is put in by
running ``server.py``'s ``main`` in a small wrapper, so the server carries
no benchmark code.

    .venv/bin/python bench/pravega_stream.py [--controller URI | --cluster] [--seconds 10] [--rounds 5]
                                             [--connections 16] [--workers 2]

Without ``--controller`` it starts a Pravega of its own and stops it at the
end: a standalone (scripts/pravega, with its own home and ports, a 3 GiB
heap and a 1 GiB segment cache: the emulator's 128 MiB cache fails the
container when 256 MiB are written at once), or with ``--cluster`` the
durable cluster (scripts/pravega cluster, its data in a temporary folder,
its ports from ``PRAVEGA_CLUSTER_PORT_BASE``, 12000 by default), so both
contenders read through its controller and two segment stores. With
``--controller`` it uses that Pravega and deletes its scope at the end.
Needs wrk (scripts/setup --test installs it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from stream_http import FILE_SIZE, RANGE, WRK_SCRIPT, wrk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from harness.loopback import cpu_seconds, process_tree  # noqa: E402
from harness.media import write_random_video  # noqa: E402
from harness.pravega import PravegaCluster, PravegaNotStarted, StandalonePravega  # noqa: E402
from harness.server_process import ServerProcess  # noqa: E402
from media.pravega_store import ingest_into_pravega  # noqa: E402
from media.store import NewVideo  # noqa: E402
from pravega_workers.blocking import delete_scope, stream_manager  # noqa: E402
from settings import settings_from_dict  # noqa: E402

LAG_LIMIT_MS = 50.0

# One reader of the raw client: random 1 MiB ranges for a given time; prints ranges per second.
RAW_READER = """
import random, sys, time, pravega_client
uri, scope, stream, size, range_, seconds = sys.argv[1:4] + [int(a) for a in sys.argv[4:6]] + [float(sys.argv[6])]
manager = pravega_client.StreamManager(uri)
reader = manager.create_byte_stream(scope, stream)
piece = bytearray(min(range_, 512 * 1024))  # readinto fills at most 512 KiB
rng = random.Random()
def read_range():
    reader.seek(rng.randrange(size // range_) * range_)
    got = 0
    while got < range_:
        got += reader.readinto(piece)
read_range()
count, started = 0, time.monotonic()
while time.monotonic() - started < seconds:
    read_range()
    count += 1
print(count / (time.monotonic() - started))
"""

# server.py's main, with a task on its event loop that measures how late a 5 ms sleep wakes up,
# by the clock and in CPU time of the loop's thread.
LAG_SERVER = """
import asyncio, sys, time
sys.path.insert(0, sys.argv[1])
import server

async def probe(path, interval=0.005, window=0.5):
    loop = asyncio.get_running_loop()
    with open(path, "a", buffering=1) as out:
        worst = worst_running = 0.0
        started = loop.time()
        while True:
            before, cpu_before = loop.time(), time.thread_time()
            await asyncio.sleep(interval)
            now = loop.time()
            lag = now - before - interval
            worst = max(worst, lag)
            worst_running = max(worst_running, min(lag, time.thread_time() - cpu_before))
            if now - started >= window:
                out.write(f"{time.time():.3f} {worst * 1000:.2f} {worst_running * 1000:.2f}\\n")
                worst = worst_running = 0.0
                started = now

serve = server.serve
async def serve_with_probe(config, ready=None):
    task = asyncio.create_task(probe(sys.argv[2]))
    try:
        await serve(config, ready)
    finally:
        task.cancel()
server.serve = serve_with_probe
sys.exit(server.main(sys.argv[3:]))
"""


def start_pravega(home: str) -> StandalonePravega:
    """A Pravega of the benchmark's own, with room to keep a 256 MiB stream in its cache."""
    pravega = StandalonePravega(home, PRAVEGA_HEAP="3g",
                                JAVA_TOOL_OPTIONS="-Dpravegaservice.cache.size.max=1073741824")
    try:
        pravega.start()
    except PravegaNotStarted as e:
        raise SystemExit(str(e)) from None
    return pravega


def start_cluster(data: str) -> PravegaCluster:
    cluster = PravegaCluster(data, int(os.environ.get("PRAVEGA_CLUSTER_PORT_BASE", "12000")))
    try:
        cluster.start()
    except PravegaNotStarted as e:
        cluster.stop()
        raise SystemExit(str(e)) from None
    return cluster


def raw_round(uri: str, scope: str, stream: str, processes: int, seconds: int) -> float:
    """Ranges per second that ``processes`` raw readers manage together."""
    procs = [subprocess.Popen([sys.executable, "-c", RAW_READER, uri, scope, stream, str(FILE_SIZE), str(RANGE),
                               str(seconds)], stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    rates = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a raw reader failed with status {proc.returncode}")
        rates.append(float(out))
    return sum(rates)


def worst_lag(path: str, windows: list[tuple[float, float]]) -> tuple[float, float]:
    """The worst lags, in ms, the probe saw in half-seconds within ``windows``: by the clock, and running."""
    worst = worst_running = 0.0
    with open(path) as f:
        for line in f:
            at, lag, running = (float(x) for x in line.split())
            if any(start + 0.5 <= at <= end for start, end in windows):
                worst, worst_running = max(worst, lag), max(worst_running, running)
    return worst, worst_running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--controller", help="a running Pravega's controller URI (default: start one)")
    source.add_argument("--cluster", action="store_true", help="start the durable cluster, not a standalone")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="pravega.workers, and so raw reader processes")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: run scripts/setup --test")

    work = tempfile.mkdtemp(prefix="binge-bench-pravega-")
    pravega = None
    uri = args.controller
    scope = f"bench-{uuid.uuid4().hex[:8]}"
    server = None
    try:
        if uri is None:
            print(f"starting a {'cluster' if args.cluster else 'Pravega'} of its own", flush=True)
            pravega = (start_cluster if args.cluster else start_pravega)(os.path.join(work, "pravega"))
            uri = pravega.uri
        video = os.path.join(work, "big.mp4")
        write_random_video(video, FILE_SIZE)
        settings = settings_from_dict({"storage": {"backend": "pravega"},
                                       "pravega": {"controller_uri": uri, "scope": scope, "workers": args.workers}})
        started = time.monotonic()
        record = ingest_into_pravega(settings, NewVideo(id="big", source_path=video, name="Big", mime_type="video/mp4",
                                                        duration_seconds=None, captions={}, poster=None),
                                     lambda done: None)
        print(f"ingested {FILE_SIZE // RANGE} MiB into {scope} in {time.monotonic() - started:.1f} s", flush=True)
        stream = record.locator

        lag_file = os.path.join(work, "lag.txt")
        server = ServerProcess(work, {
            "storage": {"backend": "pravega", "cache_dir": os.path.join(work, "cache")},
            "pravega": {"controller_uri": uri, "scope": scope, "workers": args.workers},
        }, log_level="WARNING", ready_path="/videos/big/stream",
            launcher=[sys.executable, "-c", LAG_SERVER, ROOT, lag_file]).start()
        server.wait_until_serving(30)
        url = server.url + server.ready_path
        script = os.path.join(work, "ranges.lua")
        with open(script, "w") as f:
            f.write(WRK_SCRIPT % {"pieces": FILE_SIZE // RANGE, "range": RANGE})

        # Warm Pravega's cache, the workers' streams and the server once before measuring.
        raw_round(uri, scope, stream, args.workers, 2)
        wrk(url, script, 2, args.connections)
        results: dict[str, list[float]] = {"raw": [], "binge": []}
        windows: list[tuple[float, float]] = []
        cpu: list[float] = []
        for round_ in range(args.rounds):
            results["raw"].append(raw_round(uri, scope, stream, args.workers, args.seconds))
            print(f"round {round_ + 1} raw    {results['raw'][-1]:7.1f} MiB/s", flush=True)
            cpu_before, started = cpu_seconds(process_tree(server.pid)), time.time()
            results["binge"].append(wrk(url, script, args.seconds, args.connections) * RANGE / 2**20)
            windows.append((started, time.time()))
            cpu.append((cpu_seconds(process_tree(server.pid)) - cpu_before) / (windows[-1][1] - started))
            lag, running = worst_lag(lag_file, windows[-1:])
            print(f"round {round_ + 1} Binge+ {results['binge'][-1]:7.1f} MiB/s  "
                  f"(worst loop lag {lag:.1f} ms, {running:.1f} ms of it running)", flush=True)

        raw, binge = statistics.median(results["raw"]), statistics.median(results["binge"])
        lag, running = worst_lag(lag_file, windows)
        print(f"\nrandom 1 MiB ranges of a 256 MiB stream on {uri}"
              f"{' (the cluster)' if args.cluster else ''}, {args.rounds} rounds of {args.seconds} s, medians:")
        print(f"  raw client, {args.workers} processes      {raw:7.1f} MiB/s")
        print(f"  Binge+, {args.workers} workers, {args.connections:3d} conns   {binge:7.1f} MiB/s  "
              f"{binge / raw:.2f}x raw (target 0.70x)")
        print(f"  Binge+ CPU (server and workers): {statistics.median(cpu):.2f} cores")
        print(f"  event loop, worst lag during the Binge+ rounds: {lag:.1f} ms by the clock, "
              f"{running:.1f} ms of it running (limit {LAG_LIMIT_MS:.0f} ms)")
    finally:
        if server is not None:
            server.stop()
        if pravega is not None:
            pravega.stop()
        elif uri is not None:
            delete_scope(stream_manager(uri), scope)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
