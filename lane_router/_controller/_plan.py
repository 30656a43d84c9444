"""What to write for one host, in a safe order. Pure: cluster state in, actions out.

Make-before-break (Istio has no fallback between subsets, a route to a subset missing from every
DestinationRule answers 503 NC): when a lane version appears, the DestinationRule is first applied
with the union of the old and new subsets, then the VirtualService that routes to the new subset,
then the DestinationRule trimmed to what is wanted. When a version goes away the same three steps
run with the first one empty: the routes leave before the subset does. A host that is no longer
routed loses its VirtualService before its DestinationRule.

The controller only ever touches objects labelled ``app.kubernetes.io/managed-by: traffic-lanes``.
Any other object that is, or routes, the same host is a *conflict*: the host is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lane_router.render import MANAGED_BY_KEY, MANAGED_BY_VALUE

__all__ = [
    "Action",
    "HostPlan",
    "host_keys",
    "is_ours",
    "plan_host",
]


@dataclass(frozen=True, slots=True)
class Action:
    verb: str  # "apply" or "delete"
    kind: str  # "DestinationRule" or "VirtualService"
    namespace: str
    name: str
    body: Mapping[str, Any] | None = None  # the applied object
    force: bool = False  # apply: take over fields (only when the object is already ours)
    resource_version: str | None = None  # delete: precondition
    step: str = ""  # why, for logs and metrics: "dr-union", "vs", "dr", "vs-delete", ...


@dataclass(frozen=True, slots=True)
class HostPlan:
    namespace: str
    host: str
    actions: tuple[Action, ...] = ()
    conflicts: tuple[str, ...] = ()  # "VirtualService shop/reviews-by-hand", sorted


def is_ours(obj: Mapping[str, Any] | None) -> bool:
    labels = (obj or {}).get("metadata", {}).get("labels") or {}
    return labels.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE


def host_keys(obj: Mapping[str, Any]) -> set[str]:
    """Short names of the in-namespace services a VirtualService or DestinationRule addresses."""
    ns = obj.get("metadata", {}).get("namespace", "")
    spec = obj.get("spec") or {}
    names: Iterable[Any] = spec.get("hosts") or ()
    if obj.get("kind") == "DestinationRule":
        names = (spec.get("host"),)
    out = set()
    for h in names:
        if not isinstance(h, str):
            continue
        parts = h.split(".")
        local = len(parts) == 2 or parts[2:] in (["svc"], ["svc", "cluster", "local"])
        if len(parts) == 1 or (parts[1] == ns and local):
            out.add(parts[0])
    return out


def _same(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    if current is None or current.get("spec") != desired.get("spec"):
        return False
    have = current.get("metadata", {}).get("labels") or {}
    want = desired.get("metadata", {}).get("labels") or {}
    return all(have.get(k) == v for k, v in want.items())


def _subsets(dr: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return list((dr or {}).get("spec", {}).get("subsets") or [])


def _ident(obj: Mapping[str, Any]) -> str:
    md = obj.get("metadata", {})
    return f"{obj.get('kind')} {md.get('namespace')}/{md.get('name')}"


def plan_host(
    namespace: str,
    host: str,
    *,
    desired: tuple[Mapping[str, Any], Mapping[str, Any]] | None,
    current_dr: Mapping[str, Any] | None,
    current_vs: Mapping[str, Any] | None,
    others: Iterable[Mapping[str, Any]] = (),
) -> HostPlan:
    """Actions for ``host``. ``desired`` is (DestinationRule, VirtualService) or None (unrouted);
    ``current_*`` are the objects of the same names; ``others`` every other VS/DR addressing it."""
    conflicts = sorted(
        {_ident(o) for o in (current_dr, current_vs) if o is not None and not is_ours(o)}
        | {_ident(o) for o in others if not is_ours(o)}
    )
    if conflicts:
        return HostPlan(namespace, host, (), tuple(conflicts))
    actions: list[Action] = []
    if desired is None:
        for step, obj in (("vs-delete", current_vs), ("dr-delete", current_dr)):
            if obj is not None:
                md = obj["metadata"]
                actions.append(
                    Action(
                        "delete",
                        obj["kind"],
                        md["namespace"],
                        md["name"],
                        resource_version=md.get("resourceVersion"),
                        step=step,
                    )
                )
        return HostPlan(namespace, host, tuple(actions))

    dr, vs = desired
    want = _subsets(dr)
    want_names = {s.get("name") for s in want}
    old_extra = [s for s in _subsets(current_dr) if s.get("name") not in want_names]
    have_names = {s.get("name") for s in _subsets(current_dr)}
    adds = bool(want_names - have_names)
    vs_changes = not _same(current_vs, vs)
    if current_dr is not None and adds and old_extra and vs_changes:
        union = {**dr, "spec": {**dr["spec"], "subsets": [*want, *old_extra]}}
        actions.append(_apply(union, current_dr, "dr-union"))
        current_dr = union
    elif not _same(current_dr, dr) and (adds or current_dr is None):
        # Only additions (or a new host): the wanted DR is itself the union.
        actions.append(_apply(dr, current_dr, "dr"))
        current_dr = dr
    if vs_changes:
        actions.append(_apply(vs, current_vs, "vs"))
    if not _same(current_dr, dr):
        actions.append(_apply(dr, current_dr, "dr-trim"))
    return HostPlan(namespace, host, tuple(actions))


def _apply(obj: Mapping[str, Any], current: Mapping[str, Any] | None, step: str) -> Action:
    md = obj["metadata"]
    return Action(
        "apply",
        obj["kind"],
        md["namespace"],
        md["name"],
        body=obj,
        force=current is not None and is_ours(current),
        step=step,
    )
