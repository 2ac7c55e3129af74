"""api_paths: every URL a client builds is one the server's route takes, with the same fields back."""

from __future__ import annotations

import re
import string

import api_paths
from handlers.app import routes

SAMPLE = {"video_id": "clip-1.v2", "index": 7, "lang": "pt-BR"}


def all_paths() -> list[api_paths.Path]:
    return [value for value in vars(api_paths).values() if isinstance(value, api_paths.Path)]


def test_a_built_path_matches_its_route_and_gives_its_fields_back():
    for path in all_paths():
        fields = {name: SAMPLE[name] for _, name, _, _ in string.Formatter().parse(path.template) if name}
        match = re.fullmatch(path.route, path(**fields))
        assert match, path
        assert match.groupdict() == {name: str(value) for name, value in fields.items()}, path


def test_fields_are_quoted_whole():
    assert api_paths.STREAM(video_id="a b/c") == "/videos/a%20b%2Fc/stream"


def test_every_path_is_routed():
    patterns = {pattern for pattern, _ in routes()}
    assert all(path.route in patterns for path in all_paths())
