"""What ``storage.backend`` and ``peer.upstream`` make, and an origin asked what only a node has.

Building these starts nothing (no process, no connection), so the Pravega
cases need no Pravega; serving them is tested everywhere else.
"""

from __future__ import annotations

import pytest
import ujson

import backends
from peers.pieces import PieceFolder
from peers.pravega_pieces import PieceStreams
from presence.state import Presence
from tests.conftest import make_config

PRAVEGA = {"storage": {"backend": "pravega"}, "pravega": {"controller_uri": "tcp://127.0.0.1:1", "scope": "s"}}
NODE = {"peer": {"upstream": "http://127.0.0.1:1"}}


@pytest.mark.parametrize(("sections", "store", "pieces", "shares_presence"), [
    ({}, "filesystem", PieceFolder, False),
    (PRAVEGA, "pravega", PieceStreams, True),
    (NODE, "peer", PieceFolder, False),
    # A node on Pravega keeps its pieces there; its presence is its upstream's, not a scope's.
    ({**PRAVEGA, **NODE}, "peer", PieceStreams, False),
])
def test_the_configured_backend_makes_the_store_the_pieces_and_the_presence(
    tmp_path, sections, store, pieces, shares_presence
):
    (tmp_path / "library").mkdir()
    config = make_config(tmp_path, **sections)
    made = backends.open_store(config)
    assert made.name == store
    assert (made.node_id is not None) == (store == "peer")
    assert type(backends.node_pieces(config)) is pieces
    assert (backends.shared_presence(config, Presence()) is not None) == shares_presence


@pytest.mark.usefixtures("config")
@pytest.mark.parametrize("path", ["/videos/alpha/have", "/videos/alpha/pieces/0?root=ab", "/videos/alpha/sources"])
@pytest.mark.gen_test
async def test_an_origin_answers_node_only_paths_with_a_json_404(http_client, base_url, path):
    r = await http_client.fetch(base_url + path, raise_error=False)
    assert r.code == 404
    assert "an origin, not a peer node" in ujson.loads(r.body)["error"]
