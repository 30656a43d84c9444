"""The JSON behind each page: the topology's routing answers joined with live figures.

Pure functions of (topology, figures), so the pages, the tests and any other client read the
same numbers. Routing comes from the public ``lane_router`` semantics (``Topology.resolve``),
never recomputed here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from lane_router import Topology
from lane_router.ui._figures import Figures, Row

__all__ = ["CLIENT", "canary_view", "graph_view", "map_view", "trace_link"]

CLIENT = "(client)"  # the caller of a request counted by a sidecar with no --service


def trace_link(template: str | None, lane: str, service: str = "") -> str | None:
    """The tracing UI's address for a lane's spans: ``{lane}`` and ``{service}`` are filled in,
    URL-quoted (spans carry the ``lane`` attribute)."""
    if not template:
        return None
    return template.replace("{lane}", quote(lane, safe="")).replace(
        "{service}", quote(service, safe="")
    )


def _share(base: float, canary: float) -> float | None:
    """The canary's percentage of both; None before any request."""
    return 100.0 * canary / (base + canary) if base + canary > 0 else None


def _sum(rows: Iterable[Row]) -> dict[str, float | None]:
    total, rate, errors, p99 = 0.0, None, None, None
    for r in rows:
        total += r.total
        if r.rate is not None:
            rate = (rate or 0.0) + r.rate
            errors = (errors or 0.0) + (r.errors or 0.0)
        if r.p99 is not None:
            p99 = r.p99 if p99 is None else max(p99, r.p99)
    ratio = errors / rate if rate and errors is not None else (0.0 if rate == 0 else None)
    return {"total": total, "rate": rate, "errors": errors, "error_ratio": ratio, "p99": p99}


def _meta(figures: Figures, refresh: float) -> dict[str, Any]:
    return {
        "generated_at": figures.at,
        "origin": figures.origin,
        "problems": list(figures.problems),
        "refresh": refresh,
    }


def _lanes(
    topo: Topology, tracing: str | None, expires: Mapping[str, datetime] | None = None
) -> list[dict[str, Any]]:
    out = [
        {
            "name": topo.baseline,
            "baseline": True,
            "fallback": None,
            "strict": False,
            "description": "shared baseline: no lane, invalid or undeclared lanes",
            "chain": [topo.baseline],
            "trace_url": trace_link(tracing, topo.baseline),
            "expires_at": None,
            "expires_in": None,
        }
    ]
    now = datetime.now(UTC)
    for name, lane in topo.lanes.items():
        out.append(
            {
                "name": name,
                "baseline": False,
                "fallback": None if lane.strict else (lane.fallback or topo.baseline),
                "strict": lane.strict,
                "description": lane.description,
                "chain": list(topo.chains[name]),
                "trace_url": trace_link(tracing, name),
                **_expiry((expires or {}).get(name), now),
            }
        )
    return out


def _expiry(at: datetime | None, now: datetime) -> dict[str, Any]:
    if at is None:
        return {"expires_at": None, "expires_in": None}
    return {
        "expires_at": at.isoformat().replace("+00:00", "Z"),
        "expires_in": max(0.0, round((at - now).total_seconds(), 1)),
    }


def map_view(
    topo: Topology,
    figures: Figures,
    *,
    refresh: float,
    tracing: str | None = None,
    expires: Mapping[str, datetime] | None = None,
) -> dict[str, Any]:
    """The lane x service matrix: who serves each cell, and its live figures. ``expires``: per
    lane with a TTL, when it expires (the controller's TrafficLane expiry)."""
    cells: dict[str, dict[str, Any]] = {}
    for lane in topo.all_lanes:
        row: dict[str, Any] = {}
        for service in topo.services:
            res = topo.resolve(service, lane)
            assert res is not None
            live = [r for r in figures.rows if r.service == service and r.lane == lane]
            served: dict[str, float] = {}
            for r in live:
                served[r.served_by] = served.get(r.served_by, 0.0) + (r.rate or 0.0)
            cell: dict[str, Any] = {
                "serving": res.serving,
                "fallback": res.is_fallback,
                "strict_miss": res.strict_miss,
                "canary": None,
                "served_by": dict(sorted(served.items())),
                **_sum(live),
            }
            if res.canary is not None:
                cell["canary"] = {"version": res.canary.version, "weight": res.canary.weight}
            row[service] = cell
        cells[lane] = row
    return {
        "page": "map",
        "baseline": topo.baseline,
        "lanes": _lanes(topo, tracing, expires),
        "services": list(topo.services),
        "cells": cells,
        **_meta(figures, refresh),
    }


def _layers(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Column of each node: the longest call path reaching it (cycles cut), callers first;
    with a ``(client)`` node, it alone is column 0."""
    first = 1 if CLIENT in nodes else 0
    layer = {n: 0 if n == CLIENT else first for n in nodes}
    for _ in range(len(nodes)):
        changed = False
        for a, b in edges:
            if a != b and layer[b] < layer[a] + 1 <= len(nodes) + 1:
                layer[b] = layer[a] + 1
                changed = True
        if not changed:
            break
    return layer


def graph_view(
    topo: Topology, figures: Figures, lane: str, *, refresh: float, tracing: str | None = None
) -> dict[str, Any]:
    """One lane's call graph: services as nodes (its own versions marked), calls as edges."""
    rows = [r for r in figures.rows if r.lane == lane and r.service in topo.services]
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        src = r.source if r.source in topo.services else CLIENT
        groups.setdefault((src, r.service), []).append(r)
    names = list(topo.services)
    if any(src == CLIENT for src, _ in groups):
        names.insert(0, CLIENT)
    layer = _layers(names, list(groups))
    nodes = []
    for name in names:
        if name == CLIENT:
            nodes.append({"service": name, "client": True, "layer": layer[name]})
            continue
        res = topo.resolve(name, lane)
        assert res is not None
        served: dict[str, float] = {}
        for r in rows:
            if r.service == name:
                served[r.served_by] = served.get(r.served_by, 0.0) + (r.rate or 0.0)
        nodes.append(
            {
                "service": name,
                "client": False,
                "layer": layer[name],
                "serving": res.serving,
                "own": res.serving == lane and lane != topo.baseline,
                "fallback": res.is_fallback,
                "strict_miss": res.strict_miss,
                "served_by": dict(sorted(served.items())),
                "trace_url": trace_link(tracing, lane, name),
                **_sum(r for r in rows if r.service == name),
            }
        )
    edges = [
        {"from": src, "to": dst, **_sum(group)} for (src, dst), group in sorted(groups.items())
    ]
    return {
        "page": "graph",
        "lane": lane,
        "baseline": topo.baseline,
        "lanes": _lanes(topo, tracing),
        "nodes": nodes,
        "edges": edges,
        "trace_url": trace_link(tracing, lane),
        **_meta(figures, refresh),
    }


def canary_view(topo: Topology, figures: Figures, *, refresh: float) -> dict[str, Any]:
    """Per canaried service: configured weight, measured share, canary vs baseline figures."""
    canaries = []
    for name, svc in topo.services.items():
        if svc.canary is None:
            continue
        version = svc.canary.version
        rows = [r for r in figures.rows if r.service == name and r.lane == topo.baseline]
        base = _sum(r for r in rows if r.served_by == topo.baseline)
        can = _sum(r for r in rows if r.served_by == version)
        share = None
        if base["rate"] is not None and can["rate"] is not None and base["rate"] + can["rate"] > 0:
            share = 100.0 * can["rate"] / (base["rate"] + can["rate"])
        canaries.append(
            {
                "service": name,
                "version": version,
                "weight": svc.canary.weight,
                "matches": len(svc.canary.matches),
                "share": share,
                "share_total": _share(base["total"] or 0.0, can["total"] or 0.0),
                "baseline": base,
                "canary": can,
            }
        )
    return {
        "page": "canary",
        "baseline": topo.baseline,
        "canaries": canaries,
        **_meta(figures, refresh),
    }
