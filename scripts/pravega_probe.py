"""Exits 0 when a Pravega at the controller URI in argv[1] can make a stream, append to it and read the bytes back.

scripts/pravega-cluster's readiness check: a listening port says nothing of
whether the controller has handed the segment containers to a segment store,
or whether the bookies take writes. Each run uses a stream of its own, and
deletes it: a probe killed by its timeout may still have an append in flight,
which would fail a later probe's conditional append to a shared stream.
"""

import os
import sys
import time

import pravega_client

SCOPE = "bingeprobe"


def main(controller_uri: str) -> int:
    manager = pravega_client.StreamManager(controller_uri)
    stream_name = f"ready{os.getpid()}x{time.time_ns()}"
    manager.create_scope(SCOPE)
    manager.create_stream(SCOPE, stream_name, 1)
    try:
        stream = manager.create_byte_stream(SCOPE, stream_name)
        mark = os.urandom(16)
        stream.write(mark)
        stream.flush()
        stream.seek(0, 0)
        got = bytearray(len(mark))
        n = stream.readinto(got)
        if bytes(got[:n]) != mark:
            print(f"read back {bytes(got[:n])!r}, wrote {mark!r}", file=sys.stderr)
            return 1
    finally:
        manager.seal_stream(SCOPE, stream_name)
        manager.delete_stream(SCOPE, stream_name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
