"""The aiohttp server middleware that attaches the incoming lane (and baggage) for the handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from opentelemetry import context as _otel_context

from lanes_sdk._server import MultiGetter, baggage_context

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["lane_middleware"]

_GETTER = MultiGetter()


async def lane_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp middleware: the handler runs with the request's lane and baggage attached.

    Works with or without the OpenTelemetry aiohttp server instrumentation, in any position: it
    extracts baggage only, so the server span (if any) stays the parent of outgoing calls.
    """
    token = _otel_context.attach(baggage_context(request.headers, _GETTER))
    try:
        return await handler(request)
    finally:
        _otel_context.detach(token)


# What ``aiohttp.web.middleware`` sets; done by hand so importing lanes_sdk does not import aiohttp.
lane_middleware.__middleware_version__ = 1  # type: ignore[attr-defined]
