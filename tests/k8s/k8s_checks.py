"""Assertions over the API double's state and request log."""

from __future__ import annotations

from typing import Any

from kube_double import KubeDouble

from lane_router._controller._controller import Controller
from lane_router._controller._desired import desired_host
from lane_router._controller._model import build_namespace
from lane_router._controller._plan import is_ours

__all__ = ["converged", "expected", "routed_subsets", "settle", "violations"]


def routed_subsets(vs: dict[str, Any] | None) -> set[str]:
    if vs is None:
        return set()
    return {
        d["destination"]["subset"]
        for route in vs["spec"].get("http", [])
        for d in route.get("route", [])
    }


def subsets(dr: dict[str, Any] | None) -> set[str]:
    return {s["name"] for s in (dr or {}).get("spec", {}).get("subsets", [])}


def expected(double: KubeDouble, ns: str, *, export_to: list[str] | None = ["."]) -> dict:  # noqa: B006
    """host -> (DR spec, VS spec) that a correct controller leaves for the double's state."""
    from datetime import UTC, datetime

    model = build_namespace(
        ns,
        lanes=double.objects("TrafficLane", ns),
        deployments=double.objects("Deployment", ns),
        services=double.objects("Service", ns),
        canaries=double.objects("TrafficCanary", ns),
        now=datetime.now(UTC),
        baseline="baseline",
        header="x-lane",
        baggage_key="lane",
    )
    out = {}
    for host in model.topology.services if model.topology else ():
        dr, vs = desired_host(model.topology, host, lane_label="lane", export_to=export_to)
        out[host] = (dr["spec"], vs["spec"])
    return out


def converged(double: KubeDouble, ns: str, **kw: Any) -> bool:
    want = expected(double, ns, **kw)
    have = {}
    for kind, i in (("DestinationRule", 0), ("VirtualService", 1)):
        for obj in double.objects(kind, ns):
            if is_ours(obj):
                have.setdefault(obj["metadata"]["name"], [None, None])[i] = obj["spec"]
    return {h: tuple(v) for h, v in have.items()} == want


def settle(double: KubeDouble, ctl: Controller, timeout: float = 20.0) -> None:
    """Wait until the controller has seen everything the double holds and has nothing to do."""
    rv = double.rv
    double.wait_for(
        lambda: (
            ctl.idle()
            and all(
                i.resource_version.isdigit() and int(i.resource_version) >= rv
                for i in ctl.informers.values()
            )
        ),
        timeout,
        "the controller to settle",
    )


def violations(double: KubeDouble, ns: str) -> list[str]:
    """Replay every successful VS/DR write in order: a route must never name a subset that
    its DestinationRule lacks (make-before-break), in either direction."""
    drs: dict[str, set[str]] = {}
    vss: dict[str, set[str]] = {}
    out = []
    for e in double.writes():
        if e.namespace != ns:
            continue
        table = drs if e.kind == "DestinationRule" else vss
        if e.method == "DELETE":
            table.pop(e.name, None)
        else:
            table[e.name] = (subsets if e.kind == "DestinationRule" else routed_subsets)(e.body)
        missing = vss.get(e.name, set()) - drs.get(e.name, set())
        if e.name in vss and missing:
            out.append(
                f"after {e.method} {e.kind} {e.name}: routes to {sorted(missing)} "
                "with no such subset"
            )
    return out
