"""The Tornado application: routes, and the shared objects handlers reach through it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import tornado.web

import api_paths
import backends
from captions.cache import CaptionCache
from handlers import catalog, health, metrics, pages, peers, presence, stream
from handlers.base import NotFoundHandler, client_ip
from media.store import Store, UpstreamManifests
from ops import access_log
from ops.limits import SharedCounts, Slots
from ops.metrics import Metrics
from peers.manifest_cache import ManifestCache
from presence.broadcast import Broadcaster
from presence.signalling import Signalling
from presence.state import Presence
from settings import Settings

if TYPE_CHECKING:
    from ops.workers import WorkerContext

def routes() -> list[tuple]:
    # The old Electron app's paths come before the /videos/{id} family they overlap.
    return [(path.route, handler) for path, handler in [
        (api_paths.STREAM, stream.StreamHandler),
        (api_paths.CAPTIONS, catalog.CaptionListHandler),
        (api_paths.CAPTION, catalog.CaptionHandler),
        (api_paths.POSTER, catalog.PosterHandler),
        (api_paths.VIDEO_DATA, catalog.VideoHandler),
        (api_paths.MANIFEST, peers.ManifestHandler),
        (api_paths.PEERS, peers.PeersHandler),
        (api_paths.HAVE, peers.HaveHandler),
        (api_paths.PIECE, peers.PieceHandler),
        (api_paths.SOURCES, peers.SourcesHandler),
        (api_paths.OLD_CAPTION, catalog.CaptionHandler),
        (api_paths.OLD_STREAM, stream.StreamHandler),
        (api_paths.VIDEO, catalog.VideoHandler),
        (api_paths.VIDEOS, catalog.VideoListHandler),
        (api_paths.PRESENCE, presence.PresenceHandler),
        (api_paths.ICE_SERVERS, peers.IceServersHandler),
        (api_paths.HEALTH, health.HealthHandler),
        (api_paths.METRICS, metrics.MetricsHandler),
        (api_paths.CATALOG_PAGE, pages.CatalogPage),
        (api_paths.WATCH_PAGE, pages.WatchPage),
    ]]


class BingeApp(tornado.web.Application):
    """The server: configuration, the store, presence, the caption cache, metrics and limits, shared by handlers."""

    def __init__(self, config: Settings, store: Store, worker: WorkerContext | None = None) -> None:
        self.config = config
        # Which of the server's worker processes this is (see ops.workers); None when it is the only one.
        self.worker = worker
        self.started = time.monotonic()
        self.store = store
        # This server's id in Binge-Via (peers.hops): a node's; an origin asks no upstream, so has none.
        self.node_id: str | None = store.node_id
        self.presence = Presence()
        self.signalling = Signalling(self.presence, config.presence.signals_per_second)
        self.metrics = Metrics(store.name)
        # Video bodies being sent and presence websockets, limited per client address (across workers).
        self.streams = Slots("streams", config.limits.streams_per_ip, self._counts("streams"))
        self.sockets = Slots("websockets", config.limits.sockets_per_ip, self._counts("websockets"))
        self.metrics.watch(lambda: len(self.streams), lambda: len(self.sockets))
        self.broadcaster = Broadcaster(self.presence, config.presence, self.metrics.broadcast_latency.observe)
        self.captions = CaptionCache(config.storage.cache_dir)
        super().__init__(
            routes(),
            default_handler_class=NotFoundHandler,
            compress_response=False,
            static_path=pages.STATIC_PATH,
            static_handler_class=pages.StaticFiles,
            template_path=pages.TEMPLATE_PATH,
        )
        store.add_listener(self._on_catalog_change)
        # Instances on one Pravega scope, and the workers of one server, share one presence picture.
        self.presence_link = backends.shared_presence(config, self.presence, worker)
        if self.presence_link:
            self.signalling.remote = self.presence_link.send_signal
            self.presence_link.on_signal = self.signalling.from_instance
            self.presence_link.start()
        # A node mirrors what its clients watch onto its upstream's presence
        # (and relays their signals for sockets it does not know there), and serves its upstream's manifests; an origin hashes its videos
        # into manifests in the background, so that nodes find them ready.
        store.join(self.presence, self.signalling, self.metrics)
        self.manifests: UpstreamManifests | ManifestCache = store.upstream_manifests() or self._hash_manifests()

    def _counts(self, what: str) -> SharedCounts | None:
        worker = self.worker
        return None if worker is None else SharedCounts(worker.run_dir, what, worker.index, worker.count)

    def _hash_manifests(self) -> ManifestCache:
        cache = ManifestCache(self.store, self.config.storage.cache_dir, self.config.peer.piece_size)
        cache.follow_catalog()
        return cache

    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        """Writes the request's access line and counts it by route and status."""
        access_log.log_request(handler, client_ip(handler.request, self.config.server.trusted_proxies))
        self.metrics.requests.labels(access_log.route(handler), str(handler.get_status())).inc()

    def _on_catalog_change(self) -> None:
        self.presence.drop_videos_not_in(set(self.store.videos()))

    async def close(self) -> None:
        self.metrics.close()
        if self.presence_link:
            await self.presence_link.close()
        await self.manifests.close()
        await self.store.close()


async def build_app(config: Settings, worker: WorkerContext | None = None) -> BingeApp:
    """Creates the store for ``config``, loads its catalog and returns the app ready to listen (as ``worker``)."""
    store = backends.open_store(config)
    await store.start()
    return BingeApp(config, store, worker)
