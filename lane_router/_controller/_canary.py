"""TrafficCanary objects to :class:`~lane_router._topology.Canary` values, one per service.

Cluster facts are decided here (which object canaries a service, whether its version names a
TrafficLane); what a canary may say (weight, matches, regexes) is checked by the topology
module, through a one-service topology, so the rules stay in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lane_router._document import parse_canary
from lane_router._topology import Canary, Service, Topology, TopologyError

__all__ = [
    "DUPLICATE",
    "INVALID",
    "NOT_AVAILABLE",
    "NO_SERVICE",
    "ROUTED",
    "CanaryInfo",
    "CanaryPick",
    "pick_canaries",
]

# Ready reasons decided by the model (the status adds Conflict, ApplyFailed and Pending).
ROUTED = "Routed"
INVALID = "InvalidSpec"
DUPLICATE = "Duplicate"
NO_SERVICE = "ServiceNotFound"
NOT_AVAILABLE = "VersionNotAvailable"


@dataclass(frozen=True, slots=True)
class CanaryInfo:
    """What the status of one TrafficCanary reports."""

    name: str
    service: str
    version: str
    routed: bool
    reason: str
    message: str
    weight: int = 0
    matches: int = 0


@dataclass(frozen=True, slots=True)
class CanaryPick:
    name: str  # the TrafficCanary
    service: str
    canary: Canary


def _order(obj: Mapping[str, Any]) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return str(md.get("creationTimestamp") or ""), str(md.get("name") or "")


def _problems(canary: Canary, *, baseline: str, header: str) -> list[str]:
    """The topology's verdict on ``canary``, its keys as the TrafficCanary's (``spec.weight``)."""
    svc = Service("s", {baseline: (), canary.version: ()}, canary=canary)
    try:
        Topology.build(lanes=(), services=(svc,), baseline=baseline, header=header)
    except TopologyError as exc:
        prefix = "services.s.canary"
        found = ["spec" + p[len(prefix) :] for p in exc.problems if p.startswith(prefix)]
        return found or list(exc.problems)
    return []


def pick_canaries(
    objs: Iterable[Mapping[str, Any]], *, lane_names: set[str], baseline: str, header: str
) -> tuple[dict[str, CanaryPick], dict[str, CanaryInfo]]:
    """The canary of each service (the oldest TrafficCanary naming it wins, so a second one
    never disturbs a running rollout) and the infos of the objects that lost or are invalid."""
    picks: dict[str, CanaryPick] = {}
    infos: dict[str, CanaryInfo] = {}
    for obj in sorted(objs, key=_order):
        name = obj["metadata"]["name"]
        spec = obj.get("spec") or {}
        if not isinstance(spec, Mapping):
            infos[name] = CanaryInfo(name, "", "", False, INVALID, "spec: must be a mapping")
            continue
        service = spec.get("service")
        version = spec.get("version")
        problems: list[str] = []

        def fault(key: str, message: str, problems: list[str] = problems) -> None:
            problems.append(f"{key}: {message}")

        if not isinstance(service, str) or not service:
            fault("spec.service", "must name a Service of this namespace")
        canary = parse_canary(
            {k: spec[k] for k in ("version", "weight", "match") if k in spec}, "spec", fault
        )
        svc, ver = str(service or ""), str(version or "")
        if not problems and (version == baseline or version in lane_names):
            what = "the baseline" if version == baseline else "a TrafficLane"
            fault(
                "spec.version",
                f"{version!r} is {what}; a canary exposes a version no lane selects",
            )
        if not problems and canary is not None:
            problems.extend(_problems(canary, baseline=baseline, header=header))
        if problems or canary is None:
            infos[name] = CanaryInfo(name, svc, ver, False, INVALID, "; ".join(problems))
            continue
        first = picks.get(svc)
        if first is not None:
            infos[name] = CanaryInfo(
                name,
                svc,
                ver,
                False,
                DUPLICATE,
                f"TrafficCanary {first.name} (older) already canaries {svc}",
            )
            continue
        picks[svc] = CanaryPick(name, svc, canary)
    return picks, infos
