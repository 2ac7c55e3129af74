"""Graceful shutdown, as ``server.py`` does it on SIGTERM or SIGINT.

1. The listening socket closes; new streams and websockets on connections
   already open are refused with 503.
2. Every presence websocket is closed with 1001 "server shutting down".
3. Video bodies being sent get ``server.shutdown_grace`` seconds to finish
   (websockets the same time to finish their closing handshake).
4. What is left is cut (see :meth:`ops.limits.Slots.cut_all`): the client
   sees its connection close before the body's end. Idle keep-alive
   connections are closed.
5. The store closes, and with it its readers, workers and tasks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from tornado.httpserver import HTTPServer

if TYPE_CHECKING:
    from handlers.app import BingeApp

log = logging.getLogger("binge.server")

GOING_AWAY = 1001

# Seconds cut handlers get to unwind. They do at their next turn of the
# loop; this only bounds one stuck in its cleanup.
UNWIND = 1.0


async def shut_down(server: HTTPServer, app: BingeApp, grace: float) -> None:
    loop = asyncio.get_running_loop()
    server.stop()
    held = (app.streams, app.sockets)
    for slots in held:
        slots.close()
    app.broadcaster.close_all(GOING_AWAY, "server shutting down")
    deadline = loop.time() + grace
    for slots in held:
        await slots.emptied(max(0.0, deadline - loop.time()))
    for slots in held:
        if len(slots):
            log.info("cutting %d %s still open after %g s", len(slots), slots.what, grace)
            slots.cut_all()
    await server.close_all_connections()
    for slots in held:
        if not await slots.emptied(UNWIND):
            log.warning("%d %s did not end when cut", len(slots), slots.what)
    await app.close()
