"""``instrument()``: one idempotent call that makes a service carry lanes.

Also ``LanesInstrumentor``, registered as ``opentelemetry_instrumentor`` entry point ``lanes``
(and ``after_auto_instrumentation`` as ``opentelemetry_post_instrument`` entry point): under
``opentelemetry-instrument`` they make the propagator order-proof, install the lane middleware
into every aiohttp ``web.Application`` and the span processor, and warn about every imported
stack the lane cannot cross, with no change to the service's code.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
import weakref
from collections.abc import Collection
from types import ModuleType
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.propagate import get_global_textmap

from lanes_sdk._aiohttp import lane_middleware
from lanes_sdk._hooks import cancel_hooks, when_imported
from lanes_sdk._spans import LaneSpanProcessor
from lanes_sdk._stacks import cover, quiet_instrument
from lanes_sdk._textmap import LaneConfigError, order_proof

__all__ = [
    "LanesInstrumentor",
    "after_auto_instrumentation",
    "instrument",
    "uninstrument",
]

_log = logging.getLogger("lanes.sdk")
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
    """The lane in every process ``opentelemetry-instrument`` starts (entry point ``lanes``).

    Makes the global propagator order-proof (``lane`` last, probed), adds the span tag and,
    once every instrumentor has run (``opentelemetry_post_instrument`` entry point), puts
    ``lane_middleware`` first in every aiohttp application and warns about each imported
    framework or client no OpenTelemetry instrumentation covers.

    ``web.Application`` is replaced by a subclass that puts ``lane_middleware`` first in the
    application's own list (after OpenTelemetry's server middleware when that wraps it), copies
    the list (so a tuple works and the caller's list is not modified), and never adds it twice.
    aiohttp is patched only once the service imports ``aiohttp.web``.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        install = bool(kwargs.pop("lanes_install", False))
        origin = "lanes_sdk.instrument()" if install else "the lanes instrumentor"
        provider = kwargs.get("tracer_provider")
        _state.setdefault("previous_textmap", get_global_textmap())
        order_proof(origin)
        _add_span_processor(provider)
        if install:  # instrument(): the stacks now; zero-code: after every instrumentor ran
            _cover(install=True, kwargs={} if provider is None else {"tracer_provider": provider})

    def _uninstrument(self, **kwargs: Any) -> None:
        cancel_hooks()
        original = _state.pop("original_app", None)
        web = sys.modules.get("aiohttp.web")
        if original is not None and web is not None:
            setattr(web, "Application", original)  # noqa: B010


def _patch_aiohttp(web: ModuleType) -> None:
    """``web.Application`` becomes a subclass with ``lane_middleware`` first in its list."""
    base = web.Application
    if getattr(base, "_lanes_patched", False):
        return
    with warnings.catch_warnings():
        # aiohttp discourages subclassing; OpenTelemetry's own instrumentation does the same.
        warnings.simplefilter("ignore", DeprecationWarning)

        class _LaneApplication(base):  # type: ignore[valid-type,misc]
            _lanes_patched = True

            def __init__(self, *args: Any, middlewares: Any = (), **kw: Any) -> None:
                middlewares = list(middlewares)
                if lane_middleware not in middlewares:
                    middlewares.insert(0, lane_middleware)
                super().__init__(*args, middlewares=middlewares, **kw)

    _LaneApplication.__qualname__ = _LaneApplication.__name__ = "Application"
    _state["original_app"] = base
    setattr(web, "Application", _LaneApplication)  # noqa: B010


def _cover(*, install: bool, kwargs: dict[str, Any]) -> None:
    # The aiohttp patch is registered after the stacks: on import of aiohttp.web, OpenTelemetry's
    # server class comes first and the lane subclass wraps it.
    cover(install=install, kwargs=kwargs, done=_state.setdefault("instrumented", []))
    when_imported("aiohttp.web", _patch_aiohttp)


def after_auto_instrumentation() -> None:
    """``opentelemetry_post_instrument`` entry point: every instrumentor has run, so what is
    not instrumented now will not be; warn about it, and patch aiohttp."""
    if LanesInstrumentor().is_instrumented_by_opentelemetry:
        _cover(install=False, kwargs={})


def instrument(*, tracer_provider: Any = None) -> None:
    """Make this process carry lanes; safe to call more than once.

    - the global propagator made order-proof: ``lane`` last (added if missing, WARNING when
      the set-up chose otherwise), probed; ``LaneConfigError`` if it still cannot carry lanes;
    - the OpenTelemetry instrumentation of each framework and client the service imports (now
      or later: call this first and import the framework after), when installed; a WARNING
      naming the package when not, or when a module bound the framework's class before;
    - ``lane_middleware`` in every aiohttp application;
    - ``LaneSpanProcessor`` on the SDK tracer provider (``tracer_provider`` or the global one;
      set yours before calling this).
    """
    with _lock:
        kwargs: dict[str, Any] = {"lanes_install": True}
        if tracer_provider is not None:
            kwargs["tracer_provider"] = tracer_provider
        lanes = LanesInstrumentor()
        if not lanes.is_instrumented_by_opentelemetry:
            try:
                quiet_instrument(lanes, **kwargs)
            except LaneConfigError:
                _restore_textmap()
                raise
        else:
            order_proof("lanes_sdk.instrument()")
        _add_span_processor(tracer_provider)


def _restore_textmap() -> None:
    from opentelemetry.propagate import set_global_textmap

    previous = _state.pop("previous_textmap", None)
    if previous is not None:
        set_global_textmap(previous)


def uninstrument() -> None:
    """Undo what ``instrument()`` did, newest first (for tests). The span processor stays: an
    SDK tracer provider cannot drop one, and it only tags spans."""
    with _lock:
        lanes = LanesInstrumentor()
        if lanes.is_instrumented_by_opentelemetry:
            lanes.uninstrument()
        cancel_hooks()
        ours: list[Any] = _state.pop("instrumented", [])
        for instrumentor in reversed(ours):
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
        original = _state.pop("original_app", None)
        web = sys.modules.get("aiohttp.web")
        if original is not None and web is not None and web.Application is not original:
            setattr(web, "Application", original)  # noqa: B010
        _restore_textmap()
