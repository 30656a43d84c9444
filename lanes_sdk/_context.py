"""The lane of the current OpenTelemetry context: read it, and set it for a block of code.

The lane lives in OpenTelemetry baggage under the configured key, so it rides the same context
machinery as trace context: ``contextvars`` carry it across ``await`` and ``create_task``.
"""

from __future__ import annotations

from types import TracebackType

from opentelemetry import baggage as _baggage
from opentelemetry import context as _otel_context
from opentelemetry.context import Context, get_value, set_value

from lanes_sdk.wire import (
    MAX_LANE_LENGTH,
    baggage_key_from_env,
    header_from_env,
    lane_from_field,
    valid_lane,
)

_BAGGAGE_KEY: str | None
try:  # where baggage lives in a Context; private, so every use has a public-API fallback
    from opentelemetry.baggage import _BAGGAGE_KEY
except ImportError:  # pragma: no cover - depends on the OpenTelemetry release
    _BAGGAGE_KEY = None

__all__ = [
    "BAGGAGE_KEY",
    "HEADER",
    "LaneScope",
    "baggage_members",
    "checked_lane",
    "current_lane",
    "lane_of",
    "use_lane",
    "with_lane",
]

# Resolved once, at import: the hot paths (span start, inject) must not read os.environ.
HEADER: str = header_from_env()
BAGGAGE_KEY: str = baggage_key_from_env()

# Values seen so far -> their lane. Real systems run a handful of lanes, so after the first
# request a check is one dict lookup (40 ns instead of 400). Only short values are kept and the
# size is bounded, so hostile input cannot grow it.
_CACHE_MAX = 512
_CACHEABLE = MAX_LANE_LENGTH + 16
_STRICT: dict[str, str | None] = {}
_LENIENT: dict[str, str | None] = {}


def checked_lane(value: object) -> str | None:
    """``lane_from_field(value)`` (a valid lane, else the first one of a comma-joined line),
    memoised for short ``str`` values (the routing header)."""
    if type(value) is not str or len(value) > _CACHEABLE:
        return lane_from_field(value)
    try:
        return _STRICT[value]
    except KeyError:
        lane = lane_from_field(value)
        if len(_STRICT) >= _CACHE_MAX:
            _STRICT.clear()
        _STRICT[value] = lane
        return lane


def lane_of(value: object) -> str | None:
    """The lane a baggage value names, or ``None``; never raises.

    Lenient about ``;properties``: another propagator may have stored ``feature-b;ttl=60``
    verbatim, and properties are not part of the lane.
    """
    if type(value) is not str:
        return valid_lane(value)
    try:
        return _LENIENT[value]
    except KeyError:
        pass
    lane = valid_lane(value)
    if lane is None and ";" in value:
        lane = valid_lane(value.split(";", 1)[0])
    if len(value) <= _CACHEABLE:
        if len(_LENIENT) >= _CACHE_MAX:
            _LENIENT.clear()
        _LENIENT[value] = lane
    return lane


def baggage_members(context: Context | None = None) -> dict[str, object]:
    """The baggage of ``context`` as the dict OpenTelemetry keeps it. Read only, never mutate."""
    if _BAGGAGE_KEY is None:  # pragma: no cover
        return dict(_baggage.get_all(context))
    members = get_value(_BAGGAGE_KEY, context)
    return members if isinstance(members, dict) else {}


def current_lane(context: Context | None = None, *, baggage_key: str = BAGGAGE_KEY) -> str | None:
    """The validated lane of ``context`` (default: the current one), or ``None`` for baseline."""
    value = baggage_members(context).get(baggage_key)
    return None if value is None else lane_of(value)


def with_lane(lane: str, context: Context | None = None, *, key: str = BAGGAGE_KEY) -> Context:
    """``context`` with ``key=lane`` as the *first* baggage member.

    The W3C propagator writes at most 180 members and 8192 bytes and drops what follows, so a
    lane appended behind a large incoming baggage would vanish at the next hop.
    """
    members = baggage_members(context)
    if not members or _BAGGAGE_KEY is None:
        return _baggage.set_baggage(key, lane, context)
    first: dict[str, object] = {key: lane}
    for name, value in members.items():
        if name != key:
            first[name] = value
    return set_value(_BAGGAGE_KEY, first, context)


class LaneScope:
    """Sets the lane for a ``with`` or ``async with`` block and restores the previous one.

    Enter and exit happen in the same task (a token cannot be detached from another one), so an
    ``async with`` block is safe across ``await`` and the tasks it creates inherit the lane.
    """

    __slots__ = ("_baggage_key", "_lane", "_tokens")

    def __init__(self, lane: str | None, *, baggage_key: str = BAGGAGE_KEY) -> None:
        self._lane = lane
        self._baggage_key = baggage_key
        self._tokens: list[object] = []

    @property
    def lane(self) -> str | None:
        return self._lane

    def __enter__(self) -> str | None:
        if self._lane is None:
            ctx = _baggage.remove_baggage(self._baggage_key)
        else:
            ctx = with_lane(self._lane, key=self._baggage_key)
        self._tokens.append(_otel_context.attach(ctx))
        return self._lane

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _otel_context.detach(self._tokens.pop())  # type: ignore[arg-type]

    async def __aenter__(self) -> str | None:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def use_lane(name: str | None, *, baggage_key: str = BAGGAGE_KEY) -> LaneScope:
    """Run a block in lane ``name`` (``None``: no lane, i.e. baseline).

    An invalid name raises ``ValueError`` here, at the caller: it is a programming error, unlike
    a bad header from the network, which is silently *no lane*.
    """
    if name is None:
        return LaneScope(None, baggage_key=baggage_key)
    lane = valid_lane(name) if isinstance(name, str) else None
    if lane is None or lane != name:
        raise ValueError(
            f"invalid lane name {name!r}: expected an RFC 1123 label "
            "([a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters)"
        )
    return LaneScope(lane, baggage_key=baggage_key)
