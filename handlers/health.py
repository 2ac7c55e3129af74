"""``GET /healthz``: is the server up, and can it reach its store?"""

from __future__ import annotations

import time

from handlers.base import BaseHandler


class HealthHandler(BaseHandler):
    """200 with ``{"status": "ok", ...}`` when the store answers, 503 with ``"degraded"`` when not.

    A peer node adds its ``nodeId``: the id it goes by in ``Binge-Via``, so
    the ids in a message naming a loop of upstreams can be told apart.
    """

    etag_from_body = False  # no-store, and its uptime changes every time

    async def get(self) -> None:
        store = await self.application.store.health()
        ok = bool(store.get("ok"))
        self.set_header("Cache-Control", "no-store")
        self.write_json(
            {
                "status": "ok" if ok else "degraded",
                "store": store,
                "uptimeSeconds": round(time.monotonic() - self.application.started, 1),
                "websocketClients": len(self.application.presence.local_sockets()),
                **({"nodeId": self.application.node_id} if self.application.node_id else {}),
            },
            200 if ok else 503,
        )
