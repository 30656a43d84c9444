"""``instrument()``: one idempotent call that makes a service carry lanes.

Also ``LanesInstrumentor``, registered as ``opentelemetry_instrumentor`` entry point ``lanes``:
under ``opentelemetry-instrument`` it installs the lane middleware into every aiohttp
``web.Application`` and the span processor, with no change to the service's code.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
import weakref
from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from lanes_sdk._aiohttp import lane_middleware
from lanes_sdk._spans import LaneSpanProcessor

__all__ = ["LanesInstrumentor", "instrument", "uninstrument"]

_log = logging.getLogger("lanes_sdk")
_lock = threading.Lock()
_providers: weakref.WeakSet[Any] = weakref.WeakSet()
_state: dict[str, Any] = {}


def _add_span_processor(provider: Any) -> None:
    """Add one ``LaneSpanProcessor`` per SDK tracer provider (the API's no-op has no hook)."""
    if provider is None:
        provider = trace.get_tracer_provider()
    if not hasattr(provider, "add_span_processor") or provider in _providers:
        return
    provider.add_span_processor(LaneSpanProcessor())
    _providers.add(provider)


class LanesInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Lane middleware in every aiohttp application created from now on, plus the span tag.

    ``web.Application`` is replaced by a subclass that puts ``lane_middleware`` first in the
    application's own list (after OpenTelemetry's server middleware when that wraps it), copies
    the list (so a tuple works and the caller's list is not modified), and never adds it twice.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        from aiohttp import web

        base = web.Application
        with warnings.catch_warnings():
            # aiohttp discourages subclassing; OpenTelemetry's own instrumentation does the same.
            warnings.simplefilter("ignore", DeprecationWarning)

            class _LaneApplication(base):  # type: ignore[valid-type,misc]
                def __init__(self, *args: Any, middlewares: Any = (), **kw: Any) -> None:
                    middlewares = list(middlewares)
                    if lane_middleware not in middlewares:
                        middlewares.insert(0, lane_middleware)
                    super().__init__(*args, middlewares=middlewares, **kw)

        _LaneApplication.__qualname__ = _LaneApplication.__name__ = "Application"
        self._original_app = base
        self._patched_app = _LaneApplication
        web.Application = _LaneApplication  # type: ignore[misc]
        _add_span_processor(kwargs.get("tracer_provider"))

    def _uninstrument(self, **kwargs: Any) -> None:
        from aiohttp import web

        if web.Application is getattr(self, "_patched_app", None):
            web.Application = self._original_app  # type: ignore[misc]


def _set_textmap() -> None:
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagate import get_global_textmap, set_global_textmap
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from lanes_sdk._propagator import LanePropagator

    _state["previous_textmap"] = get_global_textmap()
    set_global_textmap(
        CompositePropagator(
            [TraceContextTextMapPropagator(), W3CBaggagePropagator(), LanePropagator()]
        )
    )


def instrument(*, tracer_provider: Any = None) -> None:
    """Make this process carry lanes; safe to call more than once.

    - global propagator ``tracecontext,baggage,lane``, unless ``OTEL_PROPAGATORS`` chose one;
    - aiohttp client and server instrumentation (client sessions and applications created
      afterwards are covered: call this before building them);
    - ``lane_middleware`` in every aiohttp application;
    - ``LaneSpanProcessor`` on the SDK tracer provider (``tracer_provider`` or the global one;
      set yours before calling this).
    """
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    with _lock:
        if "previous_textmap" not in _state:
            if "OTEL_PROPAGATORS" in os.environ:
                _state["previous_textmap"] = None
                if "lane" not in os.environ["OTEL_PROPAGATORS"].split(","):
                    _log.info("lanes: OTEL_PROPAGATORS has no 'lane': outgoing x-lane not written")
            else:
                _set_textmap()
        kwargs = {} if tracer_provider is None else {"tracer_provider": tracer_provider}
        ours: list[BaseInstrumentor] = _state.setdefault("instrumented", [])
        # Server before lanes: the lane subclass then wraps OpenTelemetry's application class.
        for instrumentor in (
            AioHttpClientInstrumentor(),
            AioHttpServerInstrumentor(),
            LanesInstrumentor(),
        ):
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(**kwargs)
                ours.append(instrumentor)
        _add_span_processor(tracer_provider)


def uninstrument() -> None:
    """Undo what ``instrument()`` did, newest first (for tests). The span processor stays: an
    SDK tracer provider cannot drop one, and it only tags spans."""
    from opentelemetry.propagate import set_global_textmap

    with _lock:
        ours: list[BaseInstrumentor] = _state.pop("instrumented", [])
        for instrumentor in reversed(ours):
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
        if "previous_textmap" in _state:
            previous = _state.pop("previous_textmap")
            if previous is not None:
                set_global_textmap(previous)
