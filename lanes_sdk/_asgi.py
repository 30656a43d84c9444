"""ASGI middleware (FastAPI, Starlette, any ASGI app) that attaches the incoming lane."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import context as _otel_context

from lanes_sdk._propagator import LanePropagator
from lanes_sdk._server import PairsGetter, baggage_context

__all__ = ["LaneASGIMiddleware"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_GETTER = PairsGetter()


class LaneASGIMiddleware:
    """Wrap an ASGI app so HTTP and WebSocket handlers run with the request's lane and baggage.

    FastAPI/Starlette: ``app.add_middleware(LaneASGIMiddleware)``; any ASGI app:
    ``app = LaneASGIMiddleware(app)``. Only baggage is extracted, so it composes with the
    OpenTelemetry ASGI instrumentation in either order without touching span parents.
    """

    def __init__(
        self, app: ASGIApp, *, header: str | None = None, baggage_key: str | None = None
    ) -> None:
        self.app = app
        self._propagator = (
            LanePropagator(header=header, baggage_key=baggage_key)
            if header is not None or baggage_key is not None
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        ctx = baggage_context(scope.get("headers") or (), _GETTER, self._propagator)
        token = _otel_context.attach(ctx)
        try:
            await self.app(scope, receive, send)
        finally:
            _otel_context.detach(token)
