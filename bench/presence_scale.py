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

For each N of --workers (default: the number of CPUs), Binge+ runs with
``server.workers: N`` and socket.io with N Node processes
(``bench/socketio/cluster.js``: @socket.io/sticky and
@socket.io/cluster-adapter, as socket.io's docs run a cluster; one plain
process at N = 1). With N below the number of CPUs the server runs on CPUs
0..N-1 and the load process on the others; at N = all CPUs nothing is
pinned and the load process shares the cores with the server.

    .venv/bin/python bench/presence_scale.py [--clients 1000] [--rounds 3] [--workers 1,2] [--only binge-changes ...]

Needs Node 20 and npm: it runs ``npm ci`` in bench/socketio first.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile

import ujson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.media import write_unprobed_video  # noqa: E402
from harness.loopback import cpu_placement, loadavg, process_tree, reference_loop  # noqa: E402
from harness.server_process import ROOT, ListeningProcess, ServerProcess  # noqa: E402

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


def binge_server(work: str, args: argparse.Namespace, workers: int) -> ServerProcess:
    # The driver is one socket standing in for many users' changes, and
    # every client comes from 127.0.0.1: the per-socket message limit and
    # the per-address socket limit are lifted.
    return ServerProcess(work, {
        "server": {"workers": workers},
        "storage": {"library": os.path.join(work, "library"), "cache_dir": os.path.join(work, "cache")},
        "presence": {"messages_per_second": 100000},
        "limits": {"sockets_per_ip": args.clients + 10},
    }, "binge", log_level="WARNING",
        launcher=[*cpu_placement(workers)[0], sys.executable, os.path.join(ROOT, "server.py")])


def socketio_server(work: str, args: argparse.Namespace, workers: int) -> ListeningProcess:
    program = ["cluster.js", "--workers", str(workers)] if workers > 1 else ["server.js"]
    return ListeningProcess(work, "socketio", lambda port: [
        *cpu_placement(workers)[0], "node", *program, "--port", str(port), "--videos", ",".join(VIDEOS),
        "--coalesce-ms", str(args.coalesce_ms),
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


def run_load(name: str, workers: int, work: str, args: argparse.Namespace) -> list[dict]:
    label, make_server, kind, extra = CONTENDERS[name]
    label = f"{label} N={workers}"
    with make_server(work, args, workers) as server:
        command = [*cpu_placement(workers)[1], "node", "load.js", "--server", kind,
                   "--url", f"ws://127.0.0.1:{server.port}",
                   "--videos", ",".join(VIDEOS), "--clients", str(args.clients), "--rates", args.rates,
                   "--step-seconds", str(args.step_seconds),
                   "--server-pid", ",".join(map(str, process_tree(server.pid))),
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


def summary(results: dict[tuple[str, int], list[list[dict]]], args: argparse.Namespace) -> None:
    """Per rate, each server's median p50/p99 over the rounds (a round that
    stopped before that rate, saturated, counts as infinite); then the
    highest rate whose median p99 is under the target, and the ratios at each N."""
    rates = [int(r) for r in args.rates.split(",")]
    p50: dict[tuple[str, int], dict[int, float]] = {key: {} for key in results}
    p99: dict[tuple[str, int], dict[int, float]] = {key: {} for key in results}
    for key, runs in results.items():
        for rate in rates:
            steps = [next((r for r in run if r["event"] == "step" and r["rate"] == rate), None) for run in runs]
            p50[key][rate] = median([s["p50"] if s and s["p50"] is not None else math.inf for s in steps])
            p99[key][rate] = median([s["p99"] if s and s["p99"] is not None else math.inf for s in steps])
    label = {key: f"{CONTENDERS[key[0]][0]} N={key[1]}" for key in results}
    print(f"\n{args.clients} clients; p50 / p99 in ms, medians of {args.rounds} round(s); "
          f"target p99 {TARGET_MS:.0f} ms:")
    print(f"  {'changes/s':>9s}" + "".join(f"  {label[key]:>24s}" for key in results))
    for rate in rates:
        if all(math.isinf(p99[key][rate]) for key in results):
            break
        cells = (f"{ms(p50[key][rate])} / {ms(p99[key][rate])}" for key in results)
        print(f"  {rate:9d}" + "".join(f"  {cell:>24s}" for cell in cells))
    held = {key: max((r for r in rates if p99[key][r] <= TARGET_MS), default=0) for key in results}
    print("  highest rate held:  " + ", ".join(
        f"{label[key]} {'>=' if held[key] == rates[-1] else ''}{held[key]}/s" for key in results))
    for n in sorted({n for _, n in results}):
        for ours, theirs in (("binge", "socketio"), ("binge-changes", "socketio-changes"),
                             ("binge-changes", "socketio")):
            if (ours, n) in results and (theirs, n) in results:
                a, b = (ours, n), (theirs, n)
                ratio = f"{held[a] / held[b]:.2f}x the rate held" if held[b] else "socket.io held no rate"
                print(f"  {label[a]} vs {label[b]}: {ratio}, {p99[a][rates[0]] / p99[b][rates[0]]:.2f}x the p99 "
                      f"at {rates[0]}/s" + (f", {p99[a][1000] / p99[b][1000]:.2f}x at 1000/s"
                                           if 1000 in rates and not math.isinf(p99[b][1000]) else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rates", default="5,10,20,50,100,200,500,1000,2000,5000,10000")
    parser.add_argument("--step-seconds", type=float, default=3)
    parser.add_argument("--coalesce-ms", type=float, default=20,
                        help="socket.io server's coalescing window (0: broadcast every change)")
    parser.add_argument("--only", choices=list(CONTENDERS), action="append", help="run only these servers")
    parser.add_argument("--workers", default=str(os.cpu_count()),
                        help="comma-separated process counts N to run every server with")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one load run may take")
    args = parser.parse_args()
    if not shutil.which("node") or not shutil.which("npm"):
        raise SystemExit("Node 20 and npm are needed")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True)
    # Thousands of sockets need as many descriptors in each server; children inherit the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    keys = [(name, int(n)) for n in args.workers.split(",") for name in args.only or list(CONTENDERS)]
    # The machine may be shared: its load and speed go with the figures.
    print(f"nproc {os.cpu_count()}, load average {loadavg()}, reference loop {reference_loop():.2f} s", flush=True)
    work = tempfile.mkdtemp(prefix="binge-presence-")
    results: dict[tuple[str, int], list[list[dict]]] = {key: [] for key in keys}
    try:
        make_library(work)
        for round_ in range(args.rounds):
            # Alternate the order, so that drift on this shared machine hits all alike.
            for name, n in keys if round_ % 2 == 0 else keys[::-1]:
                print(f"round {round_ + 1}, {CONTENDERS[name][0]} N={n} (load average {loadavg()}):", flush=True)
                results[name, n].append(run_load(name, n, work, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average now {loadavg()}, reference loop {reference_loop():.2f} s")
    summary(results, args)


if __name__ == "__main__":
    main()
