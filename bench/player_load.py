"""A player's workload: how many 8 Mbit/s viewers Binge+ holds, against nginx, and at what CPU per Gbit/s.

One large video (1 GiB of random bytes) is served on loopback by Binge+
(``server.py``, filesystem store, sendfile; ``server.workers: N``) and by
nginx (sendfile, N worker processes), for each N of --workers (default: 1
and the number of CPUs). The load generator, ``bench/player`` (Go), plays it
as many viewers would: each an open-ended range (``bytes=N-``) read ahead
4 s, then at the bitrate, with a seek now and then; a viewer stalls when it
falls 2 s behind its bitrate. For each server, rounds alternating between
them, a search finds the most viewers held through a hold with no stall
(doubling from --start, then bisecting to --precision), and the CPU the
server's processes used per Gbit delivered (/proc/PID/stat, over the
largest hold passed). Medians of the rounds and the ratios Binge+/nginx at each N are
printed (with --viewers, every round holds that many instead, held or not,
for the CPU per Gbit at one load); with --py-spy, Binge+ at each N is profiled
during one more hold at its median count (every worker of it), and its top
frames printed.

With N below the number of CPUs the servers run on CPUs 0..N-1 and the
generator on the others (taskset), so each server has the cores its
processes can use and the generator takes none of them; at N = all CPUs
nothing is pinned and the generator shares the cores with the server (its
own CPU is printed with every hold).

    .venv/bin/python bench/player_load.py [--rounds 3] [--hold 20] [--workers 1,2] [--py-spy]

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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.media import write_random_video  # noqa: E402
from harness.loopback import child_pids, cpu_placement, loadavg, process_tree, reference_loop  # noqa: E402
from harness.server_process import ROOT, ListeningProcess, NginxProcess, ServerProcess  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))


def build_player(work: str) -> str:
    binary = os.path.join(work, "player")
    subprocess.run(["go", "build", "-o", binary, "."], cwd=os.path.join(BENCH, "player"), check=True)
    return binary


class Generator:
    def __init__(self, binary: str, args: argparse.Namespace) -> None:
        self.binary, self.args = binary, args
        self.seed = 0

    def hold(self, url: str, viewers: int, pids: list[int], prefix: list[str]) -> dict:
        """One run of ``viewers`` viewers, the generator run after ``prefix`` (taskset); its JSON report."""
        self.seed += 1
        command = [*prefix, self.binary, "-url", url, "-viewers", str(viewers),
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


def search(generator: Generator, target, start: int, precision: float) -> tuple[int, dict | None]:
    """The most viewers held with no stall, doubling from ``start`` then bisecting; with the report of that hold."""
    best, best_report, failed = 0, None, None
    count = start
    while True:
        report = target.hold(generator, count)
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


def top_frames(raw_paths: list[str], limit: int = 12) -> str:
    """Where the event loop's thread spent its time, from py-spy's collapsed stacks (``--idle --format raw``).

    The samples of every file (one per worker) are added up. Samples of
    other threads (the executor's, idle) are left out; of the loop's, those waiting in the selector are idle, and the busy ones are
    shown by the frame they were in (self) and the frames on their stacks
    (inclusive).
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    loop = idle = 0
    for path in raw_paths:
        with open(path) as f:
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


class Target:
    """One server at one N: its URL, its processes and where the generator runs beside it."""

    def __init__(self, name: str, workers: int, server: ListeningProcess, path: str) -> None:
        self.name, self.workers, self.server = name, workers, server
        self.url = server.url + path
        self.generator_prefix = cpu_placement(workers)[1]

    def pids(self) -> list[int]:
        return process_tree(self.server.pid)

    def hold(self, generator: Generator, viewers: int) -> dict:
        return generator.hold(self.url, viewers, self.pids(), self.generator_prefix)


LABELS = {"nginx": "nginx (sendfile)", "binge": "Binge+"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hold", type=float, default=20, help="seconds each count is held")
    parser.add_argument("--start-over", type=float, default=3, help="seconds over which the viewers start")
    parser.add_argument("--start", type=int, default=100, help="the search's first count")
    parser.add_argument("--precision", type=float, default=0.1, help="the search stops within this fraction")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--workers", default=f"1,{os.cpu_count()}",
                        help="comma-separated process counts N to run both servers with")
    parser.add_argument("--port", type=int, default=0,
                        help="the first of the servers' ports, one after another (default: free)")
    parser.add_argument("--viewers", type=int, default=0,
                        help="no search: hold this many viewers each round, for CPU per Gbit at one load")
    parser.add_argument("--py-spy", action="store_true", help="profile Binge+ during one more hold")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
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
    targets: list[Target] = []
    try:
        library = os.path.join(work, "library")
        os.makedirs(library)
        write_random_video(os.path.join(library, "big.mp4"), args.size_mib * 2**20)
        generator = Generator(build_player(work), args)
        ports = iter(range(args.port, args.port + 2 * len(counts))) if args.port else None
        for n in counts:
            prefix = cpu_placement(n)[0]
            config = {"server": {"workers": n}, "storage": {"library": library, "cache_dir": os.path.join(work, "cache")},
                      "limits": {"streams_per_ip": 1_000_000}}
            if ports:
                config["server"]["port"] = next(ports)
            binge = ServerProcess(work, config, f"binge-{n}", log_level="WARNING", ready_path="/videos/big/stream",
                                  launcher=[*prefix, sys.executable, os.path.join(ROOT, "server.py")])
            nginx = NginxProcess(work, library, name=f"nginx-{n}", port=next(ports) if ports else None,
                                 ready_path="/big.mp4", workers=n, prefix=prefix)
            targets += [Target("binge", n, binge, binge.ready_path), Target("nginx", n, nginx, nginx.ready_path)]
        for target in targets:
            target.server.start()
        for target in targets:
            target.server.wait_until_serving(60)

        most: dict[Target, list[int]] = {target: [] for target in targets}
        cpu: dict[Target, list[float]] = {target: [] for target in targets}
        for round_ in range(args.rounds):
            # Alternate the order, so that drift on this shared machine hits all alike.
            for target in targets if round_ % 2 == 0 else targets[::-1]:
                print(f"round {round_ + 1} {target.name} N={target.workers} (load average {loadavg()}):", flush=True)
                if args.viewers:
                    report = target.hold(generator, args.viewers)
                    print(f"    {describe(report)}{'' if held(report) else '  <- not held'}", flush=True)
                    count, report = (args.viewers, report) if held(report) else (0, report)
                else:
                    count, report = search(generator, target, args.start, args.precision)
                most[target].append(count)
                if report:
                    cpu[target].append(report["server_cpu_s_per_gbit"])
                print(f"  {target.name} N={target.workers}: {count} viewers held", flush=True)

        medians = {target: statistics.median(counts) for target, counts in most.items()}
        cpu_medians = {target: statistics.median(values) if values else float("nan") for target, values in cpu.items()}
        print(f"\n8 Mbit/s viewers of a {args.size_mib} MiB file, holds of {args.hold:g} s, "
              f"{args.rounds} rounds, medians (load average now {loadavg()}, "
              f"reference loop {reference_loop():.2f} s):")
        for n in counts:
            binge, nginx = (next(t for t in targets if t.workers == n and t.name == name) for name in ("binge", "nginx"))
            placed = (f"servers on CPUs {cpu_placement(n)[0][-1]}, generator on {cpu_placement(n)[1][-1]}"
                      if cpu_placement(n)[0] else "servers and generator unpinned, sharing the cores")
            print(f" N = {n} ({placed}):")
            for target in (nginx, binge):
                print(f"  {LABELS[target.name]:18s} {medians[target]:6.0f} viewers held ({most[target]}), "
                      f"{1000 * cpu_medians[target]:.1f} CPU ms per Gbit "
                      f"({', '.join(f'{1000 * c:.1f}' for c in cpu[target])})")
            viewers = f"{medians[binge] / medians[nginx]:.2f}x" if medians[nginx] else "n/a"
            print(f"  Binge+/nginx: {viewers} the viewers, "
                  f"{cpu_medians[binge] / cpu_medians[nginx]:.2f}x the CPU per Gbit/s")

        if args.py_spy:
            for target in (t for t in targets if t.name == "binge"):
                count = args.viewers or int(medians[target])
                print(f"\npy-spy on Binge+ N={target.workers} during a hold of {count} viewers:", flush=True)
                # One recorder per worker: with workers, the parent's children (it only supervises them).
                workers = (child_pids(target.server.pid) if target.workers > 1 else []) or [target.server.pid]
                raws = [os.path.join(work, f"py-spy-{target.workers}-{pid}.txt") for pid in workers]
                spies = [subprocess.Popen([py_spy, "record", "--pid", str(pid), "--idle", "--format", "raw",
                                           "--duration", str(int(args.hold + args.start_over)), "--output", raw],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                         for pid, raw in zip(workers, raws)]
                print(f"    {describe(target.hold(generator, count))}")
                for spy in spies:
                    spy.wait()
                print(top_frames(raws))
    finally:
        for target in targets:
            target.server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
