"""Apps served in this process, on a free loopback port: Binge+'s own from a config, or any Tornado app.

:func:`serving` is the one way a test runs Binge+ in process outside
pytest-tornado's ``app`` fixture: the app built from the config as
``server.py`` builds it, served on the caller's event loop, closed however
the block ends. :class:`ServingInThread` serves it from an event loop of
its own, for tests whose clients block (raw sockets, Hypothesis examples).
:func:`listen` serves a stand-in (a misbehaving peer or upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import tornado.httpserver
import tornado.web
from tornado.netutil import bind_sockets


async def listen(app: tornado.web.Application) -> tuple[tornado.httpserver.HTTPServer, int]:
    """``app`` served on a free port of 127.0.0.1 from this event loop: the server, and its port."""
    server = tornado.httpserver.HTTPServer(app)
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def serving(config, worker=None):
    """The app for ``config`` (as ``worker``, an ops.workers.WorkerContext), served on a free loopback port of
    this event loop: yields (app, port)."""
    from handlers.app import build_app

    app = await build_app(config, worker)
    server, port = await listen(app)
    try:
        yield app, port
    finally:
        server.stop()
        await server.close_all_connections()
        await app.close()


class ServingInThread:
    """The app for ``config``, served by :func:`serving` from an event loop in a thread of its own."""

    def __init__(self, config, name: str = "app-server") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()
        self._serving = serving(config)
        self.app, self.port = self.call(self._serving.__aenter__())

    def call(self, coroutine, timeout: float = 30.0):
        """Runs ``coroutine`` on the server's loop; blocks until it is done and gives its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.call(self._serving.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
