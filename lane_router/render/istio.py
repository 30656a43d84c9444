"""Istio rendering: one DestinationRule and one VirtualService per service host.

Stable API (the Kubernetes controller calls it)::

    render_istio(topology, *, lane_label="lane", export_local=False, gateway=None,
                 external_hosts=(), entry_service=None) -> list[dict]
        Every object, in apply order: all DestinationRules, then all VirtualServices, then the
        ingress VirtualService (when ``gateway`` is given), so subsets exist before routes use
        them (make-before-break).
    render_istio_host(topology, service, *, lane_label="lane", export_to=None) -> (dr, vs)
        The DestinationRule and the mesh VirtualService of one host.
    render_istio_ingress(topology, service, *, gateway, hosts, export_to=None) -> dict
        A VirtualService bound to ingress ``gateway`` ("namespace/name") for ``hosts``, routing
        to ``service`` by lane.
    istio_http_routes(topology, service) -> list[dict]
        The ``http`` routes of a host (shared by the mesh and the ingress VirtualService).

Why the route order is what it is (design.md): Istio takes the first matching route, and a
valid ``x-lane`` must win over the baggage member. So every ``x-lane`` exact match comes first,
then every baggage-regex match, each guarded by ``withoutHeaders`` "x-lane holds a valid lane
name" (an invalid or empty ``x-lane`` is ignored, as the SDK and the sidecar do); strict misses
answer a JSON 503 ``directResponse``; the baseline subset is the catch-all, last. Every route,
the default included, names a subset, so untagged traffic never reaches a lane's pods.

Canaries (``Service.canary``) take baseline traffic only. With a canary, every declared lane
gets routes, those served by the baseline too, so that lane traffic is settled before the canary
routes: the lanes served by the baseline share one pair (``baseline-lanes-header`` after the
lanes' own ``x-lane`` routes, ``baseline-lanes-baggage`` after their baggage routes, the names as
a regex alternation: two routes per host instead of two per lane, which keeps 1,000 services x
100 lanes with canaries under a second); then one route whose ``match`` entries are the
canary's content matches (headers and ``uri``; OR between entries, AND inside) to the canary
subset, then the default route split by weight (baseline 100-w, canary w; a 0 or 100 weight
leaves one destination). The DestinationRule gets a subset for the canary version (label
``lane: <version>``).

Istio has no fallback between subsets (istio#41787): a lane routes to the version that serves it
(``Resolution.serving``); when that version has no ready pod, Istio answers 503 UH. The Envoy
renderer and the sidecar fall back along ``Resolution.candidates`` instead.

Limits of header matching (the SDK's extract is exact, a regex per lane is not): a ``baggage``
carrying two *different valid* lane members goes to the first lane in route order that matches
(sorted, with a canary the baseline-served lanes last), not the first member; a percent-encoded
lane value (``lane=feature%2Da``) is not matched. The baggage guard needs istiod's translation
of ``withoutHeaders`` (``invert_match`` with ``treat_missing_header_as_empty``), checked on a
real Envoy in ``tests/routing``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lane_router._topology import STRICT_MISS_STATUS, Canary, Topology
from lane_router.render._common import DNS_LABEL, DNS_NAME, MANAGED_BY, check_label_key, gc_paused
from lane_router.render._match import VALID_LANE_REGEX, baggage_regex, baggage_regex_of

__all__ = [
    "API_VERSION",
    "istio_http_routes",
    "render_istio",
    "render_istio_host",
    "render_istio_ingress",
]

API_VERSION = "networking.istio.io/v1"
BAGGAGE_HEADER = "baggage"
ISTIO_REGEX_LIMIT = 1024  # istiod rejects longer regexes
# The route pair that keeps every lane served by the baseline away from a canary.
BASELINE_LANES_HEADER = "baseline-lanes-header"
BASELINE_LANES_BAGGAGE = "baseline-lanes-baggage"

_NO_ESCAPE = re.compile(r"[-a-z0-9 ,.]*")


def fqdn(topology: Topology, service: str) -> str:
    return topology.host_names(service)[-1]


def _metadata(name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)}


def istio_http_routes(topology: Topology, service: str) -> list[dict[str, Any]]:
    """x-lane matches, then guarded baggage matches, then the baseline default."""
    return _http_routes(topology, service, _lane_strings(topology))


def _lane_strings(topology: Topology) -> dict[str, tuple[str, str, str]]:
    """Per lane: header route name, baggage route name, baggage regex (once per render)."""
    out = {}
    for lane in topology.lanes:
        regex = baggage_regex(topology.baggage_key, lane)
        if len(regex) > ISTIO_REGEX_LIMIT:  # pragma: no cover - lane names are <= 63 chars
            raise ValueError(f"baggage regex for lane {lane!r} exceeds Istio's 1,024 characters")
        out[lane] = (f"lane-{lane}-header", f"lane-{lane}-baggage", regex)
    return out


def _http_routes(
    topology: Topology, service: str, strings: dict[str, tuple[str, str, str]]
) -> list[dict[str, Any]]:
    # Every route gets its own dicts (no shared sub-objects): callers may edit what they get.
    host = fqdn(topology, service)
    table = topology.routes[service]
    header = topology.header
    baseline = topology.baseline
    canary = table[baseline].canary
    by_header: list[dict[str, Any]] = []
    by_baggage: list[dict[str, Any]] = []
    to_baseline: list[str] = []  # lanes served by the baseline, when a canary must not take them
    for lane, (header_name, baggage_name, regex) in strings.items():  # sorted lanes
        candidates = table[lane].candidates
        if candidates and candidates[0] == baseline:
            if canary is not None:
                to_baseline.append(lane)
            continue  # without a canary the default route serves it
        header_route: dict[str, Any] = {
            "name": header_name,
            "match": [{"headers": {header: {"exact": lane}}}],
        }
        baggage_route: dict[str, Any] = {
            "name": baggage_name,
            "match": [
                {
                    "headers": {BAGGAGE_HEADER: {"regex": regex}},
                    "withoutHeaders": {header: {"regex": VALID_LANE_REGEX}},
                }
            ],
        }
        if candidates:
            for route in (header_route, baggage_route):
                route["route"] = [{"destination": {"host": host, "subset": candidates[0]}}]
        else:
            body = table[lane].miss_body()
            for route in (header_route, baggage_route):
                route["directResponse"] = {"status": STRICT_MISS_STATUS, "body": {"string": body}}
                route["headers"] = {"response": {"set": {"content-type": "application/json"}}}
        by_header.append(header_route)
        by_baggage.append(baggage_route)
    if to_baseline:
        _baseline_pair(topology, host, to_baseline, by_header, by_baggage)
    default = {"name": "baseline", "route": [{"destination": {"host": host, "subset": baseline}}]}
    if canary is None:
        return [*by_header, *by_baggage, default]
    return [*by_header, *by_baggage, *_canary_routes(canary, host, baseline, default)]


def _baseline_pair(
    topology: Topology,
    host: str,
    lanes: list[str],
    by_header: list[dict[str, Any]],
    by_baggage: list[dict[str, Any]],
) -> None:
    """One route pair sends every lane served by the baseline to the baseline subset, ahead of
    a canary: the lanes as a regex alternation (chunked under Istio's 1,024 characters), so a
    mesh with many lanes gets two routes per host instead of two per lane."""
    header, key = topology.header, topology.baggage_key
    headers, baggages = [], []
    for chunk in _alternations(key, lanes):
        headers.append({"headers": {header: {"regex": chunk}}})
        baggages.append(
            {
                "headers": {BAGGAGE_HEADER: {"regex": baggage_regex_of(key, chunk)}},
                "withoutHeaders": {header: {"regex": VALID_LANE_REGEX}},
            }
        )
    subset = topology.baseline
    by_header.append(
        {
            "name": BASELINE_LANES_HEADER,
            "match": headers,
            "route": [{"destination": {"host": host, "subset": subset}}],
        }
    )
    by_baggage.append(
        {
            "name": BASELINE_LANES_BAGGAGE,
            "match": baggages,
            "route": [{"destination": {"host": host, "subset": subset}}],
        }
    )


def _alternations(key: str, lanes: list[str]) -> list[str]:
    """``(?:a|b|...)`` groups of lane names whose baggage regex stays under Istio's limit.

    Lane names are RFC 1123 labels: no character of theirs is special in RE2 here.
    """
    room = ISTIO_REGEX_LIMIT - len(baggage_regex_of(key, "(?:)"))
    out: list[str] = []
    group: list[str] = []
    size = 0
    for lane in lanes:
        if group and size + len(lane) + 1 > room:
            out.append(f"(?:{'|'.join(group)})")
            group, size = [], 0
        group.append(lane)
        size += len(lane) + 1
    if group:
        out.append(f"(?:{'|'.join(group)})")
    return out


def _canary_routes(
    canary: Canary, host: str, baseline: str, default: dict[str, Any]
) -> list[dict[str, Any]]:
    """Content matches to the canary subset, then the weighted default (after every lane route).

    Every declared lane has a route above these, so only baseline traffic (no lane, an invalid
    or an undeclared one) reaches them: lane traffic never lands on a canary.
    """
    out: list[dict[str, Any]] = []
    if canary.matches:
        entries = [m.as_dict() for m in canary.matches]
        out.append(
            {
                "name": f"canary-{canary.version}-match",
                "match": entries,
                "route": [{"destination": {"host": host, "subset": canary.version}}],
            }
        )
    if canary.weight >= 100:
        default["route"] = [{"destination": {"host": host, "subset": canary.version}}]
    elif canary.weight > 0:
        default["route"] = [
            {"destination": {"host": host, "subset": baseline}, "weight": 100 - canary.weight},
            {"destination": {"host": host, "subset": canary.version}, "weight": canary.weight},
        ]
    out.append(default)
    return out


def render_istio_host(
    topology: Topology,
    service: str,
    *,
    lane_label: str = "lane",
    export_to: Sequence[str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(DestinationRule, VirtualService) of one service; ``export_to=None`` omits ``exportTo``."""
    check_label_key(lane_label)
    return _host(topology, service, lane_label, export_to, None)


def _host(
    topology: Topology,
    service: str,
    lane_label: str,
    export_to: Sequence[str] | None,
    strings: dict[str, tuple[str, str, str]] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    if service not in topology.services:
        raise KeyError(service)
    ns = topology.namespace_of(service)
    host = fqdn(topology, service)
    dr_spec: dict[str, Any] = {"host": host}
    vs_spec: dict[str, Any] = {"hosts": [service, host]}
    if export_to is not None:
        dr_spec["exportTo"] = list(export_to)
        vs_spec["exportTo"] = list(export_to)
    versions = list(topology.lanes_of(service))
    canary = topology.services[service].canary
    if canary is not None:
        versions.append(canary.version)  # pods labelled `lane: <version>`, like a lane's
    dr_spec["subsets"] = [{"name": v, "labels": {lane_label: v}} for v in versions]
    vs_spec["http"] = _http_routes(topology, service, strings or _lane_strings(topology))
    dr = {
        "apiVersion": API_VERSION,
        "kind": "DestinationRule",
        "metadata": _metadata(service, ns),
        "spec": dr_spec,
    }
    vs = {
        "apiVersion": API_VERSION,
        "kind": "VirtualService",
        "metadata": _metadata(service, ns),
        "spec": vs_spec,
    }
    return dr, vs


def render_istio_ingress(
    topology: Topology,
    service: str,
    *,
    gateway: str,
    hosts: Sequence[str],
    export_to: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The VirtualService that lets QA's header at the ingress ``gateway`` pick the lane."""
    if service not in topology.services:
        raise ValueError(f"entry service {service!r} is not in the topology")
    _split_gateway(gateway)
    if not hosts:
        raise ValueError("an ingress gateway needs at least one external host")
    for h in hosts:
        if DNS_NAME.fullmatch(h) is None:
            raise ValueError(f"external host {h!r} is not a DNS name")
    spec: dict[str, Any] = {"hosts": sorted(set(hosts)), "gateways": [gateway]}
    if export_to is not None:
        spec["exportTo"] = list(export_to)
    spec["http"] = _http_routes(topology, service, _lane_strings(topology))
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualService",
        "metadata": _metadata(f"{service}-ingress", topology.namespace_of(service)),
        "spec": spec,
    }


def render_istio(
    topology: Topology,
    *,
    lane_label: str = "lane",
    export_local: bool = False,
    gateway: str | None = None,
    external_hosts: Sequence[str] = (),
    entry_service: str | None = None,
) -> list[dict[str, Any]]:
    """Every Istio object of the topology, in apply order (see the module docstring)."""
    check_label_key(lane_label)
    if gateway is None and (external_hosts or entry_service):
        raise ValueError("--external-host and --entry-service need --gateway")
    gw_ns = None
    if gateway is not None:
        gw_ns, _ = _split_gateway(gateway)
        if not external_hosts:
            raise ValueError("--gateway needs at least one --external-host")
        if entry_service is None:
            raise ValueError("--gateway needs --entry-service (the service the hosts reach)")
        if entry_service not in topology.services:
            raise ValueError(f"entry service {entry_service!r} is not in the topology")
    drs: list[dict[str, Any]] = []
    vss: list[dict[str, Any]] = []
    strings = _lane_strings(topology)
    with gc_paused():
        for service in topology.services:
            export_to: list[str] | None = None
            if export_local:
                export_to = ["."]
                # The gateway reads the entry service's subsets: export its DR to the gateway too.
                if service == entry_service and gw_ns and gw_ns != topology.namespace_of(service):
                    export_to.append(gw_ns)
            dr, vs = _host(topology, service, lane_label, export_to, strings)
            if export_to is not None:
                vs["spec"]["exportTo"] = ["."]  # only the subsets are read from the gateway
            drs.append(dr)
            vss.append(vs)
    out = [*drs, *vss]
    if gateway is not None and entry_service is not None:
        export_to = None
        if export_local:
            ns = topology.namespace_of(entry_service)
            export_to = ["."] if gw_ns == ns else [".", str(gw_ns)]
        out.append(
            render_istio_ingress(
                topology, entry_service, gateway=gateway, hosts=external_hosts, export_to=export_to
            )
        )
    return out


def _split_gateway(gateway: str) -> tuple[str, str]:
    ns, sep, name = gateway.partition("/")
    if not sep or DNS_LABEL.fullmatch(ns) is None or DNS_NAME.fullmatch(name) is None:
        raise ValueError(f"gateway {gateway!r}: expected NAMESPACE/NAME")
    return ns, name
