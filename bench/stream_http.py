"""Streaming throughput: Binge+ against nginx and aiohttp, each with 1 process and with all cores.

One 256 MiB file is served on loopback and loaded with wrk: 50 connections
asking for random 1 MiB ranges. For each N of --workers (default: 1 and the
number of CPUs), the same file is served by nginx with N worker processes,
by aiohttp with N processes (its ``FileResponse``, each process a
``web.run_app`` with SO_REUSEPORT) and by Binge+ with ``server.workers: N``; at N = 1 also by Tornado's
``StaticFileHandler``. Rounds alternate between all of them, so that noise
on this shared machine hits all alike; the medians, their ratios to nginx
at the same N and to aiohttp, each server's cores used and CPU time per
request, and wrk's beside them, are printed, with the machine's load and
its reference loop. (On loopback the client's kernel work per request
depends on how the server sends, so wrk's CPU per request differs from
server to server, and where wrk shares the cores it counts.)

Placement: with N below the number of CPUs the servers run on CPUs 0..N-1
and wrk on the others (taskset), so the generator takes no server's core;
at N = all CPUs nothing is pinned and wrk shares the cores with the
servers, so each of those figures is "all cores less what wrk took" (wrk's
own cores used are printed beside them). Where wrk fills its own CPUs while
a server leaves some of its own idle, the bench says so: that server's rate
is then the pace wrk could ask at, and its CPU time per request is what
compares it with the others.

    .venv/bin/python bench/stream_http.py [--seconds 10] [--rounds 3] [--workers 1,2]

Needs nginx and wrk (scripts/setup --test installs them, and aiohttp).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.loopback import cpu_placement, cpu_seconds, loadavg, process_tree, reference_loop, rss_kib  # noqa: E402
from harness.media import write_random_video  # noqa: E402
from harness.server_process import ROOT, ListeningProcess, NginxProcess, ServerProcess  # noqa: E402

FILE_SIZE = 256 * 1024 * 1024
RANGE = 1024 * 1024

WRK_SCRIPT = """
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
  local start = math.random(0, %(pieces)d - 1) * %(range)d
  return wrk.format("GET", nil, {["Range"] = "bytes=" .. start .. "-" .. (start + %(range)d - 1)})
end
"""

# StaticFileHandler hashes the whole file for its ETag and refuses files over
# 64 MiB; the usual fix, a version from size and mtime, is what we measure.
STATIC_SERVER = """
import asyncio, os, sys, tornado.web
class Files(tornado.web.StaticFileHandler):
    @classmethod
    def get_content_version(cls, abspath):
        st = os.stat(abspath)
        return f"{st.st_size:x}-{st.st_mtime_ns:x}"
async def main():
    app = tornado.web.Application([(r"/(.*)", Files, {"path": sys.argv[1]})])
    app.listen(int(sys.argv[2]), "127.0.0.1")
    await asyncio.Event().wait()
asyncio.run(main())
"""

# aiohttp with N processes: each its own ``web.run_app`` on the port with
# SO_REUSEPORT, so the kernel spreads the connections over them. (gunicorn's
# ``aiohttp.GunicornWebWorker``, the way aiohttp's docs deploy it, shares one
# listening socket instead: tried here, its first worker took every one of
# wrk's 50 connections and N = 2 served no more than N = 1.)
AIOHTTP_SERVER = """
import multiprocessing, os, signal, sys
from aiohttp import web
async def serve(request):
    return web.FileResponse(os.path.join(sys.argv[1], os.path.basename(request.match_info["name"])))
def run():
    app = web.Application()
    app.router.add_get("/{name}", serve)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), reuse_port=True, access_log=None, print=None)
if __name__ == "__main__":
    workers = [multiprocessing.Process(target=run) for _ in range(int(sys.argv[3]))]
    for worker in workers:
        worker.start()
    signal.signal(signal.SIGTERM, lambda *_: [worker.terminate() for worker in workers])
    for worker in workers:
        worker.join()
"""

LABELS = {"nginx": "nginx (sendfile)", "aiohttp": "aiohttp (FileResponse)", "binge": "Binge+ (filesystem store)",
          "static": "Tornado StaticFileHandler"}


def wrk(url: str, script: str, seconds: float, connections: int, prefix: list[str]) -> tuple[float, float]:
    """Requests per second, and wrk's own CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [*prefix, "wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} failed responses\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rate, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def generator_bound(workers: int, server_cores: dict[str, float], wrk_cores: dict[str, float]) -> str | None:
    """A note when wrk, on CPUs of its own, was what set the pace: its CPUs full, a server's not.

    Then that server's rate says how fast wrk could ask it, not how fast it
    can serve, and its CPU time per request is the figure that compares it.
    """
    _, generator = cpu_placement(workers)
    if not generator:
        return None
    wrk_cpus = len(generator[-1].split(","))
    held_back = [name for name, used in server_cores.items()
                 if wrk_cores[name] >= 0.95 * wrk_cpus and used < 0.9 * workers]
    if not held_back:
        return None
    return (f"wrk filled its {wrk_cpus} CPU(s) while {', '.join(LABELS[name] for name in held_back)} used under "
            f"0.9 of their {workers}: there the generator set the rate, and CPU ms/request is what compares them")


def servers_for(work: str, library: str, workers: int) -> dict[str, ListeningProcess]:
    prefix, _ = cpu_placement(workers)
    servers: dict[str, ListeningProcess] = {
        "nginx": NginxProcess(work, library, name=f"nginx-{workers}", ready_path="/big.mp4", workers=workers,
                              prefix=prefix),
        "aiohttp": ListeningProcess(work, f"aiohttp-{workers}", lambda port: [
            *prefix, sys.executable, "-c", AIOHTTP_SERVER, library, str(port), str(workers)], ready_path="/big.mp4"),
        "binge": ServerProcess(
            work, {"server": {"workers": workers},
                   "storage": {"library": library, "cache_dir": os.path.join(work, f"cache-{workers}")}},
            f"binge-{workers}", log_level="WARNING", ready_path="/videos/big/stream",
            launcher=[*prefix, sys.executable, os.path.join(ROOT, "server.py")]),
    }
    if workers == 1:
        servers["static"] = ListeningProcess(work, "static", lambda port: [
            *prefix, sys.executable, "-c", STATIC_SERVER, library, str(port)], ready_path="/big.mp4")
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", default=f"1,{os.cpu_count()}",
                        help="comma-separated process counts N to run every server with")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    for tool in ("nginx", "wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed: run scripts/setup --test")

    print(f"nproc {os.cpu_count()}, load average {loadavg()}, reference loop {reference_loop():.2f} s", flush=True)
    work = tempfile.mkdtemp(prefix="binge-bench-")
    servers: dict[tuple[int, str], ListeningProcess] = {}
    try:
        library = os.path.join(work, "library")
        os.makedirs(library)
        write_random_video(os.path.join(library, "big.mp4"), FILE_SIZE)
        script = os.path.join(work, "ranges.lua")
        with open(script, "w") as f:
            f.write(WRK_SCRIPT % {"pieces": FILE_SIZE // RANGE, "range": RANGE})

        for n in counts:
            for name, server in servers_for(work, library, n).items():
                servers[n, name] = server
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_until_serving(60)

        # Warm the page cache and each server (every worker of it) before measuring.
        for (n, _), server in servers.items():
            wrk(server.url + server.ready_path, script, 2, args.connections, cpu_placement(n)[1])
        rss_before = {n: sum(rss_kib(p) for p in process_tree(servers[n, "binge"].pid)) for n in counts}
        rates: dict[tuple[int, str], list[float]] = {key: [] for key in servers}
        cores: dict[tuple[int, str], list[float]] = {key: [] for key in servers}
        wrk_cores: dict[tuple[int, str], list[float]] = {key: [] for key in servers}
        for round_ in range(args.rounds):
            # Alternate the order, so that drift on this shared machine hits all alike.
            order = list(servers) if round_ % 2 == 0 else list(servers)[::-1]
            print(f"round {round_ + 1} (load average {loadavg()}):", flush=True)
            for key in order:
                n, name = key
                server = servers[key]
                tree = process_tree(server.pid)
                cpu_before, began = cpu_seconds(tree), time.monotonic()
                rate, wrk_cpu = wrk(server.url + server.ready_path, script, args.seconds, args.connections,
                                    cpu_placement(n)[1])
                wall = time.monotonic() - began
                rates[key].append(rate)
                cores[key].append((cpu_seconds(tree) - cpu_before) / wall)
                wrk_cores[key].append(wrk_cpu / wall)
                print(f"  N={n} {name:7s} {rate:8.1f} req/s, server {cores[key][-1]:.2f} cores, "
                      f"wrk {wrk_cores[key][-1]:.2f} cores", flush=True)

        median = {key: statistics.median(values) for key, values in rates.items()}
        print(f"\n{args.connections} connections, random 1 MiB ranges of a 256 MiB file, "
              f"{args.rounds} rounds of {args.seconds:g} s, medians (load average now {loadavg()}, "
              f"reference loop {reference_loop():.2f} s):")
        for n in counts:
            pinned = "servers and wrk unpinned" if not cpu_placement(n)[0] else \
                f"servers on CPU {cpu_placement(n)[0][-1]}, wrk on CPU {cpu_placement(n)[1][-1]}"
            print(f" N = {n} ({pinned}):")
            for name in LABELS:
                key = (n, name)
                if key not in median:
                    continue
                cpu, wrk_used = statistics.median(cores[key]), statistics.median(wrk_cores[key])
                print(f"  {LABELS[name]:26s} {median[key]:8.1f} req/s  {median[key] / median[n, 'nginx']:.2f}x nginx"
                      f"  {median[key] / median[n, 'aiohttp']:.2f}x aiohttp  ({median[key] * RANGE / 2**20:.0f} MiB/s, "
                      f"{cpu:.2f} cores, {1000 * cpu / median[key]:.2f} CPU ms/request, "
                      f"wrk {wrk_used:.2f} cores, {1000 * wrk_used / median[key]:.2f} CPU ms/request)  rounds: "
                      + ", ".join(f"{r:.0f}" for r in rates[key]))
            names = [name for m, name in servers if m == n]
            note = generator_bound(n, {name: statistics.median(cores[n, name]) for name in names},
                                   {name: statistics.median(wrk_cores[n, name]) for name in names})
            if note:
                print(f"  {note}")
            tree = process_tree(servers[n, "binge"].pid)
            print(f"  Binge+ RSS ({len(tree)} processes): {rss_before[n] / 1024:.1f} MiB before, "
                  f"{sum(rss_kib(p) for p in tree) / 1024:.1f} MiB after")
        if len(counts) > 1:
            low, high = counts[0], counts[-1]
            for name in ("nginx", "aiohttp", "binge"):
                print(f"  {LABELS[name]:26s} N={high} / N={low}: {median[high, name] / median[low, name]:.2f}x")
            print(f"  Binge+/nginx: {median[low, 'binge'] / median[low, 'nginx']:.2f}x at N={low}, "
                  f"{median[high, 'binge'] / median[high, 'nginx']:.2f}x at N={high}")
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
