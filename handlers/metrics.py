"""``GET /metrics``: the server's metrics for Prometheus to scrape (see :mod:`ops.metrics`)."""

from __future__ import annotations

from handlers.base import BaseHandler
from ops.metrics import CONTENT_TYPE


class MetricsHandler(BaseHandler):
    """The Prometheus text format, version 0.0.4."""

    etag_from_body = False  # no-store, and its counters change with every request

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(self.application.metrics.exposition())
