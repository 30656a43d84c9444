"""The lane in message headers (Kafka, AMQP, anything with a header dict or pair list)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TypeVar

from lanes_sdk._context import BAGGAGE_KEY, HEADER, current_lane
from lanes_sdk._propagator import BAGGAGE_HEADER
from lanes_sdk.wire import lane_from_headers, valid_lane

__all__ = ["extract_lane", "inject_lane"]

_log = logging.getLogger("lanes.sdk")

H = TypeVar("H", bound="MutableMapping[Any, Any] | list[tuple[Any, Any]]")


def _name(name: object) -> str | None:
    if isinstance(name, str):
        return name.lower()
    if isinstance(name, bytes | bytearray):
        return name.decode("latin-1").lower()
    return None


def extract_lane(
    headers: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None,
    *,
    header: str = HEADER,
    baggage_key: str = BAGGAGE_KEY,
) -> str | None:
    """The lane of a message's headers (routing header first, then baggage), or ``None``.

    Accepts a dict or a list of ``(name, value)`` pairs, ``str`` or ``bytes`` names and values
    (aiokafka/confluent-kafka pairs, aio-pika/pika dicts); names match case-insensitively.
    Never raises: anything unreadable is no lane.
    """
    if not headers:
        return None
    try:
        items = headers.items() if isinstance(headers, Mapping) else headers
        routing: list[Any] = []
        baggage: list[Any] = []
        for name, value in items:
            lowered = _name(name)
            if lowered == header:
                routing.append(value)
            elif lowered == BAGGAGE_HEADER:
                baggage.append(value)
        return lane_from_headers(routing, baggage, baggage_key=baggage_key)
    except Exception:
        _log.debug("lanes: unreadable message headers, no lane", exc_info=True)
        return None


def inject_lane(headers: H, lane: str | None = None, *, header: str = HEADER) -> H:
    """Write the lane (default: the current one) into ``headers`` in place, and return them.

    A dict gets ``{header: "lane"}``; a pair list gets ``(header, b"lane")`` (Kafka clients
    want ``bytes`` values). Any existing routing header is replaced, whatever its case. With no
    lane the headers are left as they are. An invalid ``lane`` raises ``ValueError``.
    """
    if lane is None:
        lane = current_lane()
        if lane is None:
            return headers
    elif valid_lane(lane) != lane:
        raise ValueError(f"invalid lane name {lane!r}")
    if isinstance(headers, MutableMapping):
        for stale in [k for k in headers if _name(k) == header and k != header]:
            del headers[stale]
        headers[header] = lane
    elif isinstance(headers, list):
        headers[:] = [pair for pair in headers if _name(pair[0]) != header]
        headers.append((header, lane.encode("ascii")))
    else:
        raise TypeError(f"headers must be a dict or a list of pairs, not {type(headers).__name__}")
    return headers
