"""Pravega for an event loop: its client run in worker processes, so no call to it ever blocks the server.

The Pravega client's calls hold the GIL and may block for minutes when
Pravega is unreachable. The server therefore never calls it: worker
processes do (:mod:`pravega_workers.worker`), and the server talks to them
over socket pairs its event loop watches (:mod:`pravega_workers.pool`,
:mod:`pravega_workers.follower`), with timeouts, killing and replacing a
worker that hangs. What it offers is general: read byte ranges of
streams; create, append to, list and delete one-segment event streams; and
follow such a stream from its head. What the events and bytes mean belongs
to its users (the video store in :mod:`media`, shared presence in
:mod:`presence`, a node's pieces in :mod:`peers`).

- :mod:`~pravega_workers.errors`: :class:`PravegaError`, the one way a call fails.
- :mod:`~pravega_workers.layout`: how Pravega frames events in a segment; stream names.
- :mod:`~pravega_workers.blocking`: the client's calls, made into those errors, for
  the workers and for commands (``binge-ingest``) that may block.
- :mod:`~pravega_workers.protocol`: the frames between the server and its workers.
- :mod:`~pravega_workers.pool`, :mod:`~pravega_workers.follower`: the server's side.
- :mod:`~pravega_workers.worker`: the worker process, ``python -m pravega_workers.worker``.
"""
