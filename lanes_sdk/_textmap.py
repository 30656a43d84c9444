"""Make the global propagator carry the lane whatever order it was configured in, or refuse.

In a ``CompositePropagator`` every extract sees what the earlier ones stored, and the W3C
baggage propagator overwrites the lane member with the raw header value (properties and all).
So ``lane`` must run after ``baggage``: ``order_proof()`` moves every ``LanePropagator`` of the
(flattened) composite to the end, or appends one. It then *probes* the result with the cases
the contract names (a valid ``x-lane`` against a disagreeing baggage member; baggage only, with
properties) and raises ``LaneConfigError`` if the lane still does not come out right, so a
set-up that cannot hold fails at start-up rather than at some hop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagate import get_global_textmap, set_global_textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from lanes_sdk._context import current_lane
from lanes_sdk._propagator import BAGGAGE_HEADER, LanePropagator

__all__ = ["FIX", "LaneConfigError", "order_proof", "probe"]

_log = logging.getLogger("lanes.sdk")

FIX = "OTEL_PROPAGATORS=tracecontext,baggage,lane"


class LaneConfigError(RuntimeError):
    """The process's propagators cannot carry the lane as the contract says."""


def _flat(textmap: TextMapPropagator) -> Iterator[TextMapPropagator]:
    inner = getattr(textmap, "_propagators", None) if type(textmap) is CompositePropagator else None
    if inner is None:
        yield textmap
        return
    for propagator in inner:
        yield from _flat(propagator)


def _is_default(parts: list[TextMapPropagator]) -> bool:
    """OpenTelemetry's own default (``tracecontext,baggage``), i.e. nobody chose one."""
    return [type(p) for p in parts] == [TraceContextTextMapPropagator, W3CBaggagePropagator]


def probe(textmap: TextMapPropagator, lane: LanePropagator) -> str | None:
    """What goes wrong with ``textmap`` for the lane, or ``None`` when the contract holds."""
    header, key = lane.header, lane.baggage_key
    cases = (
        ({header: "lanes-probe-a", BAGGAGE_HEADER: f"{key}=lanes-probe-b;p=1"}, "lanes-probe-a"),
        ({BAGGAGE_HEADER: f"k=v,{key}=lanes-probe-b;ttl=60"}, "lanes-probe-b"),
        ({BAGGAGE_HEADER: "k=v"}, None),
    )
    for carrier, want in cases:
        try:
            ctx = textmap.extract(carrier, Context())
            out: dict[str, str] = {}
            textmap.inject(out, ctx)
        except Exception as exc:
            return f"extract/inject raised {exc!r}"
        got = current_lane(ctx, baggage_key=key)
        if got != want:
            return f"headers {carrier} gave lane {got!r}, expected {want!r}"
        if out.get(header) != want:
            return f"headers {carrier} forwarded {header}: {out.get(header)!r}, expected {want!r}"
        if BAGGAGE_HEADER in out:
            members = [m.strip() for m in out[BAGGAGE_HEADER].split(",")]
            ours = [m for m in members if m.split("=", 1)[0].strip() == key]
            expected = [] if want is None else [f"{key}={want}"]
            if ours != expected:
                return f"headers {carrier} forwarded baggage {ours}, expected {expected}"
    return None


def order_proof(origin: str) -> None:
    """Make the global propagator carry the lane (``lane`` last), warn about what was wrong,
    and raise ``LaneConfigError`` when the result still breaks the contract."""
    current = get_global_textmap()
    parts = list(_flat(current))
    lanes = [p for p in parts if isinstance(p, LanePropagator)]
    env = os.environ.get("OTEL_PROPAGATORS")
    if lanes and parts[-1] is lanes[-1] and len(lanes) == 1:
        fixed = current
    else:
        lane = lanes[-1] if lanes else LanePropagator()
        others = [p for p in parts if not isinstance(p, LanePropagator)]
        fixed = CompositePropagator([*others, lane])
        if not lanes and env is None and _is_default(parts):
            pass  # OpenTelemetry's default: adding the lane is what instrument() is for
        elif not lanes:
            where = f"OTEL_PROPAGATORS={env}" if env is not None else "the global propagator"
            _log.warning(
                "lanes: %s has no 'lane': x-lane would be lost at the first hop; %s added it "
                "last. Fix the set-up: %s (lane last)",
                where,
                origin,
                FIX,
            )
        else:
            where = f"OTEL_PROPAGATORS={env}" if env is not None else "the global propagator"
            _log.warning(
                "lanes: %s puts 'lane' before other propagators: baggage would override x-lane "
                "and forward 'lane=NAME;props' percent-encoded; %s moved it last. Fix the "
                "set-up: %s (lane last)",
                where,
                origin,
                FIX,
            )
        set_global_textmap(fixed)
    problem = probe(fixed, lanes[-1] if lanes else _last_lane(fixed))
    if problem is not None:
        raise LaneConfigError(
            f"lanes: the global propagator cannot carry the lane ({problem}). "
            f"Use {FIX}, or CompositePropagator([..., W3CBaggagePropagator(), LanePropagator()])"
        )


def _last_lane(textmap: TextMapPropagator) -> LanePropagator:
    found = [p for p in _flat(textmap) if isinstance(p, LanePropagator)]
    return found[-1] if found else LanePropagator()
