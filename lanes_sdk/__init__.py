"""lanes_sdk: carry the lane of a request across every hop, on OpenTelemetry baggage.

One call, ``lanes_sdk.instrument()``, makes an aiohttp service carry lanes; the pieces are
public for other stacks: ``LanePropagator`` (``OTEL_PROPAGATORS=tracecontext,baggage,lane``),
``LaneASGIMiddleware``, ``LaneExecutor``/``wrap`` for threads, ``inject_lane``/``extract_lane``
for message headers, ``LaneSpanProcessor``.
"""

from typing import TYPE_CHECKING, Any

from lanes_sdk._aiohttp import lane_middleware
from lanes_sdk._asgi import LaneASGIMiddleware
from lanes_sdk._context import LaneScope, current_lane, use_lane
from lanes_sdk._messages import extract_lane, inject_lane
from lanes_sdk._propagator import LanePropagator
from lanes_sdk._spans import LANE_ATTRIBUTE, LaneSpanProcessor
from lanes_sdk._threads import LaneExecutor, wrap
from lanes_sdk._wire import (
    DEFAULT_BAGGAGE_KEY,
    DEFAULT_BASELINE,
    DEFAULT_HEADER,
    lane_from_baggage,
    lane_from_headers,
    valid_lane,
)

if TYPE_CHECKING:
    from lanes_sdk._instrument import LanesInstrumentor, instrument, uninstrument

# The instrumentation machinery costs ~50 ms to import; the propagator entry point (loaded by
# every process with OTEL_PROPAGATORS=...,lane) must not pay for it.
_LAZY = {"LanesInstrumentor", "instrument", "uninstrument"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from lanes_sdk import _instrument

        return getattr(_instrument, name)
    raise AttributeError(f"module 'lanes_sdk' has no attribute {name!r}")


__all__ = [
    "DEFAULT_BAGGAGE_KEY",
    "DEFAULT_BASELINE",
    "DEFAULT_HEADER",
    "LANE_ATTRIBUTE",
    "LaneASGIMiddleware",
    "LaneExecutor",
    "LanePropagator",
    "LaneScope",
    "LaneSpanProcessor",
    "LanesInstrumentor",
    "current_lane",
    "extract_lane",
    "inject_lane",
    "instrument",
    "lane_from_baggage",
    "lane_from_headers",
    "lane_middleware",
    "uninstrument",
    "use_lane",
    "valid_lane",
    "wrap",
]
