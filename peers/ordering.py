"""Closest first: the order in which a node is told about the peers of a video.

Peers are ranked by how their address relates to the asker's: the same
address (another node on the same machine), then the same subnet (a /24 for
IPv4, a /64 for IPv6: the same home or office network, as far as an address
tells), then everything else. The sort is stable, so within a rank peers
keep the order presence had them in, oldest watcher first: the one likeliest
to hold the most pieces. An address that does not parse ranks last.
"""

from __future__ import annotations

import ipaddress

SAME_ADDRESS, SAME_SUBNET, ELSEWHERE = 0, 1, 2
# Prefix lengths taken as "the same local network".
SUBNET_PREFIX = {4: 24, 6: 64}


def closeness(asker: str, address: str) -> int:
    """SAME_ADDRESS, SAME_SUBNET or ELSEWHERE: how near ``address`` is to ``asker``."""
    try:
        a, b = ipaddress.ip_address(asker), ipaddress.ip_address(address)
    except ValueError:
        return ELSEWHERE
    # An IPv4 client seen through an IPv6 socket shows as ::ffff:a.b.c.d.
    a = getattr(a, "ipv4_mapped", None) or a
    b = getattr(b, "ipv4_mapped", None) or b
    if a == b:
        return SAME_ADDRESS
    if a.version == b.version:
        network = ipaddress.ip_network(f"{a}/{SUBNET_PREFIX[a.version]}", strict=False)
        if b in network:
            return SAME_SUBNET
    return ELSEWHERE


def closest_first(asker: str, peers: list[dict]) -> list[dict]:
    """``peers`` (each with an ``"address"``) sorted for ``asker``, closest first."""
    return sorted(peers, key=lambda peer: closeness(asker, peer["address"]))
