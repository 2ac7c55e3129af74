"""What a test needs from the machine (a browser, Java, namespaces, coturn) and what happens without it.

On a developer's machine a missing part skips the tests that need it; under
CI (env ``CI`` set) it fails them, since there it means a broken image or
set-up, and a skipped test that CI never runs proves nothing.
"""

from __future__ import annotations

import os

import pytest


def skip_or_fail(what: str, reason: str) -> None:
    """Skips the test (``what`` it is, ``reason`` it cannot run), or fails it under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} must run under CI: {reason}", pytrace=False)
    pytest.skip(reason)
