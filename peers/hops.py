"""The hop guard: a loop of upstreams is refused at once, never followed.

Nodes chain (a node's upstream may be another node), so a misconfiguration
can close a ring — A's upstream is B and B's is A, or a node is its own
upstream — and a request forwarded along it would go round until timeouts.
To stop that, every request a node makes to its upstream
(:class:`peers.upstream.Upstream` adds the header, in one place) names the
nodes it passed through::

    Binge-Via: 3f9c0a12d4e7, 81b2c5e0f9aa

in order: first the chain of the request being served, when the call is
made on its behalf, then the calling node's own id: random, drawn once per
node when it starts (:func:`new_node_id`), and meaningless outside this
header. Requests from players carry no ``Binge-Via``; requests from a node to
*peers* (``/have``, ``/pieces``) carry none either, since a peer answers
those from what it holds and never forwards them.

Every server checks the header before anything else (:func:`admit`, from
``handlers.base``):

* a node that finds its own id in the chain answers **508 Loop Detected**,
  a JSON error naming the ring (``upstream loop: a -> b -> a ...``);
* a chain of more than ``MAX_HOPS`` ids is answered 508 too: no sane chain
  of nodes is that deep, so something loops or someone is playing;
* a malformed header (an id that is not 1-64 of ``A-Z a-z 0-9 _ . -``) is
  answered 400, so nothing odd is ever forwarded upstream.

A node that gets a 508 from its upstream raises :class:`LoopDetected` (a
store error with status 508) with the upstream's message, so the message
that names the ring travels back down the chain unchanged; the catalog
keeps it as its error (``/healthz``, ``GET /videos``) and the fetcher fails
the read at once instead of retrying the upstream.

The chain travels with the work done for a request in a context variable:
the handler sets it in its own task (:func:`admit`), and asyncio copies it
into every task started from there (piece fetches, a shared refresh), so
nothing between a handler and :class:`~peers.upstream.Upstream` passes it
along. Background work (the catalog's periodic refresh) starts with an
empty chain.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

from media.store import InvalidInput, Unavailable

HEADER = "Binge-Via"
MAX_HOPS = 8
NODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")

# The chain of the request this task serves (empty: a player's request, or background work).
_chain: ContextVar[tuple[str, ...]] = ContextVar("binge_via", default=())


class LoopDetected(Unavailable):
    """A request went round a loop of upstreams, or through too many nodes: answered 508."""

    status = 508


def new_node_id() -> str:
    return secrets.token_hex(6)


def parse(value: str | None) -> tuple[str, ...]:
    """The ids of a ``Binge-Via`` value (repeated headers arrive joined by commas); InvalidInput if malformed."""
    if value is None:
        return ()
    chain = tuple(entry.strip() for entry in value.split(","))
    if chain == ("",):
        return ()
    bad = next((entry for entry in chain if not NODE_ID.match(entry)), None)
    if bad is not None:
        raise InvalidInput(f"malformed {HEADER} header: {bad[:80]!r} is not a node id")
    return chain


def check(chain: tuple[str, ...], node_id: str | None, name: str | None = None) -> None:
    """Raises LoopDetected if ``chain`` came back to ``node_id`` (None: an origin) or is too long.

    ``name`` (the node's public URL, if known) goes into the message, so an
    operator can tell which server the ids are.
    """
    if node_id is not None and node_id in chain:
        raise LoopDetected(loop_message(chain, node_id, name))
    if len(chain) > MAX_HOPS:
        raise LoopDetected(
            f"too many hops: the request passed through {len(chain)} nodes ({', '.join(chain)}), "
            f"more than {MAX_HOPS}; check peer.upstream along that chain"
        )


def loop_message(chain: tuple[str, ...], node_id: str, name: str | None = None) -> str:
    ring = (*chain[chain.index(node_id):], node_id)
    node = f"node {node_id}" + (f" ({name})" if name else "")
    if len(ring) == 2:
        return f"upstream loop: {node} is its own upstream: its peer.upstream leads back to itself"
    return (f"upstream loop: {' -> '.join(ring)}: a request from {node} came back to it; "
            f"check peer.upstream along that chain")


def admit(value: str | None, node_id: str | None, name: str | None = None) -> tuple[str, ...]:
    """Checks an incoming ``Binge-Via`` and makes it the chain of the current task; returns the chain.

    InvalidInput (400) if malformed, LoopDetected (508) if it loops or is too long.
    """
    chain = parse(value)
    check(chain, node_id, name)
    _chain.set(chain)
    return chain


def incoming() -> tuple[str, ...]:
    """The chain of the request the current task serves; empty for a player's request or background work."""
    return _chain.get()


def outgoing(node_id: str) -> dict[str, str]:
    """The header for a request to the upstream: the current chain, then ``node_id``."""
    return {HEADER: ", ".join((*_chain.get(), node_id))}
