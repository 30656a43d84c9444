"""``LanePropagator``: the lane as an OpenTelemetry ``TextMapPropagator``.

Registered as entry point ``lane`` in group ``opentelemetry_propagator``, so
``OTEL_PROPAGATORS=tracecontext,baggage,lane`` loads it. Put it after ``baggage``: it then
replaces whatever the W3C parser stored for the lane key with the bare validated name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import cast

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

from lanes_sdk._context import baggage_members, checked_lane, lane_of, with_lane
from lanes_sdk.wire import baggage_key_from_env, header_from_env, lane_from_baggage

__all__ = ["BAGGAGE_HEADER", "LanePropagator"]

_log = logging.getLogger("lanes_sdk")

BAGGAGE_HEADER = "baggage"
# RFC 9110 token; W3C baggage keys are tokens too.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _read(carrier: CarrierT, getter: Getter[CarrierT], name: str) -> Sequence[object] | None:
    """Every value of header ``name``. For a dict with the default getter, a str value is read
    directly: the same answer as ``DefaultGetter`` without its slow ABC isinstance check."""
    if getter is default_getter and type(carrier) is dict:
        value = cast("dict[str, object]", carrier).get(name)
        if value is None:
            return None
        if type(value) is str:
            return (value,)
    values = getter.get(carrier, name)
    if isinstance(values, str | bytes | bytearray):  # a getter that returns one value
        return (values,)
    return values


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
            lane = self._lane_in(carrier, getter)
        except Exception:  # a carrier or getter we cannot read is no lane, never an error
            _log.debug("lanes: unreadable carrier %s, no lane", type(carrier), exc_info=True)
            lane = None
        members = baggage_members(context)
        held = members.get(self._key)
        if lane is None:
            if held is None:
                return context
            lane = lane_of(held)
            if lane is None:
                _log.debug("lanes: dropping invalid baggage %s=%r", self._key, held)
                return _baggage.remove_baggage(self._key, context)
        if held == lane and (len(members) == 1 or next(iter(members)) == self._key):
            return context  # already the bare name, and first: nothing to do (the common case)
        return with_lane(lane, context, key=self._key)

    def _lane_in(self, carrier: CarrierT, getter: Getter[CarrierT]) -> str | None:
        """design.md's extract order, as ``lanes_sdk.wire.lane_from_headers``, reading the baggage
        only when the routing header holds no valid lane."""
        values = _read(carrier, getter, self._header)
        if values:
            for value in values:
                lane = checked_lane(value)
                if lane is not None:
                    return lane
        values = _read(carrier, getter, BAGGAGE_HEADER)
        return lane_from_baggage(cast("Sequence[str]", values), self._key) if values else None

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        value = baggage_members(context).get(self._key)
        if value is not None:
            lane = lane_of(value)
            if lane is not None:
                setter.set(carrier, self._header, lane)

    @property
    def fields(self) -> set[str]:
        return set(self._fields)
