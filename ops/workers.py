"""Worker processes behind one port: ``server.workers`` copies of the server under one supervisor.

With ``server.workers`` above 1, ``server.py`` becomes the supervisor: it
checks that the port can be had (exit 1 and one line if not, as a single
process does), makes a private run directory, starts the workers, restarts
one that dies (after a back-off that doubles up to ``RESTART_MAX`` and starts
again from ``RESTART_MIN`` once a worker has lived ``RESTART_RESET``
seconds), passes SIGTERM and SIGINT on to every worker and exits 0 once all
have shut down gracefully (each runs :mod:`ops.shutdown` as a single process
does), 1 if one did not.

Each worker listens on the port itself with SO_REUSEPORT rather than
accepting from one socket the supervisor bound. With one shared socket every
idle worker is woken by each connection and the first to call accept(2)
wins; Tornado then accepts as many as are queued, so the worker that is
awake takes a burst and the spread follows who happens to be idle (and a
media server's connections are long: streams stay where they landed). With
SO_REUSEPORT the kernel hashes each connection's addresses and ports onto
one of the listening sockets, which spreads connections evenly whatever
the workers are doing (measured in ``tests/test_workers.py``). The price: the
connections queued on a worker that dies are reset, where a shared socket
would have kept them for the others.

**The hook** for what runs beside the workers (a relay between them, say):

- In the supervisor: :func:`supervise` takes ``services``, functions of the
  :class:`Supervisor` that give an async context manager. They are entered,
  in the supervisor's asyncio loop, in order, before any worker starts, and
  exited in reverse after the last worker has stopped. ``supervisor.run_dir``
  is the run directory (mode 0700, removed when the supervisor exits) and
  ``supervisor.count`` the number of workers.
- In a worker: :func:`current` gives its :class:`WorkerContext` (``index``
  from 0 to ``count - 1``, kept by a worker started again in a dead one's
  place, ``count``, ``run_dir``), read from the environment variables
  ``BINGE_WORKER_INDEX``, ``BINGE_WORKER_COUNT``, ``BINGE_WORKER_DIR`` (and
  ``BINGE_WORKER_PORT``, the port the supervisor checked, so that port 0
  gives every worker the same port). In a single process it is None.
- ``run_dir/metrics`` is prometheus_client's multiprocess folder
  (``PROMETHEUS_MULTIPROC_DIR`` in each worker; see :mod:`ops.metrics`).

A worker is ``server.py`` run again: the supervisor's own command line
(``sys.orig_argv``, so a wrapper script runs in every worker too) with those
variables set. A worker dies with its supervisor (PR_SET_PDEATHSIG), so a
supervisor killed outright leaves no worker holding the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Callable, Sequence

import tornado.netutil
from prometheus_client.multiprocess import mark_process_dead

from settings import Settings

log = logging.getLogger("binge.workers")

# Seconds before a dead worker is started again: doubled after each death
# of a worker that lived less than RESTART_RESET seconds, up to RESTART_MAX,
# so a worker that cannot start does not spin a core, and one that died
# once after a long life comes back at once.
RESTART_MIN = 0.5
RESTART_MAX = 30.0
RESTART_RESET = 60.0
# Seconds a worker has past server.shutdown_grace to close its store and
# exit before it is killed: the store's workers and tasks stop in well
# under a second, but a Pravega client may take a few.
EXIT_MARGIN = 10.0

ENV_INDEX, ENV_COUNT, ENV_DIR, ENV_PORT, ENV_PARENT = (
    "BINGE_WORKER_INDEX", "BINGE_WORKER_COUNT", "BINGE_WORKER_DIR", "BINGE_WORKER_PORT", "BINGE_WORKER_PARENT",
)
PR_SET_PDEATHSIG = 1


class CannotListen(Exception):
    """The server's address is taken or not ours: a one-line error for the operator, not a traceback."""


@dataclasses.dataclass(frozen=True)
class WorkerContext:
    index: int
    count: int
    run_dir: str
    port: int


def current() -> WorkerContext | None:
    """This worker's place among its supervisor's, or None in a server of one process."""
    if ENV_INDEX not in os.environ:
        return None
    return WorkerContext(int(os.environ[ENV_INDEX]), int(os.environ[ENV_COUNT]), os.environ[ENV_DIR],
                         int(os.environ[ENV_PORT]))


def die_with_supervisor() -> None:
    """Has the kernel send this worker SIGTERM when its supervisor dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("worker will not stop with its supervisor: prctl: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != int(os.environ[ENV_PARENT]):  # it died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def check_port(host: str, port: int) -> int:
    """Binds and listens on ``host``:``port`` as a single process would, then lets go: the port to use.

    Taken (by another program, or another server's workers, whose
    SO_REUSEPORT sockets this socket without it does not join) raises
    :class:`CannotListen`. Port 0 gives the port the kernel picked.
    """
    try:
        sockets = tornado.netutil.bind_sockets(port, host)
    except OSError as e:
        raise CannotListen(f"cannot listen on {host}:{port}: {e.strerror}") from None
    picked = sockets[0].getsockname()[1]
    for sock in sockets:
        sock.close()
    return picked


Service = Callable[["Supervisor"], contextlib.AbstractAsyncContextManager]


class Supervisor:
    """Runs ``count`` workers on ``port`` until told to stop; see the module's docstring."""

    def __init__(self, config: Settings, port: int, run_dir: str, command: Sequence[str]) -> None:
        self.config = config
        self.count = config.server.workers
        self.port = port
        self.run_dir = run_dir
        self.command = list(command)
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.metrics_dir = os.path.join(run_dir, "metrics")
        os.makedirs(self.metrics_dir, exist_ok=True)
        self._stopping = asyncio.Event()
        self._signal: int = signal.SIGTERM

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stops restarting workers and passes ``sig`` on to every one running."""
        if self._stopping.is_set():
            return
        log.info("%s: stopping %d workers", signal.Signals(sig).name, len(self.processes))
        self._signal = sig
        self._stopping.set()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)

    async def run(self, services: Sequence[Service] = ()) -> int:
        """Runs ``services`` and the workers until :meth:`stop`; 0 if every worker then stopped cleanly, else 1."""
        async with contextlib.AsyncExitStack() as stack:
            for service in services:
                await stack.enter_async_context(service(self))
            log.info("supervising %d workers on http://%s:%d/ (run directory %s)",
                     self.count, self.config.server.host, self.port, self.run_dir)
            statuses = await asyncio.gather(*(self._keep(index) for index in range(self.count)))
        # A worker the signal found still starting, before it set its own
        # handlers, dies of it: it had nothing in flight, so that is clean too.
        failed = [s for s in statuses if s not in (0, -self._signal)]
        if failed:
            log.error("%d of %d workers did not shut down cleanly: %s", len(failed), self.count,
                      ", ".join(describe(s) for s in failed))
        return 1 if failed else 0

    async def _keep(self, index: int) -> int | None:
        """Keeps worker ``index`` running until the supervisor stops; its last exit status."""
        delay = RESTART_MIN
        while True:
            started = time.monotonic()
            process = await self._start(index)
            if self._stopping.is_set():  # the signal came while it started
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(self._signal)
            status = await self._wait(process)
            del self.processes[index]
            mark_process_dead(process.pid, self.metrics_dir)  # its gauges leave the sums, its counts stay
            if self._stopping.is_set():
                return status
            lived = time.monotonic() - started
            delay = RESTART_MIN if lived >= RESTART_RESET else delay
            log.warning("worker %d (pid %d) %s after %.1f s; starting another in %.1f s",
                        index, process.pid, describe(status), lived, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
                return None  # stopped during the back-off: nothing runs in this place
            delay = min(delay * 2, RESTART_MAX)

    async def _start(self, index: int) -> asyncio.subprocess.Process:
        env = {**os.environ, ENV_INDEX: str(index), ENV_COUNT: str(self.count), ENV_DIR: self.run_dir,
               ENV_PORT: str(self.port), ENV_PARENT: str(os.getpid()), "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir}
        process = await asyncio.create_subprocess_exec(*self.command, env=env, stdin=asyncio.subprocess.DEVNULL)
        self.processes[index] = process
        return process

    async def _wait(self, process: asyncio.subprocess.Process) -> int:
        """The worker's exit status; once the supervisor stops, a worker that outlives the grace is killed."""
        waiting = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not waiting.done():
            limit = self.config.server.shutdown_grace + EXIT_MARGIN
            try:
                await asyncio.wait_for(asyncio.shield(waiting), limit)
            except asyncio.TimeoutError:
                log.error("worker pid %d still running %g s after the signal: killing it", process.pid, limit)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        return await waiting


def describe(status: int | None) -> str:
    """An exit status as an operator reads it: "exited with 1", "killed by SIGKILL"."""
    if status is None:
        return "was not running"
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    return f"exited with {status}"


def supervise(config: Settings, services: Sequence[Service] = ()) -> int:
    """Runs the supervisor until SIGTERM or SIGINT; the process's exit status."""
    port = check_port(config.server.host, config.server.port)
    run_dir = tempfile.mkdtemp(prefix="binge-workers-")  # mkdtemp makes it 0700
    try:
        return asyncio.run(_supervised(config, port, run_dir, services))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


async def _supervised(config: Settings, port: int, run_dir: str, services: Sequence[Service]) -> int:
    # The interpreter by its full path: orig_argv has it as it was typed.
    supervisor = Supervisor(config, port, run_dir, [sys.executable, *sys.orig_argv[1:]])
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stop, sig)
    return await supervisor.run(services)
