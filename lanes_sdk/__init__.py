"""lanes_sdk: carry the lane of a request across every hop, on OpenTelemetry baggage.

One call, ``lanes_sdk.instrument()``, makes an aiohttp service carry lanes; the pieces are
public for other stacks: ``LanePropagator`` (``OTEL_PROPAGATORS=tracecontext,baggage,lane``),
``LaneASGIMiddleware``, ``LaneWSGIMiddleware``, ``LaneExecutor``/``wrap`` for threads,
``inject_lane``/``extract_lane`` for message headers, ``LaneSpanProcessor``.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

# The wire rules are pure and cheap: the sidecar and the renderers import them without paying for
# OpenTelemetry. Everything else loads on first use (PEP 562), so `lanes_sdk.wire` costs the
# sidecar no OpenTelemetry import, and the propagator entry point no instrumentation machinery.
from lanes_sdk.wire import (
    DEFAULT_BAGGAGE_KEY,
    DEFAULT_BASELINE,
    DEFAULT_HEADER,
    lane_from_baggage,
    lane_from_field,
    lane_from_headers,
    valid_lane,
)

if TYPE_CHECKING:
    from lanes_sdk._aiohttp import lane_middleware
    from lanes_sdk._asgi import LaneASGIMiddleware
    from lanes_sdk._context import LaneScope, current_lane, use_lane
    from lanes_sdk._instrument import LanesInstrumentor, instrument, uninstrument
    from lanes_sdk._messages import extract_lane, inject_lane
    from lanes_sdk._propagator import LanePropagator
    from lanes_sdk._spans import LANE_ATTRIBUTE, LaneSpanProcessor
    from lanes_sdk._textmap import LaneConfigError
    from lanes_sdk._threads import LaneExecutor, wrap
    from lanes_sdk._wsgi import LaneWSGIMiddleware

_LAZY = {
    "lane_middleware": "_aiohttp",
    "LaneASGIMiddleware": "_asgi",
    "LaneScope": "_context",
    "current_lane": "_context",
    "use_lane": "_context",
    "LanesInstrumentor": "_instrument",
    "LaneConfigError": "_textmap",
    "LaneWSGIMiddleware": "_wsgi",
    "instrument": "_instrument",
    "uninstrument": "_instrument",
    "extract_lane": "_messages",
    "inject_lane": "_messages",
    "LanePropagator": "_propagator",
    "LANE_ATTRIBUTE": "_spans",
    "LaneSpanProcessor": "_spans",
    "LaneExecutor": "_threads",
    "wrap": "_threads",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lanes_sdk' has no attribute {name!r}")
    value = getattr(import_module(f"lanes_sdk.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DEFAULT_BAGGAGE_KEY",
    "DEFAULT_BASELINE",
    "DEFAULT_HEADER",
    "LANE_ATTRIBUTE",
    "LaneASGIMiddleware",
    "LaneConfigError",
    "LaneExecutor",
    "LanePropagator",
    "LaneScope",
    "LaneSpanProcessor",
    "LaneWSGIMiddleware",
    "LanesInstrumentor",
    "current_lane",
    "extract_lane",
    "inject_lane",
    "instrument",
    "lane_from_baggage",
    "lane_from_field",
    "lane_from_headers",
    "lane_middleware",
    "uninstrument",
    "use_lane",
    "valid_lane",
    "wrap",
]
