"""The storage backend config.yaml names, and what it makes: the one place that reads ``storage.backend``.

The backend gives an origin its store, ``binge-ingest`` its way in, and a
peer node the place for its pieces; instances of an origin on one Pravega
scope also share one presence picture, and so do the worker processes of one server. The Pravega modules are imported only
when configured: a filesystem setup needs no Pravega client.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Callable

from media.filesystem import FilesystemStore
from media.filesystem_ingest import ingest_into_library
from media.store import NewVideo, Store
from peers.node_store import PeerNodeStore
from peers.pieces import PieceFolder, PieceStore
from presence.link import PresenceLink, Transport
from presence.relay import RelayTransport
from presence.state import Presence
from settings import Settings

if TYPE_CHECKING:
    from ops.workers import WorkerContext


def _on_pravega(config: Settings) -> bool:
    return config.storage.backend == "pravega"


def open_store(config: Settings) -> Store:
    """The store the server serves from: a peer node's when ``peer.upstream`` is set, else the backend's own."""
    if config.peer.upstream:
        return PeerNodeStore(config, node_pieces(config))
    if _on_pravega(config):
        from media.pravega_store import PravegaStore

        return PravegaStore(config)
    return FilesystemStore(config.storage)


def node_pieces(config: Settings) -> PieceStore:
    """Where a peer node keeps the pieces it fetched."""
    if _on_pravega(config):
        from peers.pravega_pieces import PieceStreams

        return PieceStreams(config.pravega)
    return PieceFolder(os.path.join(config.storage.library, ".pieces"))


def ingest(config: Settings, item: NewVideo, progress: Callable[[int], None]) -> None:
    """Writes ``item`` into the backend, as ``binge-ingest`` does; ``progress`` hears of the bytes written."""
    if _on_pravega(config):
        from media.pravega_ingest import ingest_into_pravega

        ingest_into_pravega(config, item, progress)
    else:
        ingest_into_library(config, item, progress)


def location(config: Settings) -> str:
    """Where the backend keeps videos, as messages name it."""
    if _on_pravega(config):
        return f"Pravega scope {config.pravega.scope!r} at {config.pravega.controller_uri}"
    return config.storage.library


def shared_presence(config: Settings, presence: Presence, worker: WorkerContext | None = None) -> PresenceLink | None:
    """Shares ``presence`` with the other instances of an origin on the same Pravega scope, and with the
    sibling workers of this server (``worker`` is this one) through the parent's relay; None where neither is."""
    transports: list[Transport] = []
    instance = uuid.uuid4().hex[:12]
    if worker is not None:
        transports.append(RelayTransport(worker.run_dir, instance, worker.index))
    if _on_pravega(config) and not config.peer.upstream:
        from presence.pravega_link import PravegaTransport

        transports.append(PravegaTransport(config.pravega))
    if not transports:
        return None
    return PresenceLink(presence, transports, config.pravega.instance_timeout, instance)
