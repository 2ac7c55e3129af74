"""constraints.txt pins every dependency setup.py names, and the installed versions are the pinned ones.

A dependency added to setup.py without re-running scripts/lock would install
at whatever version is newest on the day of a fresh install; this catches it.
"""

from __future__ import annotations

import os
import re
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pinned() -> dict[str, str]:
    pins = {}
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, version = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line).groups()
                pins[canonicalize_name(name)] = version
    return pins


def test_every_requirement_is_pinned_and_installed_at_its_pin():
    pins = pinned()
    requirements = [Requirement(r) for r in metadata.requires("binge-plus")]
    assert requirements
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in setup.py but not in constraints.txt: run scripts/lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} does not meet {requirement}"
        assert metadata.version(name) == pins[name], f"{name} {metadata.version(name)} installed, {pins[name]} pinned"
