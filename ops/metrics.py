"""The server's Prometheus metrics, in a registry of the app's own.

Each :class:`Metrics` has its own ``CollectorRegistry`` rather than the
process-wide default, so that several apps in one process (tests) do not
collide. Handlers and modules call the objects here directly; what other
modules already count (open streams and sockets, a node's bytes by source)
is read from them when scraped, not counted twice.

Labels stay few and bounded: a request's route is its handler class, never
its path.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# Presence broadcasts wait out presence.coalesce_interval (0.02 s by
# default) before they are written; the buckets straddle it.
BROADCAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self, store_name: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "binge_http_requests", "HTTP requests answered, by route (handler) and status.",
            ["route", "status"], registry=self.registry,
        )
        streamed = Counter(
            "binge_streamed_bytes", "Video bytes sent to clients, by store.", ["store"], registry=self.registry,
        )
        # The store never changes during the app's life.
        self.streamed = streamed.labels(store_name)
        self.active_streams = Gauge(
            "binge_active_streams", "Video bodies being sent now.", registry=self.registry,
        )
        self.websocket_clients = Gauge(
            "binge_websocket_clients", "Presence websockets open now.", registry=self.registry,
        )
        self.broadcast_latency = Histogram(
            "binge_presence_broadcast_latency_seconds",
            "Seconds from a presence change to its broadcast written to every client.",
            buckets=BROADCAST_BUCKETS, registry=self.registry,
        )
        self.piece_verification_failures = Counter(
            "binge_piece_verification_failures",
            "Pieces that did not hash to their manifest, by who sent them (peers, origin).",
            ["source"], registry=self.registry,
        )

    def piece_failed(self, source: str) -> None:
        """Counts a piece from ``source`` ("peers", "origin") that failed verification."""
        self.piece_verification_failures.labels(source).inc()

    def count_sources(self, sources: dict[str, dict[str, int]]) -> None:
        """Exports a peer node's bytes served by source, as peers.session counts them per video."""
        self.registry.register(_SourceBytes(sources))

    def watch(self, active_streams: Callable[[], float], websocket_clients: Callable[[], float]) -> None:
        """Reads the two gauges from whoever holds the streams and sockets, when scraped."""
        self.active_streams.set_function(active_streams)
        self.websocket_clients.set_function(websocket_clients)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format, version 0.0.4 (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)


class _SourceBytes:
    """A collector: the sums over videos of a node's per-video source counts."""

    def __init__(self, sources: dict[str, dict[str, int]]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "binge_source_bytes", "Bytes a peer node served its clients, by where they came from.", labels=["source"],
        )
        totals: dict[str, int] = {}
        for counts in self._sources.values():
            for source, count in counts.items():
                totals[source] = totals.get(source, 0) + count
        for source, total in sorted(totals.items()):
            family.add_metric([source], total)
        yield family
