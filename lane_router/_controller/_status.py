"""TrafficLane and TrafficCanary status: what is routed, whether it is live, and why not."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lane_router._controller._model import NamespaceModel

__all__ = ["canary_status", "lane_status", "status_patch"]


def _ts(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t is not None else "an unknown time"


def _condition(
    ctype: str,
    ok: bool,
    reason: str,
    message: str,
    old: Mapping[str, Any],
    now: datetime,
    generation: int,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    prev = next((c for c in old.get("conditions") or () if c.get("type") == ctype), None)
    since = prev["lastTransitionTime"] if prev and prev.get("status") == status else _ts(now)
    return {
        "type": ctype,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    }


def lane_status(
    obj: Mapping[str, Any],
    model: NamespaceModel,
    *,
    conflicts: Mapping[str, tuple[str, ...]],
    failed: set[str],
    now: datetime,
) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    generation = int(obj["metadata"].get("generation") or 0)
    old = obj.get("status") or {}
    info = model.lanes.get(name)
    topo = model.topology
    # Hosts whose routes differ for this lane: a conflict or failure there affects it.
    affected: set[str] = set()
    if info is not None and info.live and topo is not None:
        for svc, table in topo.routes.items():
            res = table.get(name)
            if res is not None and (res.strict_miss or res.serving != topo.baseline):
                affected.add(svc)
    lane_conflicts = sorted({c for h in affected for c in conflicts.get(h, ())})
    lane_failed = sorted(affected & failed)
    if info is None:
        ready = (False, "Pending", "not reconciled yet")
    elif info.expired:
        ready = (
            False,
            "Expired",
            f"the lane's ttl ran out at {_ts(info.expires_at)}; its routes are removed",
        )
    elif info.problem:
        ready = (False, "InvalidSpec", info.problem)
    elif lane_conflicts:
        ready = (
            False,
            "Conflict",
            "routes not applied for hosts owned by others: " + ", ".join(lane_conflicts),
        )
    elif lane_failed:
        ready = (False, "ApplyFailed", "retrying routes for: " + ", ".join(lane_failed))
    elif info.services:
        ready = (True, "Routed", "routes applied for " + ", ".join(info.services))
    else:
        ready = (
            True,
            "NoServices",
            "the lane deploys no available service yet; its requests go to the baseline",
        )
    conditions = [_condition("Ready", *ready, old, now, generation)]
    status: dict[str, Any] = {"observedGeneration": generation}
    if info is not None and info.expires_at is not None:
        status["expiresAt"] = _ts(info.expires_at)
        conditions.append(
            _condition(
                "Expired",
                info.expired,
                "TTLExpired" if info.expired else "TTLRunning",
                f"expires at {_ts(info.expires_at)}",
                old,
                now,
                generation,
            )
        )
    status["services"] = list(info.services) if info is not None else []
    if lane_conflicts:
        status["conflicts"] = lane_conflicts
    status["conditions"] = conditions
    return status


def canary_status(
    obj: Mapping[str, Any],
    model: NamespaceModel,
    *,
    conflicts: Mapping[str, tuple[str, ...]],
    failed: set[str],
    now: datetime,
) -> dict[str, Any]:
    """Ready=True only while the host's routes carry the canary; ``observedWeight`` with it."""
    name = obj["metadata"]["name"]
    generation = int(obj["metadata"].get("generation") or 0)
    old = obj.get("status") or {}
    info = model.canaries.get(name)
    host = info.service if info is not None else ""
    routed = False
    if info is None:
        ready = (False, "Pending", "not reconciled yet")
    elif not info.routed:
        ready = (False, info.reason, info.message)
    elif conflicts.get(host):
        ready = (
            False,
            "Conflict",
            f"routes not applied for {host}, owned by others: " + ", ".join(conflicts[host]),
        )
    elif host in failed:
        ready = (False, "ApplyFailed", f"retrying the routes of {host}")
    else:
        ready, routed = (True, info.reason, info.message), True
    status: dict[str, Any] = {"observedGeneration": generation}
    if routed and info is not None:
        status["observedWeight"] = info.weight
        status["matches"] = info.matches
    status["conditions"] = [_condition("Ready", *ready, old, now, generation)]
    return status


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch from ``old`` to ``new`` (None when equal); removed keys become null."""
    if dict(old) == dict(new):
        return None
    patch: dict[str, Any] = dict(new)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch
