"""Presence shared by ``server.py`` instances on one Pravega: how fast a change crosses, how long a dead one lingers.

Two instances, A and B, run on one scope, with one presence websocket on
each. The client on A watches and leaves a video ``--changes`` times, at
random moments; each time, the delay until B's client gets the presence
that shows it is measured. Then a third instance starts and the delay until
it lists A's watcher is measured (it learns the picture from the
``presence`` stream), the stream's size is read, and A is killed (SIGKILL):
the delay until B's client sees A's socket dropped is measured against
``pravega.instance_timeout``.

    .venv/bin/python bench/shared_presence.py [--controller URI] [--changes 50] [--instance-timeout 10]

Without ``--controller`` it starts a Pravega of its own and stops it at the
end (see ``bench/pravega_stream.py``); with it, it deletes its scope at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import random
import shutil
import statistics
import sys
import tempfile
import time

from pravega_stream import start_pravega

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from harness.loopback import until  # noqa: E402
from harness.presence import Client, Scope, watching  # noqa: E402
from pravega_workers.blocking import delete_scope, stream_manager  # noqa: E402


async def measure(scope: Scope, changes: int, instance_timeout: float) -> None:
    a, b = scope.start("a"), scope.start("b")
    await asyncio.gather(a.ready(), b.ready())
    observer, viewer = await Client().connect(b), await Client().connect(a)
    await observer.presence_until(lambda p: viewer.socket_id in p["sockets"], 10)

    delays = []
    for _ in range(changes):
        for message, shown in (({"type": "watch", "video": "clip"}, watching(viewer.socket_id, "clip")),
                               ({"type": "leave"}, lambda p: "clip" not in p["videos"])):
            # Random moments, so that changes fall anywhere in the followers' poll cycles.
            await asyncio.sleep(random.uniform(0, 0.3))
            started = time.monotonic()
            viewer.send(message)
            await observer.presence_until(shown, 10)
            delays.append((time.monotonic() - started) * 1000)
    viewer.send({"type": "watch", "video": "clip"})
    await observer.presence_until(watching(viewer.socket_id, "clip"), 10)
    delays.sort()
    print(f"{len(delays)} changes on A seen by a client of B: median {statistics.median(delays):.0f} ms, "
          f"95th percentile {delays[int(len(delays) * 0.95) - 1]:.0f} ms, worst {delays[-1]:.0f} ms")

    c = scope.start("c")
    await c.ready()
    started = time.monotonic()
    await until(lambda: _lists(c, viewer.socket_id), 10, step=0.01)
    print(f"a new instance lists A's watcher {(time.monotonic() - started) * 1000:.0f} ms after it first answers")

    head, records = await asyncio.to_thread(scope.presence_stream)
    print(f"the presence stream: head at byte {head}, {len(records)} records kept "
          f"({sum(r.type == 'snapshot' for r in records)} snapshots) for 3 instances")

    a.kill()
    killed = time.monotonic()
    await observer.presence_until(lambda p: viewer.socket_id not in p["sockets"], instance_timeout + 10)
    print(f"A killed: its socket dropped on B after {time.monotonic() - killed:.1f} s "
          f"(pravega.instance_timeout {instance_timeout:g} s)")


async def _lists(instance, socket_id: str) -> bool:
    return watching(socket_id, "clip")(await instance.presence())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--controller", help="a running Pravega's controller URI (default: start one)")
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--instance-timeout", type=float, default=10.0)
    args = parser.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="binge-bench-presence-"))
    pravega = None
    scope = None
    try:
        uri = args.controller
        if uri is None:
            print("starting a Pravega of its own", flush=True)
            pravega = start_pravega(str(work / "pravega"))
            uri = pravega.uri
        scope = Scope(uri, work, args.instance_timeout)
        asyncio.run(measure(scope, args.changes, args.instance_timeout))
    finally:
        if scope is not None:
            for instance in scope.instances:
                instance.stop()
        if pravega is not None:
            pravega.stop()
        elif scope is not None:
            delete_scope(stream_manager(uri), scope.name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
