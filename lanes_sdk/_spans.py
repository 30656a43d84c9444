"""``LaneSpanProcessor``: tag every span started inside a lane, so traces can be filtered by it."""

from __future__ import annotations

from opentelemetry import baggage as _baggage
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from lanes_sdk._context import BAGGAGE_KEY, lane_of

__all__ = ["LANE_ATTRIBUTE", "LaneSpanProcessor"]

LANE_ATTRIBUTE = "lane"


class LaneSpanProcessor(SpanProcessor):
    """Sets attribute ``lane`` on spans started while a valid lane is in the context.

    The parent context decides (a server span's parent is the extracted request context); the
    current context is the fallback for a parent that carries no baggage.
    """

    def __init__(self, *, baggage_key: str = BAGGAGE_KEY, attribute: str = LANE_ATTRIBUTE) -> None:
        self._key = baggage_key
        self._attribute = attribute

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        lane = lane_of(_baggage.get_baggage(self._key, parent_context))
        if lane is None and parent_context is not None:
            lane = lane_of(_baggage.get_baggage(self._key))
        if lane is not None:
            span.set_attribute(self._attribute, lane)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
