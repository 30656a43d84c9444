"""From cluster objects to a Topology: the controller's only input to the renderer.

Each namespace is its own tenant: its TrafficLanes, its Deployments' ``app``/``lane`` pod labels
and its Services make one topology. Nothing here decides where a request goes; that stays in
:mod:`lane_router._topology`. This module only decides which lanes and versions *exist*:

- a lane exists while its TrafficLane exists, is valid and has not expired (TTL);
- a lane whose fallback expired falls back to that lane's own fallback, so expiry never breaks
  another lane (an unknown or cyclic fallback is the user's error: that lane is left out and its
  status says why);
- a version exists when a Deployment's pods carry ``app: S`` and ``lane: L`` for a live lane L and
  a Service S exists; a lane's version counts once it has an available replica, so a route never
  points at a subset with no ready pod (the baseline always counts);
- a TrafficCanary of S adds its version (pods ``app: S``, ``lane: <version>``) under the same
  rule: no available replica, no canary (its status says why).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lane_router._controller._canary import (
    NO_SERVICE,
    NOT_AVAILABLE,
    ROUTED,
    CanaryInfo,
    CanaryPick,
    pick_canaries,
)
from lane_router._controller._plan import is_ours
from lane_router._topology import Lane, Service, Topology, TopologyError

__all__ = [
    "LaneInfo",
    "NamespaceModel",
    "build_namespace",
    "lane_expiry",
    "namespace_model",
    "parse_time",
    "parse_ttl",
    "pod_labels",
]

_TTL_RE = re.compile(r"([0-9]+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The CRD bounds spec.ttl to 32 characters; the code also caps the duration, so expiry dates stay
# in range (a ttl of 3000000d overflowed the date arithmetic and stopped every reconcile).
MAX_TTL = timedelta(days=365)
MAX_TTL_LENGTH = 32
_LANE_KEY_RE = re.compile(r"lanes\.([^.\s:(]+)")


def parse_ttl(text: Any) -> timedelta | None:
    """``90m``, ``36h``, ``7d``, ``1h30m`` up to :data:`MAX_TTL`; ``None`` for anything else."""
    if not isinstance(text, str) or not text or len(text) > MAX_TTL_LENGTH:
        return None
    pos, total = 0, 0
    for m in _TTL_RE.finditer(text):
        if m.start() != pos:
            return None
        total += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or total > MAX_TTL.total_seconds():
        return None
    return timedelta(seconds=total)


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def lane_expiry(obj: Mapping[str, Any]) -> datetime | None:
    """When the lane expires; None without a ttl. Raises ValueError for a ttl out of bounds."""
    text = (obj.get("spec") or {}).get("ttl")
    if text is None:
        return None
    ttl = parse_ttl(text)
    if ttl is None:
        raise ValueError(
            f"spec.ttl: {str(text)[:40]!r} is not a duration of at most {MAX_TTL.days}d "
            "(like 90m, 36h, 7d or 1h30m)"
        )
    created = parse_time(obj.get("metadata", {}).get("creationTimestamp"))
    return created + ttl if created is not None else None


def pod_labels(deployment: Mapping[str, Any]) -> Mapping[str, str]:
    """The labels the Deployment's pods carry (what a DestinationRule subset selects)."""
    spec = deployment.get("spec") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
    return labels if isinstance(labels, dict) else {}


@dataclass(frozen=True, slots=True)
class LaneInfo:
    """What the status of one TrafficLane reports."""

    name: str
    live: bool  # in the topology
    expired: bool = False
    expires_at: datetime | None = None
    problem: str | None = None  # why a lane that has not expired is left out
    services: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NamespaceModel:
    namespace: str
    topology: Topology | None  # None: no routable service in the namespace
    lanes: Mapping[str, LaneInfo] = field(default_factory=dict)
    next_expiry: datetime | None = None
    skipped: tuple[str, ...] = ()  # services left out, each with the reason
    canaries: Mapping[str, CanaryInfo] = field(default_factory=dict)  # by TrafficCanary name


def build_namespace(
    namespace: str,
    *,
    lanes: Iterable[Mapping[str, Any]],
    deployments: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
    now: datetime,
    baseline: str,
    header: str,
    baggage_key: str,
    app_label: str = "app",
    lane_label: str = "lane",
    canaries: Iterable[Mapping[str, Any]] = (),
) -> NamespaceModel:
    """The topology of one namespace and the status facts of its lanes and canaries."""
    declared: dict[str, Lane] = {}
    expired: dict[str, str | None] = {}  # expired lane -> its fallback
    infos: dict[str, LaneInfo] = {}
    next_expiry: datetime | None = None
    for obj in lanes:
        name = obj["metadata"]["name"]
        spec = obj.get("spec") or {}
        try:
            if not isinstance(spec, Mapping):
                raise ValueError("spec: must be a mapping")
            expires_at = lane_expiry(obj)
        except ValueError as exc:  # reported in this lane's status; the others go on
            infos[name] = LaneInfo(name, live=False, problem=str(exc))
            continue
        fallback = spec.get("fallback") or None
        if expires_at is not None and expires_at <= now:
            expired[name] = fallback
            infos[name] = LaneInfo(name, live=False, expired=True, expires_at=expires_at)
            continue
        if expires_at is not None and (next_expiry is None or expires_at < next_expiry):
            next_expiry = expires_at
        declared[name] = Lane(
            name,
            fallback,
            bool(spec.get("strict", False)),
            str(spec.get("description") or ""),
        )
        infos[name] = LaneInfo(name, live=True, expires_at=expires_at)

    # Skip expired lanes in fallback chains (bounded: a cycle of expired lanes ends at baseline).
    for name, decl in list(declared.items()):
        fb, hops = decl.fallback, 0
        while fb in expired and hops <= len(expired):
            fb, hops = expired[fb], hops + 1
        if fb in expired:
            fb = None
        if fb != decl.fallback:
            declared[name] = Lane(name, fb, decl.strict, decl.description)

    ports: dict[str, int] = {}
    for svc in services:
        port = _service_port(svc)
        if port is not None:
            ports[svc["metadata"]["name"]] = port
    picks, canary_infos = pick_canaries(
        canaries, lane_names=set(infos), baseline=baseline, header=header
    )
    wanted = {(p.service, p.canary.version) for p in picks.values()}
    available: set[tuple[str, str]] = set()
    versions: dict[str, set[str]] = {}
    for dep in deployments:
        labels = pod_labels(dep)
        app, lane = labels.get(app_label), labels.get(lane_label)
        if not isinstance(app, str) or not isinstance(lane, str) or app not in ports:
            continue
        if (app, lane) in wanted:
            if int((dep.get("status") or {}).get("availableReplicas") or 0) >= 1:
                available.add((app, lane))
            continue
        if lane != baseline:
            if lane not in declared:
                continue
            if int((dep.get("status") or {}).get("availableReplicas") or 0) < 1:
                continue
        versions.setdefault(app, set()).add(lane)
    skipped = tuple(
        sorted(f"{s}: no {baseline!r} version" for s, v in versions.items() if baseline not in v)
    )
    svc_objs = []
    for s, v in versions.items():
        if baseline not in v:
            continue
        pick = picks.get(s)
        if pick is not None and (s, pick.canary.version) in available:
            vs = {lane: () for lane in v} | {pick.canary.version: ()}
            svc_objs.append(Service(s, vs, ports[s], canary=pick.canary))
        else:
            svc_objs.append(Service(s, {lane: () for lane in v}, ports[s]))

    topology, dropped = _build(declared, svc_objs, baseline, header, baggage_key, namespace)
    for name, problem in dropped.items():
        infos[name] = LaneInfo(name, live=False, expires_at=infos[name].expires_at, problem=problem)
    if topology is not None:
        deployed: dict[str, list[str]] = {}
        for sname in topology.services:
            for lane in topology.lanes_of(sname):
                deployed.setdefault(lane, []).append(sname)
        for name, info in infos.items():
            if info.live:
                infos[name] = LaneInfo(
                    name, True, expires_at=info.expires_at, services=tuple(deployed.get(name, ()))
                )
    for pick in picks.values():
        canary_infos[pick.name] = _canary_info(
            pick, topology, ports, versions, baseline, (app_label, lane_label)
        )
    return NamespaceModel(
        namespace,
        topology,
        dict(sorted(infos.items())),
        next_expiry,
        skipped,
        dict(sorted(canary_infos.items())),
    )


def namespace_model(
    namespace: str,
    objects: Mapping[str, Iterable[Mapping[str, Any]]],
    *,
    now: datetime,
    baseline: str,
    header: str,
    baggage_key: str,
    app_label: str = "app",
    lane_label: str = "lane",
) -> NamespaceModel:
    """The model of one namespace from its objects by kind (``TrafficLane``, ``TrafficCanary``,
    ``Deployment``, ``Service``): what the controller routes, and what ``lanes ui --kube`` shows.
    Our own per-lane Services (sidecar data plane) are outputs, never routed services."""
    return build_namespace(
        namespace,
        lanes=objects.get("TrafficLane", ()),
        deployments=objects.get("Deployment", ()),
        services=[s for s in objects.get("Service", ()) if not is_ours(s)],
        canaries=objects.get("TrafficCanary", ()),
        now=now,
        baseline=baseline,
        header=header,
        baggage_key=baggage_key,
        app_label=app_label,
        lane_label=lane_label,
    )


def _canary_info(
    pick: CanaryPick,
    topology: Topology | None,
    ports: Mapping[str, int],
    versions: Mapping[str, set[str]],
    baseline: str,
    labels: tuple[str, str],
) -> CanaryInfo:
    c = pick.canary
    svc = topology.services.get(pick.service) if topology is not None else None
    if svc is not None and svc.canary == c:
        n = len(c.matches)
        share = f"{c.weight}% of the rest" if n else f"{c.weight}%"
        which = f"those matching any of {n} content match(es), then {share}" if n else share
        message = f"baseline requests of {pick.service} to {c.version}: {which}"
        return CanaryInfo(pick.name, pick.service, c.version, True, ROUTED, message, c.weight, n)
    if pick.service not in ports:
        why = f"no Service {pick.service} in this namespace"
        return CanaryInfo(pick.name, pick.service, c.version, False, NO_SERVICE, why)
    if baseline not in versions.get(pick.service, ()):
        why = f"Service {pick.service} has no {baseline!r} Deployment, so it is not routed"
        return CanaryInfo(pick.name, pick.service, c.version, False, NO_SERVICE, why)
    why = (
        f"no Deployment with pods {labels[0]}={pick.service}, {labels[1]}={c.version} "
        "has an available replica; its requests stay on the baseline"
    )
    return CanaryInfo(pick.name, pick.service, c.version, False, NOT_AVAILABLE, why)


def _build(
    declared: dict[str, Lane],
    services: list[Service],
    baseline: str,
    header: str,
    baggage_key: str,
    namespace: str,
) -> tuple[Topology | None, dict[str, str]]:
    """Build, leaving out each lane the topology refuses (and the versions of it)."""
    dropped: dict[str, str] = {}
    lanes = dict(declared)
    for _ in range(len(declared) + 1):
        live = [
            Service(
                s.name,
                {k: v for k, v in s.versions.items() if k not in dropped},
                s.port,
                canary=s.canary,
            )
            for s in services
        ]
        try:
            topo = Topology.build(
                lanes=lanes.values(),
                services=live,
                baseline=baseline,
                header=header,
                baggage_key=baggage_key,
                namespace=namespace,
            )
        except TopologyError as exc:
            bad = {}
            for problem in exc.problems:
                m = _LANE_KEY_RE.match(problem)
                if m and m.group(1) in lanes:
                    bad[m.group(1)] = problem
                _, cycle, members = problem.partition("fallback cycle ")
                for name in members.split(" -> ") if cycle else ():
                    if name in lanes:  # every member of a cycle, not just the first named
                        bad[name] = f"lanes.{name}.fallback: fallback cycle {members}"
            if not bad:
                raise
            for name, problem in bad.items():
                dropped[name] = problem
                del lanes[name]
            continue
        return (topo if topo.services else None), dropped
    raise AssertionError("unreachable: every round drops a lane")  # pragma: no cover


def _service_port(svc: Mapping[str, Any]) -> int | None:
    ports = (svc.get("spec") or {}).get("ports") or []
    for p in ports:
        port = p.get("port") if isinstance(p, dict) else None
        if isinstance(port, int) and 0 < port < 65536:
            return port
    return None
