"""Presence between the instances of an origin on one Pravega scope: the transport of :mod:`presence.link` over a stream.

Each instance appends its records to the scope's ``presence`` event stream
and follows that stream for everyone's. The client's calls hold the GIL
and block, so a follow worker process does both (see
:class:`pravega_workers.follower.StreamFollower`): this side hands it records
without waiting and hears each event of the stream back. The worker
truncates the stream to about its last ``instance_timeout`` seconds, which
always holds the latest snapshot of every live instance: a new instance
learns the whole picture from that short replay, and the stream does not
grow.
"""

from __future__ import annotations

from pravega_workers.follower import StreamFollower
from presence.link import Receiver
from settings import PravegaSettings

PRESENCE_STREAM = "presence"
# How often the worker looks for others' records: a change shows on every
# instance within about this, plus the broadcast's coalescing.
POLL = 0.25


class PravegaTransport(StreamFollower):
    """The scope's ``presence`` stream as a :class:`presence.link.Transport`."""

    name = "pravega"

    def __init__(self, settings: PravegaSettings) -> None:
        super().__init__(settings, PRESENCE_STREAM, poll=POLL, keep=settings.instance_timeout)
        self._receiver: Receiver | None = None

    def start(self, receiver: Receiver) -> None:
        self._receiver = receiver
        super().start()

    def append(self, record: bytes, kind: str = "", seq: int = 0) -> bool:
        return super().append(record)

    def on_reset(self) -> None:
        self._receiver.on_reset(self.name)

    def on_record(self, data: bytes) -> None:
        self._receiver.on_record(self.name, data)

    def on_caught_up(self) -> None:
        self._receiver.on_caught_up(self.name)
