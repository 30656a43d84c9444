"""What the routing core says a request must see, hop by hop.

Every expectation of the harness and of ``lanes demo`` comes from here, and this module decides
nothing itself: the entry lane is the wire rule (``lanes_sdk.wire``) and each hop is
``Topology.resolve``. A hop is ``(service, serving lane or None, status)``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from lane_router._topology import Topology
from lanes_sdk.wire import lane_from_headers

__all__ = ["CallGraph", "Hop", "entry_lane", "hops_of", "predict_path", "predict_reload_paths"]

Hop = tuple[str, str | None, int]
CallGraph = Mapping[str, Sequence[Sequence[str]]]

STRICT_MISS = 503


def entry_lane(topology: Topology, headers: Mapping[str, str]) -> str | None:
    """The lane a request with these headers carries (design.md's extract order). A multidict
    (``CIMultiDict``) may hold several ``baggage`` field lines."""
    xlane: list[str] = []
    baggage: list[str] = []
    for key, value in headers.items():
        name = key.lower()
        if name == topology.header:
            xlane.append(value)
        elif name == "baggage":
            baggage.append(value)
    return lane_from_headers(xlane, baggage, baggage_key=topology.baggage_key)


def predict_path(
    topology: Topology,
    calls: CallGraph,
    service: str,
    lane: str | None,
    *,
    down: Collection[tuple[str, str]] = (),
) -> list[Hop]:
    """The hops of a request of ``lane`` entering at ``service``, in the apps' report order.

    ``down`` lists (service, lane) versions that have no healthy endpoint: the request goes to
    the next candidate of the resolution, as every data plane must.
    """
    resolution = topology.resolve(service, lane)
    if resolution is None:
        raise KeyError(f"unknown service {service!r}")
    serving = next((c for c in resolution.candidates if (service, c) not in down), None)
    if serving is None:
        return [(service, None, STRICT_MISS)]
    path: list[Hop] = [(service, serving, 200)]
    for stage in calls.get(service, ()):
        for downstream in stage:
            path.extend(predict_path(topology, calls, downstream, lane, down=down))
    return path


def predict_reload_paths(
    old: Topology,
    new: Topology,
    calls: CallGraph,
    service: str,
    lane: str | None,
    *,
    switched: bool = False,
) -> set[tuple[Hop, ...]]:
    """Every path a request may take while a data plane swaps ``old`` for ``new``.

    Each hop is routed by the table live when it arrives, so a request in flight across the
    swap can mix them; but a hop routed by ``new`` only has ``new`` hops below it.
    """
    out: set[tuple[Hop, ...]] = set()
    for use_new in (True,) if switched else (False, True):
        resolution = (new if use_new else old).resolve(service, lane)
        if resolution is None:
            raise KeyError(f"unknown service {service!r}")
        if resolution.serving is None:
            out.add(((service, None, STRICT_MISS),))
            continue
        paths: list[tuple[Hop, ...]] = [((service, resolution.serving, 200),)]
        for stage in calls.get(service, ()):
            for downstream in stage:
                below = predict_reload_paths(old, new, calls, downstream, lane, switched=use_new)
                paths = [p + b for p in paths for b in below]
        out.update(paths)
    return out


def hops_of(payload: Any, *, service: str, status: int) -> list[Hop]:
    """The observed hops in an entry response (a data-plane error is one hop with no lane)."""
    hops = payload.get("hops") if status == 200 and isinstance(payload, dict) else None
    if not isinstance(hops, list):
        return [(service, None, status)]
    return [(h.get("service"), h.get("lane"), h.get("status")) for h in hops]
