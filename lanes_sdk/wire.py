"""The lane key on the wire (public: ``lanes_sdk.wire``): names, validation and the baggage scan
shared by every data plane.

Everything here is pure and never raises on input from the network: a value that is not a
valid lane is *no lane*. The sidecar, the propagator and the renderers' tests all read the
lane through these functions so that there is one definition of "the lane of a request".
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import unquote

__all__ = [
    "DEFAULT_BAGGAGE_KEY",
    "DEFAULT_BASELINE",
    "DEFAULT_HEADER",
    "LANE_PATTERN",
    "MAX_LANE_LENGTH",
    "baggage_key_from_env",
    "header_from_env",
    "lane_from_baggage",
    "lane_from_field",
    "lane_from_headers",
    "valid_lane",
]

DEFAULT_HEADER = "x-lane"
DEFAULT_BAGGAGE_KEY = "lane"
DEFAULT_BASELINE = "baseline"
MAX_LANE_LENGTH = 63

# A lane is an RFC 1123 DNS label: the one definition of that pattern (the router's renderers
# and checks use it too). Built once; fullmatch on a <= 63 char string is a few hundred ns.
LANE_PATTERN = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_LANE_RE = re.compile(LANE_PATTERN)
_OWS = " \t"
_MISS = object()


def valid_lane(value: object) -> str | None:
    """Return ``value`` as a lane name if it is one (surrounding OWS ignored), else ``None``."""
    if type(value) is str:  # the hot path: one type check, one strip, one C-level match
        if len(value) > MAX_LANE_LENGTH + 16:
            return None
        value = value.strip(_OWS)
        return value if _LANE_RE.fullmatch(value) is not None else None
    if isinstance(value, bytes | bytearray):
        if len(value) > MAX_LANE_LENGTH + 16:
            return None
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or len(value) > MAX_LANE_LENGTH + 16:
        return None
    value = value.strip(_OWS)
    if _LANE_RE.fullmatch(value) is None:
        return None
    return value


# A joined field line is read up to this many list members: enough for any repeated header a
# real client sends, and a bounded cost for a hostile line of commas.
MAX_JOINED_MEMBERS = 16


def lane_from_field(value: object) -> str | None:
    """The lane of one routing-header field line: ``valid_lane(value)``, else the first valid
    member of it read as a comma-separated list.

    WSGI/CGI (and some proxies, RFC 9110 section 5.3) join repeated field lines with ``,``;
    ``x-lane: a`` sent twice then arrives as ``a,a`` (Werkzeug) or ``a, a``. The data planes
    read each line on its own and take the first valid one, so the joined form must too.
    """
    lane = valid_lane(value)
    if lane is not None:
        return lane
    if isinstance(value, bytes | bytearray):
        value = value.decode("latin-1")
    if type(value) is not str or "," not in value:
        return None
    for part in value.split(",", MAX_JOINED_MEMBERS)[:MAX_JOINED_MEMBERS]:
        lane = valid_lane(part)
        if lane is not None:
            return lane
    return None


_MEMBER_RES: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {}


def _member_res(key: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Patterns for a ``key`` member at the start of the line and after a ``,`` (OWS allowed
    around the key and ``=``); group 1 is the value up to the next ``,``."""
    patterns = _MEMBER_RES.get(key)
    if patterns is None:
        tail = r"[ \t]*" + re.escape(key) + r"[ \t]*=([^,]*)"
        patterns = (re.compile(tail), re.compile("," + tail))
        if len(_MEMBER_RES) < 64:
            _MEMBER_RES[key] = patterns
    return patterns


# Member values seen so far -> lane: a handful of lanes in practice, so one dict lookup instead
# of slicing, decoding and matching. Short values only, bounded size: hostile input cannot grow it.
_MEMBER_CACHE: dict[str, str | None] = {}


def _member_lane(raw: str) -> str | None:
    lane = _MEMBER_CACHE.get(raw, _MISS)
    if lane is not _MISS:
        return lane  # type: ignore[return-value]
    value = raw
    # Member properties (";ttl=60") are not part of the lane. Values are percent-encoded in W3C
    # baggage; a lane never needs it, but a sender may still encode one.
    semi = value.find(";")
    if semi >= 0:
        value = value[:semi]
    if "%" in value:
        value = unquote(value)
    lane = valid_lane(value)
    if len(raw) <= 2 * MAX_LANE_LENGTH:
        if len(_MEMBER_CACHE) >= 512:
            _MEMBER_CACHE.clear()
        _MEMBER_CACHE[raw] = lane
    return lane


def _scan(header: str, key: str) -> str | None:
    """First valid ``key`` member of one ``baggage`` field line.

    Two compiled patterns searched in C: linear in the header, and a Python step only per
    member that has the key. A 10 KB header with hundreds of members costs microseconds, and
    W3C's own limits (8192 bytes, 180 members) do not hide a lane a data plane would route on.
    """
    first, following = _member_res(key)
    match = first.match(header)
    if match is None:
        match = following.search(header)
    while match is not None:
        lane = _member_lane(match.group(1))
        if lane is not None:
            return lane
        match = following.search(header, match.end())  # the value stops at the next ','
    return None


def lane_from_baggage(values: Iterable[object], key: str = DEFAULT_BAGGAGE_KEY) -> str | None:
    """The first valid ``key`` member across every ``baggage`` field line, in order (str or
    bytes lines; anything else a carrier holds is skipped)."""
    for value in values:
        if type(value) is not str:  # the common case skips these checks
            if isinstance(value, bytes | bytearray):
                value = value.decode("latin-1")  # decodes every byte
            elif not isinstance(value, str):
                continue
        if key not in value:
            continue
        lane = _scan(value, key)
        if lane is not None:
            return lane
    return None


def lane_from_headers(
    header_values: Iterable[str | bytes],
    baggage_values: Iterable[str | bytes],
    *,
    baggage_key: str = DEFAULT_BAGGAGE_KEY,
) -> str | None:
    """design.md's extract order: a valid routing header wins, then the baggage member."""
    for value in header_values:
        lane = valid_lane(value)
        if lane is not None:
            return lane
    return lane_from_baggage(baggage_values, baggage_key)


def header_from_env() -> str:
    """The routing header name (``LANES_HEADER``), lower-cased as HTTP/2 and Envoy see it."""
    name = os.environ.get("LANES_HEADER", "").strip().lower()
    return name or DEFAULT_HEADER


def baggage_key_from_env() -> str:
    """The baggage member key (``LANES_BAGGAGE_KEY``)."""
    key = os.environ.get("LANES_BAGGAGE_KEY", "").strip()
    return key or DEFAULT_BAGGAGE_KEY
