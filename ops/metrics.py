"""The server's Prometheus metrics, in a registry of the app's own.

Each :class:`Metrics` has its own ``CollectorRegistry`` rather than the
process-wide default, so that several apps in one process (tests) do not
collide. Handlers and modules call the objects here directly; what other
modules already count (open streams and sockets, a node's bytes by source)
is read from them when scraped, not counted twice.

Labels stay few and bounded: a request's route is its handler class, never
its path.

In a worker among several (:mod:`ops.workers`), ``/metrics`` answers for all
of them: the supervisor gives each worker ``PROMETHEUS_MULTIPROC_DIR``, a
folder of its run directory, which puts prometheus_client in multiprocess
mode: every counter and histogram is kept in a memory-mapped file per
process, and the exposition sums the files of all (a dead worker's counts
stay in the sums, so counters never go back; its gauges are dropped when the
supervisor marks it dead). That mode cannot read a gauge through
``set_function`` when scraped, so each worker writes its two gauges' values
every ``GAUGE_REFRESH`` seconds (and at once when it is the one scraped), and
they are summed over the workers alive. Custom collectors (a node's bytes by
source) are not in the files: they are collected from the registry as in one
process, and added.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from tornado.ioloop import PeriodicCallback
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# Presence broadcasts wait out presence.coalesce_interval (0.02 s by
# default) before they are written; the buckets straddle it.
BROADCAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# Seconds between a worker's writes of its gauges in multiprocess mode: how
# old another worker's count of open streams and sockets may be when scraped.
GAUGE_REFRESH = 1.0


def multiprocess_dir() -> str | None:
    """The folder of the workers' metric files, or None in a server of one process."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    def __init__(self, store_name: str) -> None:
        self.registry = CollectorRegistry()
        self._custom: list = []  # collectors of our own, outside multiprocess mode's files
        self._gauges: list[tuple[Gauge, Callable[[], float]]] = []
        self._refresh: PeriodicCallback | None = None
        self.requests = Counter(
            "binge_http_requests", "HTTP requests answered, by route (handler) and status.",
            ["route", "status"], registry=self.registry,
        )
        streamed = Counter(
            "binge_streamed_bytes", "Video bytes sent to clients, by store.", ["store"], registry=self.registry,
        )
        # The store never changes during the app's life.
        self.streamed = streamed.labels(store_name)
        # livesum: with several workers, the sum over those alive (one process ignores it).
        self.active_streams = Gauge(
            "binge_active_streams", "Video bodies being sent now.", registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.websocket_clients = Gauge(
            "binge_websocket_clients", "Presence websockets open now.", registry=self.registry,
            multiprocess_mode="livesum",
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
        collector = _SourceBytes(sources)
        self.registry.register(collector)
        self._custom.append(collector)

    def count_held(self, held_bytes: Callable[[], float]) -> None:
        """Exports the bytes of pieces a peer node keeps (toward ``peer.max_held_bytes``), read when scraped.

        A collector of our own rather than a ``set_function`` gauge, so that it
        is read the same way with or without multiprocess mode's files.
        """
        collector = _HeldBytes(held_bytes)
        self.registry.register(collector)
        self._custom.append(collector)

    def watch(self, active_streams: Callable[[], float], websocket_clients: Callable[[], float]) -> None:
        """Reads the two gauges from whoever holds the streams and sockets, when scraped.

        In multiprocess mode, writes them now and every ``GAUGE_REFRESH``
        seconds on the running loop, until :meth:`close`.
        """
        if multiprocess_dir() is None:
            self.active_streams.set_function(active_streams)
            self.websocket_clients.set_function(websocket_clients)
            return
        self._gauges = [(self.active_streams, active_streams), (self.websocket_clients, websocket_clients)]
        self._write_gauges()
        self._refresh = PeriodicCallback(self._write_gauges, GAUGE_REFRESH * 1000)
        self._refresh.start()

    def _write_gauges(self) -> None:
        for gauge, value in self._gauges:
            gauge.set(value())

    def close(self) -> None:
        if self._refresh is not None:
            self._refresh.stop()

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format, version 0.0.4 (``CONTENT_TYPE``); with workers, of all."""
        folder = multiprocess_dir()
        if folder is None:
            return generate_latest(self.registry)
        self._write_gauges()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, folder)
        for collector in self._custom:
            registry.register(collector)
        return generate_latest(registry)


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


class _HeldBytes:
    """A collector: the bytes of pieces a peer node keeps, read from it when scraped."""

    def __init__(self, held_bytes: Callable[[], float]) -> None:
        self._held_bytes = held_bytes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "binge_peer_held_bytes",
            "Bytes of verified pieces a peer node keeps, counted toward peer.max_held_bytes "
            "(in Pravega: those appended, not those still waiting to be).",
            value=self._held_bytes(),
        )
