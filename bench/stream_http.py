"""Streaming throughput: Binge+ against nginx and Tornado's StaticFileHandler.

One 256 MiB file is served by each server on loopback and loaded with wrk:
50 connections asking for random 1 MiB ranges. Rounds alternate between the
servers so that noise on this shared machine hits all of them alike; the
medians and their ratios to nginx are printed, with Binge+'s memory (RSS)
before and at its peak.

    .venv/bin/python bench/stream_http.py [--seconds 10] [--rounds 3]

Needs nginx and wrk (scripts/setup --test installs them).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.loopback import PeakRss, rss_kib  # noqa: E402
from harness.media import write_random_video  # noqa: E402
from harness.server_process import ListeningProcess, NginxProcess, ServerProcess  # noqa: E402

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

def wrk(url: str, script: str, seconds: int, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} failed responses\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed: run scripts/setup --test")

    work = tempfile.mkdtemp(prefix="binge-bench-")
    servers: dict[str, ListeningProcess] = {}
    try:
        library = os.path.join(work, "library")
        os.makedirs(library)
        write_random_video(os.path.join(library, "big.mp4"), FILE_SIZE)
        script = os.path.join(work, "ranges.lua")
        with open(script, "w") as f:
            f.write(WRK_SCRIPT % {"pieces": FILE_SIZE // RANGE, "range": RANGE})

        servers = {
            "binge": ServerProcess(work, {"storage": {"library": library, "cache_dir": os.path.join(work, "cache")}},
                                   "binge", log_level="WARNING", ready_path="/videos/big/stream"),
            "static": ListeningProcess(work, "static", lambda port: [sys.executable, "-c", STATIC_SERVER, library,
                                                                     str(port)], ready_path="/big.mp4"),
            "nginx": NginxProcess(work, library, ready_path="/big.mp4"),
        }
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_until_serving(30)
        urls = {name: server.url + server.ready_path for name, server in servers.items()}
        binge = servers["binge"]

        # Warm the page cache and each server once before measuring.
        for url in urls.values():
            wrk(url, script, 2, args.connections)
        rss_before = rss_kib(binge.pid)
        peak = PeakRss(binge.pid)
        peak.start()
        results: dict[str, list[float]] = {name: [] for name in urls}
        for round_ in range(args.rounds):
            for name, url in urls.items():
                results[name].append(wrk(url, script, args.seconds, args.connections))
                print(f"round {round_ + 1} {name:7s} {results[name][-1]:8.1f} req/s", flush=True)
        peak.running = False
        peak.join()

        medians = {name: statistics.median(values) for name, values in results.items()}
        print(f"\n{args.connections} connections, random 1 MiB ranges of a 256 MiB file, "
              f"{args.rounds} rounds of {args.seconds} s, medians:")
        labels = {"nginx": "nginx (sendfile, 1 worker)", "binge": "Binge+ (filesystem store)",
                  "static": "Tornado StaticFileHandler"}
        for name in ("nginx", "binge", "static"):
            print(f"  {labels[name]:28s} {medians[name]:8.1f} req/s  {medians[name] / medians['nginx']:.2f}x nginx "
                  f"({medians[name] * RANGE / 2**20:.0f} MiB/s)")
        print(f"  Binge+ RSS: {rss_before / 1024:.1f} MiB before, {max(peak.peak, rss_before) / 1024:.1f} MiB at peak")
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
