"""Presence at scale: Binge+ against a socket.io server doing the same broadcast.

1,000 websocket clients on loopback each join and watch a video; then a
driver makes changes at a fixed rate, stepped up from 5 to 10,000 a second,
and each change is timed from its send until every client has seen it. One
load process (``bench/socketio/load.js``, one implementation for both
servers) runs against ``server.py`` and against ``bench/socketio/server.js``,
a socket.io 4.8 server with Binge+'s presence semantics and coalescing,
each with full snapshots (what the browser page asks for) and with changes
(``?changes=1``), in rounds whose order alternates. Every step is printed
as it ends; then, per rate, the median p50 and p99 over the rounds, the
highest rate whose p99 stays under 100 ms, and the ratios.

    .venv/bin/python bench/presence_scale.py [--clients 1000] [--rounds 3] [--only binge-changes ...]

Needs Node 20 and npm: it runs ``npm ci`` in bench/socketio first.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile

import ujson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.media import write_unprobed_video  # noqa: E402
from harness.server_process import ListeningProcess, ServerProcess  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE_DIR = os.path.join(ROOT, "bench", "socketio")
VIDEOS = ["v0", "v1", "v2", "v3"]
TARGET_MS = 100.0


def make_library(work: str) -> str:
    """A library of tiny videos: presence only checks that a watched video exists."""
    library = os.path.join(work, "library")
    os.makedirs(library)
    for video in VIDEOS:
        write_unprobed_video(os.path.join(library, f"{video}.mp4"), 1024)
    return library


def binge_server(work: str, args: argparse.Namespace) -> ServerProcess:
    # The driver is one socket standing in for many users' changes, and
    # every client comes from 127.0.0.1: the per-socket message limit and
    # the per-address socket limit are lifted.
    return ServerProcess(work, {
        "storage": {"library": os.path.join(work, "library"), "cache_dir": os.path.join(work, "cache")},
        "presence": {"messages_per_second": 100000},
        "limits": {"sockets_per_ip": args.clients + 10},
    }, "binge", log_level="WARNING")


def socketio_server(work: str, args: argparse.Namespace) -> ListeningProcess:
    return ListeningProcess(work, "socketio", lambda port: [
        "node", "server.js", "--port", str(port), "--videos", ",".join(VIDEOS), "--coalesce-ms", str(args.coalesce_ms),
    ], cwd=NODE_DIR)


# name -> (label, the server, not started, load.js --server, extra load.js arguments).
# Each server twice: full snapshots (what the browser page asks for), and
# changes after a first snapshot (?changes=1).
CONTENDERS = {
    "binge": ("Binge+ snapshots", binge_server, "binge", []),
    "socketio": ("socket.io snapshots", socketio_server, "socketio", []),
    "binge-changes": ("Binge+ changes", binge_server, "binge", ["--query", "changes=1"]),
    "socketio-changes": ("socket.io changes", socketio_server, "socketio", ["--query", "changes=1"]),
}


def run_load(name: str, work: str, args: argparse.Namespace) -> list[dict]:
    label, make_server, kind, extra = CONTENDERS[name]
    with make_server(work, args) as server:
        command = ["node", "load.js", "--server", kind, "--url", f"ws://127.0.0.1:{server.port}",
                   "--videos", ",".join(VIDEOS), "--clients", str(args.clients), "--rates", args.rates,
                   "--step-seconds", str(args.step_seconds), "--server-pid", str(server.pid),
                   "--max-latency-ms", str(TARGET_MS), *extra]
        out = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=args.timeout)
        if out.returncode != 0:
            raise SystemExit(f"load against {label} failed:\n{out.stderr}")
        records = [ujson.loads(line) for line in out.stdout.splitlines()]
    for r in records:
        if r["event"] == "connected":
            print(f"  {label}: {r['clients']} clients joined in {r['connectSeconds']:.1f} s, "
                  f"settled {r['settleSeconds']:.1f} s later", flush=True)
        elif r["event"] == "step":
            print(f"  {label}: {step_line(r)}", flush=True)
    return records


def ms(value: float | None) -> str:
    return "-" if value is None or math.isinf(value) else f"{value:.0f}"


def step_line(r: dict) -> str:
    passed = r["p99"] is not None and r["p99"] <= TARGET_MS
    return (f"{r['rate']:5d}/s asked, {r['achievedRate']:7.1f}/s sent, p50 {ms(r['p50']):>5s} ms, "
            f"p99 {ms(r['p99']):>5s} ms, max {ms(r['max']):>5s} ms, unseen {r['unseen']}, "
            f"{r['messagesPerClient'] / r['changes']:.2f} msg/client/change of {r['bytesPerMessage'] / 1024:.1f} KiB, "
            f"CPU server {r['serverCpu']:.0%} load {r['loadCpu']:.0%} {'ok' if passed else 'MISSED'}")


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def summary(results: dict[str, list[list[dict]]], args: argparse.Namespace) -> None:
    """Per rate, each server's median p50/p99 over the rounds (a round that
    stopped before that rate, saturated, counts as infinite); then the
    highest rate whose median p99 is under the target, and the ratios."""
    rates = [int(r) for r in args.rates.split(",")]
    p50: dict[str, dict[int, float]] = {name: {} for name in results}
    p99: dict[str, dict[int, float]] = {name: {} for name in results}
    for name, runs in results.items():
        for rate in rates:
            steps = [next((r for r in run if r["event"] == "step" and r["rate"] == rate), None) for run in runs]
            p50[name][rate] = median([s["p50"] if s and s["p50"] is not None else math.inf for s in steps])
            p99[name][rate] = median([s["p99"] if s and s["p99"] is not None else math.inf for s in steps])
    print(f"\n{args.clients} clients; p50 / p99 in ms, medians of {args.rounds} round(s); "
          f"target p99 {TARGET_MS:.0f} ms:")
    print(f"  {'changes/s':>9s}" + "".join(f"  {CONTENDERS[name][0]:>20s}" for name in results))
    for rate in rates:
        if all(math.isinf(p99[name][rate]) for name in results):
            break
        cells = (f"{ms(p50[name][rate])} / {ms(p99[name][rate])}" for name in results)
        print(f"  {rate:9d}" + "".join(f"  {cell:>20s}" for cell in cells))
    held = {name: max((r for r in rates if p99[name][r] <= TARGET_MS), default=0) for name in results}
    print("  highest rate held:  " + ", ".join(
        f"{CONTENDERS[name][0]} {'>=' if held[name] == rates[-1] else ''}{held[name]}/s" for name in results))
    for ours, theirs in (("binge", "socketio"), ("binge-changes", "socketio-changes"), ("binge-changes", "socketio")):
        if ours in results and theirs in results:
            ratio = f"{held[ours] / held[theirs]:.2f}x the rate held" if held[theirs] else "socket.io held no rate"
            print(f"  {CONTENDERS[ours][0]} vs {CONTENDERS[theirs][0]}: {ratio}, "
                  f"{p99[ours][rates[0]] / p99[theirs][rates[0]]:.2f}x the p99 at {rates[0]}/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rates", default="5,10,20,50,100,200,500,1000,2000,5000,10000")
    parser.add_argument("--step-seconds", type=float, default=3)
    parser.add_argument("--coalesce-ms", type=float, default=20,
                        help="socket.io server's coalescing window (0: broadcast every change)")
    parser.add_argument("--only", choices=list(CONTENDERS), action="append", help="run only these servers")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one load run may take")
    args = parser.parse_args()
    if not shutil.which("node") or not shutil.which("npm"):
        raise SystemExit("Node 20 and npm are needed")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True)

    names = args.only or list(CONTENDERS)
    work = tempfile.mkdtemp(prefix="binge-presence-")
    results: dict[str, list[list[dict]]] = {name: [] for name in names}
    try:
        make_library(work)
        for round_ in range(args.rounds):
            # Alternate the order, so that drift on this shared machine hits all alike.
            order = names if round_ % 2 == 0 else names[::-1]
            for name in order:
                # The machine may be shared: its load goes with the figures.
                with open("/proc/loadavg") as f:
                    load = f.read().split()[0]
                print(f"round {round_ + 1}, {CONTENDERS[name][0]} (load average {load}):", flush=True)
                results[name].append(run_load(name, work, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary(results, args)


if __name__ == "__main__":
    main()
