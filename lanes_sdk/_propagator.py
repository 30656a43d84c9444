"""``LanePropagator``: the lane as an OpenTelemetry ``TextMapPropagator``.

Registered as entry point ``lane`` in group ``opentelemetry_propagator``, so
``OTEL_PROPAGATORS=tracecontext,baggage,lane`` loads it. Put it after ``baggage``: it then
replaces whatever the W3C parser stored for the lane key with the bare validated name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from opentelemetry import baggage as _baggage
from opentelemetry.context import Context, get_current
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from lanes_sdk import _context
from lanes_sdk._wire import baggage_key_from_env, header_from_env, lane_from_headers

__all__ = ["BAGGAGE_HEADER", "LanePropagator"]

_log = logging.getLogger("lanes_sdk")

BAGGAGE_HEADER = "baggage"
# RFC 9110 token; W3C baggage keys are tokens too.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _values(getter: Getter[CarrierT], carrier: CarrierT, name: str) -> Iterator[object]:
    """The field lines of ``name``, read only when the extract order gets that far."""
    values = getter.get(carrier, name)
    if not values:
        return
    if isinstance(values, str | bytes | bytearray):  # a getter that returns one value
        yield values
    else:
        yield from values


class LanePropagator(TextMapPropagator):
    """Extracts the lane (routing header, else baggage member) and injects the routing header.

    Extract never raises: an unreadable carrier or a bad value is *no lane*, and an invalid
    value another propagator stored under the lane key is removed so it is never forwarded.
    Inject writes only the routing header: a partial ``baggage`` header would overwrite the
    one the W3C baggage propagator writes with every member.
    """

    def __init__(self, *, header: str | None = None, baggage_key: str | None = None) -> None:
        header = (header if header is not None else header_from_env()).strip().lower()
        key = (baggage_key if baggage_key is not None else baggage_key_from_env()).strip()
        for what, value in (("header", header), ("baggage_key", key)):
            if _TOKEN_RE.fullmatch(value) is None:
                raise ValueError(f"LanePropagator {what} must be an HTTP token, got {value!r}")
        self._header = header
        self._key = key
        self._fields = frozenset((header,))

    @property
    def header(self) -> str:
        return self._header

    @property
    def baggage_key(self) -> str:
        return self._key

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        if context is None:
            context = get_current()
        try:
            lane = lane_from_headers(
                _values(getter, carrier, self._header),  # type: ignore[arg-type]
                _values(getter, carrier, BAGGAGE_HEADER),  # type: ignore[arg-type]
                baggage_key=self._key,
            )
        except Exception:  # a carrier or getter we cannot read is no lane, never an error
            _log.debug("lanes: unreadable carrier %s, no lane", type(carrier), exc_info=True)
            lane = None
        held = _baggage.get_baggage(self._key, context)
        if lane is None:
            if held is None:
                return context
            lane = _context.lane_of(held)
            if lane is None:
                _log.debug("lanes: dropping invalid baggage %s=%r", self._key, held)
                return _baggage.remove_baggage(self._key, context)
        if held == lane and next(iter(_baggage.get_all(context))) == self._key:
            return context  # already the bare name, and first: nothing to do (the common case)
        return _context.with_lane(lane, context, key=self._key)

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        lane = _context.lane_of(_baggage.get_baggage(self._key, context))
        if lane is not None:
            setter.set(carrier, self._header, lane)

    @property
    def fields(self) -> set[str]:
        return set(self._fields)
