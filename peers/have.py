"""The have format: a set of piece indices written as ranges.

``[[0, 12], [20, 21]]`` means pieces 0 to 11 and piece 20: each pair is a
first index and an end index that is not included. A node that holds a
video's first half sends one pair, not thousands of numbers. Pairs come in
ascending order without overlapping, as :func:`to_ranges` writes them, so
reading a peer's list costs at most one step per piece it names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from peers.pieces import PieceStorage


def to_ranges(indices: Iterable[int]) -> list[list[int]]:
    """The sorted, merged ranges covering ``indices``."""
    ranges: list[list[int]] = []
    for n in sorted(indices):
        if ranges and ranges[-1][1] == n:
            ranges[-1][1] = n + 1
        else:
            ranges.append([n, n + 1])
    return ranges


def from_ranges(ranges: object, count: int) -> set[int]:
    """The indices ``ranges`` names, each below ``count``; ValueError if it is not in the format."""
    if not isinstance(ranges, list):
        raise ValueError("have: pieces must be a list of [first, end] pairs")
    indices: set[int] = set()
    previous_end = 0
    for pair in ranges:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair)
            or not previous_end <= pair[0] < pair[1] <= count
        ):
            raise ValueError(f"have: {pair!r} is not a [first, end] pair of piece indices from {previous_end} "
                             f"below {count} (pairs ascending, not overlapping)")
        indices.update(range(pair[0], pair[1]))
        previous_end = pair[1]
    return indices


def have_document(storage: PieceStorage) -> dict:
    """``{"root", "pieceSize", "pieces": ranges}``: what a node answers for ``/have``, over HTTP or a data channel."""
    manifest = storage.manifest
    return {
        "root": manifest.root if manifest else None,
        "pieceSize": manifest.piece_size if manifest else None,
        "pieces": to_ranges(storage.held()),
    }
