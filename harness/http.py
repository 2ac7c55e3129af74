"""JSON and metrics over HTTP from a server on loopback, with Tornado's client on the caller's event loop."""

from __future__ import annotations

import ujson
from prometheus_client.parser import text_string_to_metric_families
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


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels`` in a Prometheus text exposition."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


async def metric(base_url: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the server's ``/metrics`` now (see :func:`sample`)."""
    response = await AsyncHTTPClient().fetch(f"{base_url}/metrics", request_timeout=10.0)
    return sample(response.body.decode(), name, **labels)
