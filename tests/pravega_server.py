"""The shared standalone Pravega (scripts/pravega) and the durable cluster (scripts/pravega cluster) for the
tests, and what a test does when Pravega cannot run.

Without Java or Maven the Pravega tests are skipped, except under CI (env
``CI`` set), where that is a failure: CI must run them. The same goes for a
cluster that cannot start.
"""

from __future__ import annotations

import os

from harness.pravega import PravegaCluster, PravegaNotStarted, StandalonePravega, port_open, run_script
from tests.needs import skip_or_fail


def shared_controller():
    """The shared Pravega, started here unless something already listens on its port."""
    port = int(os.environ.get("PRAVEGA_CONTROLLER_PORT", "9090"))
    started = False
    if not port_open(port):
        result = run_script("start")
        if result.returncode != 0:
            skip_or_fail("the Pravega tests", f"scripts/pravega start failed:\n{result.stdout}{result.stderr}")
        started = True
    yield f"tcp://127.0.0.1:{port}"
    if started:
        run_script("stop")


def start_private(home) -> StandalonePravega:
    """A Pravega of this test's own, started, to pause, stop and start at will."""
    pravega = StandalonePravega(home)
    try:
        pravega.start()
    except PravegaNotStarted as e:
        skip_or_fail("the Pravega tests", str(e))
    return pravega


def started_cluster(data):
    """The cluster, started: data in ``data`` (a fresh folder), ports from
    ``PRAVEGA_CLUSTER_PORT_BASE`` (12000 by default); stopped when they end, however they ended."""
    cluster = PravegaCluster(data, int(os.environ.get("PRAVEGA_CLUSTER_PORT_BASE", "12000")))
    try:
        cluster.start()
    except PravegaNotStarted as e:
        skip_or_fail("the Pravega tests", str(e))
    try:
        yield cluster
    finally:
        cluster.stop()
