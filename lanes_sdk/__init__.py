"""lanes_sdk: carry the lane of a request across every hop, on OpenTelemetry baggage."""

from lanes_sdk._wire import (
    DEFAULT_BAGGAGE_KEY,
    DEFAULT_BASELINE,
    DEFAULT_HEADER,
    lane_from_baggage,
    lane_from_headers,
    valid_lane,
)

__all__ = [
    "DEFAULT_BAGGAGE_KEY",
    "DEFAULT_BASELINE",
    "DEFAULT_HEADER",
    "lane_from_baggage",
    "lane_from_headers",
    "valid_lane",
]
