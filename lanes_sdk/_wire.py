"""The lane key on the wire: names, validation and the baggage scan shared by every data plane.

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
    "MAX_LANE_LENGTH",
    "baggage_key_from_env",
    "header_from_env",
    "lane_from_baggage",
    "lane_from_headers",
    "valid_lane",
]

DEFAULT_HEADER = "x-lane"
DEFAULT_BAGGAGE_KEY = "lane"
DEFAULT_BASELINE = "baseline"
MAX_LANE_LENGTH = 63

# RFC 1123 DNS label. Built once; fullmatch on a <= 63 char string is a few hundred ns.
_LANE_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_OWS = " \t"


def valid_lane(value: object) -> str | None:
    """Return ``value`` as a lane name if it is one (surrounding OWS ignored), else ``None``."""
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


def _member_value(header: str, start: int) -> str | None:
    """Parse the value of the member whose value starts at ``start`` (just after '=')."""
    end = header.find(",", start)
    raw = header[start:] if end < 0 else header[start:end]
    # Member properties (";ttl=60") are not part of the lane. Values are percent-encoded in W3C
    # baggage; a lane never needs it, but a sender may still encode one.
    semi = raw.find(";")
    if semi >= 0:
        raw = raw[:semi]
    if "%" in raw:
        raw = unquote(raw)
    return valid_lane(raw)


def _scan(header: str, key: str) -> str | None:
    """First valid ``key`` member of one ``baggage`` field line, found with ``str.find``.

    Cost is linear in the header and allocation-free until a candidate member is found, so a
    10 KB header with hundreds of members costs microseconds, and W3C's own limits (8192 bytes,
    180 members) do not hide a lane that a data plane would route on.
    """
    klen = len(key)
    pos = header.find(key)
    while pos >= 0:
        # The key must start a member: at the start, or after ',' and optional whitespace.
        before = pos - 1
        while before >= 0 and header[before] in _OWS:
            before -= 1
        if before < 0 or header[before] == ",":
            after = pos + klen
            n = len(header)
            while after < n and header[after] in _OWS:
                after += 1
            if after < n and header[after] == "=":
                lane = _member_value(header, after + 1)
                if lane is not None:
                    return lane
        pos = header.find(key, pos + 1)
    return None


def lane_from_baggage(values: Iterable[str | bytes], key: str = DEFAULT_BAGGAGE_KEY) -> str | None:
    """The first valid ``key`` member across every ``baggage`` field line, in order."""
    for value in values:
        if isinstance(value, bytes | bytearray):
            try:
                value = value.decode("latin-1")
            except Exception:  # pragma: no cover - latin-1 decodes every byte
                continue
        if not isinstance(value, str) or key not in value:
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
