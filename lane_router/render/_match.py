"""Header matchers shared by the Istio, Envoy and Gateway API renderers.

Both Istio and Envoy match a regex against the *whole* value (RE2, no look-around). The baggage
regex therefore has to allow other members before and after, optional whitespace around ``=``,
member properties (``;ttl=60``) and must not accept a prefix (``lane=ab`` is not ``lane=a``).
Envoy matches repeated ``baggage`` field lines one at a time, older versions joined them with
``,``: the regex works both ways.
"""

from __future__ import annotations

import re

from lanes_sdk.wire import LANE_PATTERN

__all__ = ["VALID_LANE_REGEX", "baggage_regex", "baggage_regex_of"]

# design.md: a valid x-lane decides; an invalid or empty one is ignored. Data planes guard baggage
# routes with "x-lane does not hold a valid lane name". Envoy and Istio trim OWS from values.
VALID_LANE_REGEX = LANE_PATTERN

_OWS = r"[ \t]*"


def baggage_regex(key: str, lane: str) -> str:
    """RE2 full-match regex for a ``baggage`` value holding member ``key=lane``."""
    return baggage_regex_of(key, re.escape(lane))


def baggage_regex_of(key: str, lanes: str) -> str:
    """The same for a member whose value matches the RE2 pattern ``lanes`` (a group such as
    ``(?:a|b)``: several lanes in one regex)."""
    return rf"(?:.*,)?{_OWS}{re.escape(key)}{_OWS}={_OWS}{lanes}{_OWS}(?:;[^,]*)?(?:,.*)?"
