"""``GET /healthz``: is the server up, and can it reach its store?"""

from __future__ import annotations

import time

from handlers.base import BaseHandler


class HealthHandler(BaseHandler):
    """200 with ``{"status": "ok", ...}`` when the store answers, 503 with ``"degraded"`` when not."""

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
            },
            200 if ok else 503,
        )
