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

from lanes_sdk._context import (
    _BAGGAGE_KEY,
    _LENIENT,
    _STRICT,
    baggage_members,
    checked_lane,
    lane_of,
    with_lane,
)
from lanes_sdk.wire import baggage_key_from_env, header_from_env, lane_from_baggage

__all__ = ["BAGGAGE_HEADER", "LanePropagator"]

_log = logging.getLogger("lanes.sdk")
_NO_MEMBERS: dict[str, object] = {}  # read only: the baggage of a context that has none
_MISS = object()
# Baggage lines seen so far -> their lane, per propagator: bounded in entries and line length,
# so hostile or per-request lines cost at most a miss and an insert, never unbounded memory.
_LINE_MEMO_CHARS = 256
_LINE_MEMO_SIZE = 256

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
        self._member = key + "="
        self._lines: dict[str, str | None] = {}
        # The str object extract() last left in the baggage as the valid bare lane. inject()
        # writes that very object (``is``: str is immutable) without checking it again, so a
        # hop's inject costs a lookup; any other value, or a race between threads, is checked.
        self._clean: str | None = None

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
        # One flat function: this runs on every hop, and each Python call costs ~0.05 us.
        if context is None:
            context = get_current()
        members = (
            context.get(_BAGGAGE_KEY, _NO_MEMBERS)
            if _BAGGAGE_KEY is not None
            else baggage_members(context)
        )
        if type(members) is not dict:
            members = baggage_members(context)
        held = members.get(self._key)
        try:
            if getter is default_getter and type(carrier) is dict:
                # A plain dict (type() is exact): mypy cannot narrow CarrierT, and cast() would
                # cost a call on the hot path.
                raw = carrier.get(self._header)  # type: ignore[attr-defined]
                lane = _STRICT.get(raw) if type(raw) is str else None  # memo of checked_lane
                if lane is None and type(raw) is str:
                    lane = checked_lane(raw)
                if lane is None:
                    if raw is not None and type(raw) is not str:
                        lane = self._lane_in(carrier, getter)
                    else:
                        raw = carrier.get(BAGGAGE_HEADER)  # type: ignore[attr-defined]
                        if type(raw) is str:
                            lane = self._from_baggage(raw, held)
                        elif raw is not None:
                            lane = self._lane_in(carrier, getter)
            else:
                lane = self._lane_in(carrier, getter)
        except Exception:  # a carrier or getter we cannot read is no lane, never an error
            _log.debug("lanes: unreadable carrier %s, no lane", type(carrier), exc_info=True)
            lane = None
        if lane is None:
            if held is None:
                return context
            lane = lane_of(held)
            if lane is None:
                _log.debug("lanes: dropping invalid baggage %s=%r", self._key, held)
                return _baggage.remove_baggage(self._key, context)
        if (
            held == lane
            and type(held) is str
            and (len(members) == 1 or next(iter(members)) == self._key)
        ):
            self._clean = held
            return context  # already the bare name, and first: nothing to do (the common case)
        if _BAGGAGE_KEY is None:  # pragma: no cover - depends on the OpenTelemetry release
            return with_lane(lane, context, key=self._key)
        # The bare lane as the *first* member (see with_lane), in one copy of the context.
        first = {self._key: lane, **members}
        first[self._key] = lane
        self._clean = lane
        return Context({**context, _BAGGAGE_KEY: first})

    def _from_baggage(self, raw: str, held: object) -> str | None:
        """``lane_from_baggage((raw,), key)``, memoised per line for short lines (services send
        the same few baggage lines again and again), else with a fast exact check when the lane
        the W3C propagator already parsed (``held``) is the one member of ``raw`` with the key:
        the key occurs once, as ``key=<lane>`` at a member boundary, then ``;``, ``,`` or the end.
        """
        memo = self._lines
        lane = memo.get(raw, _MISS)
        if lane is not _MISS:
            return lane  # type: ignore[return-value]
        lane = self._scan_baggage(raw, held)
        if len(raw) <= _LINE_MEMO_CHARS:
            if len(memo) >= _LINE_MEMO_SIZE:
                memo.clear()
            memo[raw] = lane
        return lane

    def _scan_baggage(self, raw: str, held: object) -> str | None:
        if type(held) is str and self._key in raw:
            lane = lane_of(held)
            if lane is not None and raw.count(self._key) == 1:
                member = self._member + lane
                i = raw.find(member)
                if i >= 0:
                    end = i + len(member)
                    if (end == len(raw) or raw[end] in ";,") and (
                        i == 0 or raw[:i].rstrip(" \t")[-1:] in ("", ",")
                    ):
                        return lane
        return lane_from_baggage((raw,), self._key)

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
        if context is None:
            context = get_current()
        members = (
            context.get(_BAGGAGE_KEY) if _BAGGAGE_KEY is not None else baggage_members(context)
        )
        if type(members) is not dict:
            if members is None:
                return  # no baggage, no lane
            members = baggage_members(context)
        value = members.get(self._key)
        if value is None:
            return
        lane = self._clean
        if value is not lane or lane is None:  # not the object extract() checked: check it
            lane = _LENIENT.get(value) if type(value) is str else None  # memo of lane_of
            if lane is None:
                lane = lane_of(value)
                if lane is None:
                    return
        if setter is default_setter and type(carrier) is dict:
            carrier[self._header] = lane  # type: ignore[index]
        else:
            setter.set(carrier, self._header, lane)

    @property
    def fields(self) -> set[str]:
        return set(self._fields)
