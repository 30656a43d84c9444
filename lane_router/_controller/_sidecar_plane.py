"""The sidecar data plane (``lanes controller --data-plane sidecar``): what to write for one
namespace, in a safe order. Pure: the namespace's topology and cluster objects in, actions out.

Per (service, version) a ClusterIP Service selecting ``app=<service>, lane=<version>``, named
and labelled by the Gateway API renderer's backend Services (the same code:
:func:`render_gateway_api_host`), with the routed Service's ports; and one ConfigMap holding the
``lanes.yaml`` the namespace's sidecars read, whose endpoints are those Services' DNS names
(``reviews-feature-a.shop.svc:9080``).

Make-before-break, as for Istio: new or changed Services first, then the ConfigMap that points
at them, then the Services it no longer names are deleted. A sidecar still on the old file (kubelet
refreshes ConfigMap volumes within about a minute) meets a deleted Service as NXDOMAIN, a dead
endpoint, and falls back along the lane's walk. A name held by a Service that is not ours is a
conflict: that version is left out of the file (its lane falls back) and the host reports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from lane_router._controller._plan import Action, is_ours
from lane_router._document import topology_to_dict
from lane_router._topology import Endpoint, Service, Topology
from lane_router.render import MANAGED_BY, render_gateway_api_host

__all__ = [
    "CONFIGMAP_KEY",
    "SERVICE_LABEL",
    "SidecarPlan",
    "desired_sidecar",
    "plan_sidecar",
]

CONFIGMAP_KEY = "lanes.yaml"
SERVICE_LABEL = "traffic-lanes.io/service"  # on every backend Service (the renderer's label)


@dataclass(frozen=True, slots=True)
class SidecarPlan:
    namespace: str
    actions: tuple[Action, ...] = ()
    conflicts: Mapping[str, tuple[str, ...]] | None = None  # host -> "Service ns/name", sorted
    configmap: Mapping[str, Any] | None = None  # the ConfigMap wanted (None: none)


def _ident(obj: Mapping[str, Any]) -> str:
    md = obj.get("metadata", {})
    return f"{obj.get('kind')} {md.get('namespace')}/{md.get('name')}"


def desired_sidecar(
    topology: Topology | None,
    namespace: str,
    *,
    services: Mapping[str, Mapping[str, Any]],
    app_label: str,
    lane_label: str,
    configmap_name: str,
    taken: Mapping[str, Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, tuple[str, ...]]]:
    """(backend Services, ConfigMap, conflicts by host). ``services``: the namespace's Services
    by name (their ports are copied); ``taken``: Services by name that are not ours."""
    if topology is None:
        return [], None, {}
    backends: list[dict[str, Any]] = []
    conflicts: dict[str, tuple[str, ...]] = {}
    routed: list[Service] = []
    for name, svc in topology.services.items():
        wanted = set(svc.versions)
        ports = (services.get(name, {}).get("spec") or {}).get("ports") or []
        rendered, _ = render_gateway_api_host(topology, name, lane_label=lane_label)
        versions: dict[str, tuple[Endpoint, ...]] = {}
        clashes: list[str] = []
        for backend in rendered:
            version = backend["metadata"]["labels"]["traffic-lanes.io/lane"]
            if version not in wanted:
                continue  # a strict lane's empty backend: the sidecar answers strict misses
            bname = backend["metadata"]["name"]
            if bname in taken:
                clashes.append(_ident(taken[bname]))
                continue
            spec = backend["spec"]
            spec["selector"] = {app_label: name, lane_label: version}
            if ports:
                # As the API server stores them (protocol and targetPort defaulted), so that
                # an unchanged Service compares equal and is not written again.
                spec["ports"] = [
                    {
                        **({"name": p["name"]} if "name" in p else {}),
                        "port": p["port"],
                        "protocol": p.get("protocol", "TCP"),
                        "targetPort": p.get("targetPort", p["port"]),
                    }
                    for p in ports
                ]
            backends.append(backend)
            versions[version] = (Endpoint(f"{bname}.{namespace}.svc", svc.port),)
        if clashes:
            conflicts[name] = tuple(sorted(clashes))
        if topology.baseline not in versions:
            continue  # its baseline Service is not ours to write: the service is not routed
        canary = svc.canary if svc.canary and svc.canary.version in versions else None
        routed.append(Service(name, versions, svc.port, svc.namespace, canary))
    routed_topology = Topology.build(
        lanes=topology.lanes.values(),
        services=routed,
        baseline=topology.baseline,
        header=topology.header,
        baggage_key=topology.baggage_key,
        namespace=namespace,
    )
    doc = topology_to_dict(routed_topology)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name,
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
        },
        "data": {CONFIGMAP_KEY: yaml.safe_dump(doc, sort_keys=True, default_flow_style=False)},
    }
    return backends, configmap, conflicts


def _same(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    if current is None:
        return False
    for key in ("spec", "data"):
        if key in desired:
            have, want = current.get(key) or {}, desired[key]
            if key == "spec":  # the API server adds clusterIP, type, ...: compare ours only
                have = {k: have.get(k) for k in want}
            if have != want:
                return False
    have_labels = current.get("metadata", {}).get("labels") or {}
    want_labels = desired.get("metadata", {}).get("labels") or {}
    return all(have_labels.get(k) == v for k, v in want_labels.items())


def _apply(obj: Mapping[str, Any], current: Mapping[str, Any] | None, step: str) -> Action:
    md = obj["metadata"]
    force = current is not None and is_ours(current)
    return Action("apply", obj["kind"], md["namespace"], md["name"], obj, force, step=step)


def _delete(obj: Mapping[str, Any], step: str) -> Action:
    md = obj["metadata"]
    rv = md.get("resourceVersion")
    return Action(
        "delete", obj["kind"], md["namespace"], md["name"], None, resource_version=rv, step=step
    )


def plan_sidecar(
    namespace: str,
    topology: Topology | None,
    *,
    services: Iterable[Mapping[str, Any]],
    current_configmap: Mapping[str, Any] | None,
    app_label: str,
    lane_label: str,
    configmap_name: str,
) -> SidecarPlan:
    """Actions for the namespace: Services, then the ConfigMap, then Service deletions."""
    by_name = {s["metadata"]["name"]: s for s in services}
    ours = {
        n: s
        for n, s in by_name.items()
        if is_ours(s) and SERVICE_LABEL in (s["metadata"].get("labels") or {})
    }
    taken = {n: s for n, s in by_name.items() if not is_ours(s)}
    if current_configmap is not None and not is_ours(current_configmap):
        hosts = topology.services if topology is not None else ()
        who = (_ident(current_configmap),)
        return SidecarPlan(namespace, (), {h: who for h in hosts})
    backends, configmap, conflicts = desired_sidecar(
        topology,
        namespace,
        services=by_name,
        app_label=app_label,
        lane_label=lane_label,
        configmap_name=configmap_name,
        taken=taken,
    )
    actions = [
        _apply(b, ours.get(b["metadata"]["name"]), "svc")
        for b in backends
        if not _same(ours.get(b["metadata"]["name"]), b)
    ]
    if configmap is None:
        if current_configmap is not None:
            actions.append(_delete(current_configmap, "cm-delete"))
    elif not _same(current_configmap, configmap):
        actions.append(_apply(configmap, current_configmap, "cm"))
    wanted = {b["metadata"]["name"] for b in backends}
    actions += [_delete(s, "svc-delete") for n, s in sorted(ours.items()) if n not in wanted]
    return SidecarPlan(namespace, tuple(actions), conflicts, configmap)
