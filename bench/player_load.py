"""A player's workload: how many 8 Mbit/s viewers Binge+ holds, against nginx, and at what CPU per Gbit/s.

One large video (1 GiB of random bytes) is served on loopback by Binge+
(``server.py``, filesystem store, sendfile; one process) and by nginx
(sendfile, one worker). The load generator, ``bench/player`` (Go), plays it
as many viewers would: each an open-ended range (``bytes=N-``) read ahead
4 s, then at the bitrate, with a seek now and then; a viewer stalls when it
falls 2 s behind its bitrate. For each server, rounds alternating between
them, a search finds the most viewers held through a hold with no stall
(doubling from --start, then bisecting to --precision), and the CPU the
server's processes used per Gbit delivered (/proc/PID/stat, over the
largest hold passed). Medians of the rounds and the ratios Binge+/nginx are
printed (with --viewers, every round holds that many instead, held or not,
for the CPU per Gbit at one load); with --py-spy, Binge+ is profiled during
one more hold at its median count, and its top frames printed.

The servers run on CPU 0 and the generator on CPU 1 (taskset), so each
server has one core, as its one process (or worker) can use.

    .venv/bin/python bench/player_load.py [--rounds 3] [--hold 20] [--py-spy]

Needs nginx (scripts/setup --test), Go (to build bench/player) and, for
--py-spy, py-spy (in the test extras).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.media import write_random_video  # noqa: E402
from harness.server_process import ListeningProcess, NginxProcess, ServerProcess, child_pids  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
SERVER_CPU, GENERATOR_CPU = "0", "1"


def build_player(work: str) -> str:
    binary = os.path.join(work, "player")
    subprocess.run(["go", "build", "-o", binary, "."], cwd=os.path.join(BENCH, "player"), check=True)
    return binary


def reference_loop() -> float:
    """Seconds of the 10-million-addition loop bench/RESULTS.md times every machine with."""
    began = time.monotonic()
    subprocess.run([sys.executable, "-c", "s=0\nfor i in range(10_000_000): s+=i"], check=True)
    return time.monotonic() - began


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Generator:
    def __init__(self, binary: str, args: argparse.Namespace) -> None:
        self.binary, self.args = binary, args
        self.seed = 0

    def hold(self, url: str, viewers: int, pids: list[int]) -> dict:
        """One run of ``viewers`` viewers; the generator's JSON report."""
        self.seed += 1
        command = ["taskset", "-c", GENERATOR_CPU, self.binary, "-url", url, "-viewers", str(viewers),
                   "-hold", f"{self.args.hold}s", "-start-over", f"{self.args.start_over}s",
                   "-pids", ",".join(map(str, pids)), "-seed", str(self.seed)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        return json.loads(out)


def held(report: dict) -> bool:
    return report["viewers_stalled"] == 0 and report["errors"] == 0


def describe(report: dict) -> str:
    cpu = report["server_cpu_s_per_gbit"]
    return (f"{report['viewers']:5d} viewers: {report['viewers_stalled']:4d} stalled ({report['stalls']} stalls, "
            f"{report['errors']} errors), {report['gbit_per_s']:.2f} of {report['wanted_gbit_per_s']:.2f} Gbit/s, "
            f"server {1000 * cpu:.1f} CPU ms/Gbit, generator {report['generator_cpu_s'] / report['hold_s']:.2f} cores, "
            f"TTFB after seeks p50 {report['ttfb_seek_ms']['p50']:.1f} / p99 {report['ttfb_seek_ms']['p99']:.1f} ms")


def search(generator: Generator, url: str, pids, start: int, precision: float) -> tuple[int, dict | None]:
    """The most viewers held with no stall, doubling from ``start`` then bisecting; with the report of that hold."""
    best, best_report, failed = 0, None, None
    count = start
    while True:
        report = generator.hold(url, count, pids())
        print(f"    {describe(report)}{'' if held(report) else '  <- not held'}", flush=True)
        if held(report):
            best, best_report = count, report
        else:
            failed = count
        if failed is None:
            count *= 2
        elif failed - best <= max(1, int(best * precision)):
            return best, best_report
        else:
            count = (best + failed) // 2


def top_frames(raw_path: str, limit: int = 12) -> str:
    """Where the event loop's thread spent its time, from py-spy's collapsed stacks (``--idle --format raw``).

    Samples of other threads (the executor's, idle) are left out; of the
    loop's, those waiting in the selector are idle, and the busy ones are
    shown by the frame they were in (self) and the frames on their stacks
    (inclusive).
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    loop = idle = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames, n = stack.split(";"), int(count)
            if not any(frame.startswith("BaseEventLoop.run_forever") for frame in frames):
                continue
            loop += n
            if frames[-1].startswith("EpollSelector.select"):
                idle += n
                continue
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    busy = loop - idle
    lines = [f"  event loop thread: {loop} samples, {100 * idle / loop:.0f}% waiting in epoll, "
             f"{100 * busy / loop:.0f}% busy; of the busy samples:"]
    lines += ["  self:"] + [f"    {100 * n / busy:5.1f}%  {frame}" for frame, n in own.most_common(limit)]
    lines += ["  inclusive:"] + [f"    {100 * n / busy:5.1f}%  {frame}" for frame, n in inclusive.most_common(limit)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hold", type=float, default=20, help="seconds each count is held")
    parser.add_argument("--start-over", type=float, default=3, help="seconds over which the viewers start")
    parser.add_argument("--start", type=int, default=100, help="the search's first count")
    parser.add_argument("--precision", type=float, default=0.1, help="the search stops within this fraction")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--port", type=int, default=0, help="Binge+'s port, and nginx's the next (default: free)")
    parser.add_argument("--viewers", type=int, default=0,
                        help="no search: hold this many viewers each round, for CPU per Gbit at one load")
    parser.add_argument("--py-spy", action="store_true", help="profile Binge+ during one more hold")
    args = parser.parse_args()
    # py-spy comes with the test extras, beside this Python.
    py_spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    for tool, found in (("nginx", shutil.which("nginx")), ("go", shutil.which("go")),
                        ("taskset", shutil.which("taskset")), *([("py-spy", py_spy)] if args.py_spy else [])):
        if not found:
            raise SystemExit(f"{tool} is not installed: run scripts/setup --test")
    # Thousands of viewers need as many descriptors in each server; children inherit the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    print(f"nproc {os.cpu_count()}, load average {loadavg()}, reference loop {reference_loop():.2f} s", flush=True)
    work = tempfile.mkdtemp(prefix="binge-player-")
    servers: dict[str, ListeningProcess] = {}
    try:
        library = os.path.join(work, "library")
        os.makedirs(library)
        write_random_video(os.path.join(library, "big.mp4"), args.size_mib * 2**20)
        generator = Generator(build_player(work), args)
        config = {"storage": {"library": library, "cache_dir": os.path.join(work, "cache")},
                  "limits": {"streams_per_ip": 1_000_000}}
        if args.port:
            config["server"] = {"port": args.port}
        taskset = ["taskset", "-c", SERVER_CPU]
        binge = ServerProcess(work, config, "binge", log_level="WARNING", ready_path="/videos/big/stream",
                              launcher=[*taskset, sys.executable, os.path.join(os.path.dirname(BENCH), "server.py")])
        nginx = NginxProcess(work, library, port=args.port + 1 if args.port else None, ready_path="/big.mp4",
                             prefix=taskset)
        servers = {"binge": binge, "nginx": nginx}
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_until_serving(30)
        targets = {"binge": (binge.url + binge.ready_path, lambda: [binge.pid, *child_pids(binge.pid)]),
                   "nginx": (nginx.url + nginx.ready_path, nginx.pids)}

        most: dict[str, list[int]] = {name: [] for name in servers}
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        for round_ in range(args.rounds):
            for name, (url, pids) in targets.items():
                print(f"round {round_ + 1} {name} (load average {loadavg()}):", flush=True)
                if args.viewers:
                    report = generator.hold(url, args.viewers, pids())
                    print(f"    {describe(report)}{'' if held(report) else '  <- not held'}", flush=True)
                    count, report = (args.viewers, report) if held(report) else (0, report)
                else:
                    count, report = search(generator, url, pids, args.start, args.precision)
                most[name].append(count)
                if report:
                    cpu[name].append(report["server_cpu_s_per_gbit"])
                print(f"  {name}: {count} viewers held", flush=True)

        medians = {name: statistics.median(counts) for name, counts in most.items()}
        cpu_medians = {name: statistics.median(values) if values else float("nan") for name, values in cpu.items()}
        print(f"\n8 Mbit/s viewers of a {args.size_mib} MiB file, holds of {args.hold:g} s, "
              f"{args.rounds} rounds, medians (load average now {loadavg()}, "
              f"reference loop {reference_loop():.2f} s):")
        for name, label in (("nginx", "nginx (sendfile, 1 worker)"), ("binge", "Binge+ (1 process)")):
            print(f"  {label:28s} {medians[name]:6.0f} viewers held ({most[name]}), "
                  f"{1000 * cpu_medians[name]:.1f} CPU ms per Gbit ({', '.join(f'{1000 * c:.1f}' for c in cpu[name])})")
        viewers = f"{medians['binge'] / medians['nginx']:.2f}x" if medians["nginx"] else "n/a"
        print(f"  Binge+/nginx: {viewers} the viewers, {cpu_medians['binge'] / cpu_medians['nginx']:.2f}x the CPU per Gbit/s")

        if args.py_spy:
            raw = os.path.join(work, "py-spy.txt")
            count = args.viewers or int(medians["binge"])
            print(f"\npy-spy on Binge+ during a hold of {count} viewers:", flush=True)
            spy = subprocess.Popen([py_spy, "record", "--pid", str(binge.pid), "--idle", "--format", "raw",
                                    "--duration", str(int(args.hold + args.start_over)), "--output", raw],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url, pids = targets["binge"]
            print(f"    {describe(generator.hold(url, count, pids()))}")
            spy.wait()
            print(top_frames(raw))
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
