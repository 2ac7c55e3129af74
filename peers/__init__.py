"""Peer nodes: viewers' own servers that fetch a video from each other, piece by piece.

A server whose config sets ``peer.upstream`` is a *node*: its store
(:mod:`peers.node_store`) takes the catalog from the upstream and serves
bytes that were checked against the upstream's manifest, fetched from other
nodes watching the same video (closest first) or else from the upstream.
Without ``peer.upstream`` the server is the *origin*: it computes manifests
(:mod:`peers.manifest_cache`) and lists, for each video, the nodes watching
it. The upstream of a node may itself be a node, so nodes chain.

The protocol between servers, all plain HTTP plus the presence websocket:

``GET /videos/{id}/manifest`` (origin and nodes)
    ``{"id", "size", "pieceSize", "pieces": [sha256 hex], "root", "etag"}``
    (:mod:`peers.manifest`). A node takes it from its upstream only, and
    serves that same manifest to nodes below it.
``GET /videos/{id}/peers`` (origin and nodes)
    ``[{"url", "address"}]``: the nodes watching the video, closest to the
    asker first (:mod:`peers.ordering`). A node answers with the nodes
    announced to itself and those its upstream lists.
``GET /videos/{id}/have`` (nodes)
    ``{"root", "pieceSize", "pieces": [[first, end], ...]}``: the verified
    pieces the node holds, as index ranges with ``end`` excluded
    (:mod:`peers.have`).
``GET|HEAD /videos/{id}/pieces/{n}?root=HEX`` (nodes)
    The bytes of piece ``n`` from the node's verified pieces, with Range
    support inside the piece; 404 when it does not hold it (a node never
    fetches for another node here).
``GET /videos/{id}/sources`` (nodes)
    ``{"local", "peers", "origin"}``: the bytes this node's clients got,
    by where they came from.
``WS /presence`` on the upstream
    A node watches there what its own clients watch, with ``"peer":
    public_url`` (:mod:`peers.announce`); the origin accepts the URL only
    when its host is the node's own address.

Where a node falls back to its upstream it reads ``/videos/{id}/stream``
with ``If-Match`` set to the manifest's ETag, so bytes of two versions of a
video never mix.

``Binge-Via: id, id, ...`` (request header, every request a node makes to its upstream)
    The nodes the request passed through, the asking node's own random id
    last (:mod:`peers.hops`). A node that finds its own id in it, or any
    server given more than ``hops.MAX_HOPS`` ids, answers **508 Loop
    Detected** with ``{"error", "status"}`` naming the loop (a malformed
    header: 400); the node below passes the 508 on rather than retry, and
    shows the loop in ``/healthz`` and ``GET /videos``. Requests to peers
    (``/have``, ``/pieces``) and the presence websocket carry none: nothing
    forwards them. A node's ``/healthz`` says its ``nodeId``.
"""
