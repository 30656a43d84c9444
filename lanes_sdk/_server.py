"""Attach the incoming lane for a request handler: the part the server instrumentations miss.

The OpenTelemetry aiohttp server instrumentation uses the extracted context only as the server
span's parent and never attaches it, so the handler sees no baggage and the next hop loses the
lane (opentelemetry-python-contrib PR #2510). Attaching the *full* extract would fix baggage but
re-parent the handler's client spans onto the caller's span. So the handler gets the current
context (with the server span, if any) plus the baggage and lane extracted from the request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import cache
from typing import Any

from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, get_current
from opentelemetry.propagators.textmap import Getter

from lanes_sdk._propagator import LanePropagator

__all__ = ["MultiGetter", "PairsGetter", "baggage_context", "default_propagator"]

_log = logging.getLogger("lanes.sdk")
_W3C_BAGGAGE = W3CBaggagePropagator()


class MultiGetter(Getter[Any]):
    """Every field line of a header from a multidict (aiohttp, multidict, http.client)."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        values = carrier.getall(key, None)
        return list(values) if values else None

    def keys(self, carrier: Any) -> list[str]:
        return list(carrier.keys())


class PairsGetter(Getter[Iterable[tuple[Any, Any]]]):
    """Every field line of a header from ``(name, value)`` pairs, names compared lower-case.

    ASGI gives lower-case ``bytes`` names and ``bytes`` values; they are decoded as latin-1,
    which maps every byte, so validation sees exactly what was on the wire.
    """

    def get(self, carrier: Iterable[tuple[Any, Any]], key: str) -> list[str] | None:
        found = [
            value.decode("latin-1") if isinstance(value, bytes | bytearray) else value
            for name, value in carrier
            if _name(name) == key
        ]
        return found or None

    def keys(self, carrier: Iterable[tuple[Any, Any]]) -> list[str]:
        return [_name(name) for name, _ in carrier]


def _name(name: object) -> str:
    if isinstance(name, bytes | bytearray):
        return name.decode("latin-1").lower()
    return str(name).lower()


@cache
def default_propagator() -> LanePropagator:
    """The propagator the middlewares use: header and key from the environment."""
    return LanePropagator()


def baggage_context(
    carrier: Any,
    getter: Getter[Any],
    propagator: LanePropagator | None = None,
    context: Context | None = None,
) -> Context:
    """``context`` (default: current) plus the W3C baggage and the lane of ``carrier``.

    Trace context is deliberately not extracted: the current span stays the parent. Never
    raises; a carrier nothing can be read from yields ``context`` unchanged.
    """
    if context is None:
        context = get_current()
    try:
        context = _W3C_BAGGAGE.extract(carrier, context, getter)
    except Exception:  # the W3C parser must not turn a bad header into a 500
        _log.debug("lanes: unreadable baggage, ignored", exc_info=True)
    return (propagator or default_propagator()).extract(carrier, context, getter)
