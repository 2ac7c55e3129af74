"""``GET /healthz``: is the server up, and can it reach its store?"""

from __future__ import annotations

import os
import time

from handlers.base import BaseHandler
from ops import workers


class HealthHandler(BaseHandler):
    """200 with ``{"status": "ok", ...}`` when the store answers, 503 with ``"degraded"`` when not.

    A peer node adds its ``nodeId``: the id it goes by in ``Binge-Via``, so
    the ids in a message naming a loop of upstreams can be told apart. One
    of several workers (:mod:`ops.workers`) adds ``worker``, its index, pid
    and presence ``instance`` (the name its sockets go by in every worker's
    presence), so an operator sees which process answered and which
    process holds a socket.
    """

    etag_from_body = False  # no-store, and its uptime changes every time

    async def get(self) -> None:
        store = await self.application.store.health()
        ok = bool(store.get("ok"))
        worker = workers.current()
        self.set_header("Cache-Control", "no-store")
        self.write_json(
            {
                "status": "ok" if ok else "degraded",
                "store": store,
                "uptimeSeconds": round(time.monotonic() - self.application.started, 1),
                "websocketClients": len(self.application.presence.local_sockets()),
                **({"nodeId": self.application.node_id} if self.application.node_id else {}),
                **({"worker": {"index": worker.index, "pid": os.getpid(),
                               "instance": self.application.presence_link.instance}} if worker else {}),
            },
            200 if ok else 503,
        )
