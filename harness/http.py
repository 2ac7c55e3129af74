"""JSON over HTTP from a server on loopback, with Tornado's client on the caller's event loop."""

from __future__ import annotations

import ujson
from tornado.httpclient import AsyncHTTPClient, HTTPResponse


async def fetch_json(url: str, method: str = "GET", timeout: float = 10.0,
                     headers: dict[str, str] | None = None) -> tuple[int, object, HTTPResponse]:
    """Any answer at ``url``, an error's included: its status, its JSON body (None if empty), the response.

    A connection that fails or times out raises, as no answer came.
    """
    response = await AsyncHTTPClient().fetch(url, method=method, request_timeout=timeout, headers=headers,
                                             raise_error=False)
    return response.code, ujson.loads(response.body) if response.body else None, response


async def get_json(url: str, timeout: float = 10.0) -> object:
    """The JSON body of a successful answer at ``url``; an ``HTTPClientError`` for any other."""
    _, body, response = await fetch_json(url, timeout=timeout)
    response.rethrow()
    return body
