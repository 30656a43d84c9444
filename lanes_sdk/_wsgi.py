"""WSGI middleware (Flask, Django, any WSGI app) that attaches the incoming lane."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import context as _otel_context
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from lanes_sdk._propagator import LanePropagator
from lanes_sdk._server import baggage_context

__all__ = ["LaneWSGIMiddleware", "WSGIGetter"]

StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WSGIGetter(Getter[Mapping[str, Any]]):
    """Headers from a WSGI environ: ``x-lane`` is ``HTTP_X_LANE``. CGI joins repeated field
    lines with ``,`` into one value; the lane and baggage parsers read such lists."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


_GETTER = WSGIGetter()


class _InContext:
    """The app's response iterable, iterated and closed with the request's context attached:
    a streamed body (``stream_with_context``, generators) runs after the app returned."""

    __slots__ = ("_context", "_iterator", "_result")

    def __init__(self, result: Iterable[bytes], context: Context) -> None:
        self._result = result
        self._iterator: Iterator[bytes] | None = None
        self._context = context

    def __iter__(self) -> _InContext:
        return self

    def __next__(self) -> bytes:
        token = _otel_context.attach(self._context)
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            return next(self._iterator)
        finally:
            _otel_context.detach(token)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            token = _otel_context.attach(self._context)
            try:
                close()
            finally:
                _otel_context.detach(token)


class LaneWSGIMiddleware:
    """Wrap a WSGI app so its handlers run with the request's lane and baggage attached.

    Flask: ``app.wsgi_app = LaneWSGIMiddleware(app.wsgi_app)``; Django: wrap
    ``get_wsgi_application()``; any WSGI app: ``app = LaneWSGIMiddleware(app)``. Only baggage
    is extracted (never trace context), so it composes with the OpenTelemetry Flask/WSGI/Django
    instrumentations in any order, and routes they exclude from tracing still carry the lane.
    """

    def __init__(
        self, app: WSGIApp, *, header: str | None = None, baggage_key: str | None = None
    ) -> None:
        self.app = app
        self._propagator = (
            LanePropagator(header=header, baggage_key=baggage_key)
            if header is not None or baggage_key is not None
            else None
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        ctx = baggage_context(environ, _GETTER, self._propagator)
        token = _otel_context.attach(ctx)
        try:
            result = self.app(environ, start_response)
        finally:
            _otel_context.detach(token)
        if isinstance(result, list | tuple):
            return result  # already complete: nothing runs later
        return _InContext(result, ctx)
