"""Gateway API (GAMMA) rendering: HTTPRoutes attached to each Service, per-lane backend Services.

Stable API::

    render_gateway_api(topology, *, lane_label="lane") -> list[dict]
        All backend Services, then all HTTPRoutes (backends exist before routes use them).
    render_gateway_api_host(topology, service, *, lane_label="lane")
        -> (backend_services, http_routes) of one service.
    namer(service, lane) -> str
        The name of the backend Service selecting ``app: <service>, <lane_label>: <lane>``.

What differs from Istio, and why:

* **x-lane only, no baggage matches.** Gateway API has no negative header match, so a baggage
  match cannot be guarded by "x-lane holds no valid lane", and precedence across rules is by
  specificity (header-match count), then route age, not list order: a baggage rule could beat a
  valid ``x-lane``, breaking design.md's extract order. The lanes SDK writes ``x-lane`` on every
  outbound call, so in-mesh hops carry it; a request that carries the lane only in ``baggage``
  is routed to the baseline by these routes. Use the Istio or Envoy renderer for baggage-only
  clients.
* **Strict misses** route to the backend Service of the strict lane where the walk stopped
  (also for a lane that falls back into it), which selects no pod (the lane does not deploy the
  service): the implementation answers 503 (Gateway API: "SHOULD return
  a 503" for a Service without ready endpoints). The body is the implementation's, not JSON.
* **Untagged traffic** goes to the ``<service>-<baseline>`` backend (selector ``app`` + lane
  label), never to the Service itself, whose selector also matches lane pods.
* **Limits**: an HTTPRoute holds at most 16 rules, 64 matches per rule and 128 matches in all.
  Lanes served by the same backend share one rule (their matches OR); rules are packed into
  routes named ``<service>-lanes``, ``<service>-lanes-2``, ... Only lane rules carry header
  matches and all of them are exact matches on distinct values, so no two overlap and the
  match-less default rule has the lowest precedence: the split never changes the outcome.

Canaries (``Service.canary``), for baseline traffic only:

* a backend Service ``<service>-<version>`` selects the canary's pods (``<lane_label>: <version>``);
* the default rule splits by ``backendRefs`` weights (baseline 100-w, canary w; 0 or 100 leave one
  backend), and one rule holds the canary's content matches (``headers`` and ``path``; its
  matches OR, conditions inside one AND) to the canary backend;
* precedence: Gateway API picks among matching rules by specificity (exact path, then the longest
  prefix, then method, then the number of header matches), not by order, so a canary match with
  a path, e.g. ``Exact /cart``, would outrank a lane's ``x-lane`` rule (implicit ``PathPrefix
  /``) and steal lane traffic. So with a canary every lane gets rules, lanes served by the
  baseline too, and each lane's rule also holds "``x-lane: L`` AND canary match m" for every m:
  the same path as m and one header more, so whenever a canary match holds for a lane request,
  a rule of that lane outranks it, whatever the path type;
* matching: header ``exact`` is ``Exact``; header ``prefix``/``regex`` and URI ``prefix``/``regex``
  are ``RegularExpression`` (``Implementation-specific`` support: Envoy-based implementations use
  RE2 full matches, as the model does). URI ``prefix`` cannot be ``PathPrefix``, which matches
  whole path segments and ignores a trailing ``/`` (``/beta/`` would match ``/beta``);
* limits: a ``RegularExpression`` path's precedence against the match-less default rule
  (implicitly ``PathPrefix /``) is implementation-specific; implementations that rank regexes
  with prefixes by length (Contour) or above prefixes send a URI-regex/prefix canary match
  there; one that ranks regexes below every prefix would send it to the weighted default
  instead. As these routes match ``x-lane`` only, a request carrying its lane only in
  ``baggage`` is baseline traffic here and may reach a canary (the lanes SDK writes ``x-lane``
  on every hop; use Istio or Envoy for baggage-only clients). Repeated header lines are joined
  with ``,`` by most implementations, where the model matches any line. A match holds at most
  16 headers: a canary match gets 15 (one is the lane's).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Any

from lane_router._topology import Canary, ContentMatch, Topology
from lane_router.render._common import MANAGED_BY, check_label_key, gc_paused

__all__ = [
    "MAX_MATCHES_PER_ROUTE",
    "MAX_MATCHES_PER_RULE",
    "MAX_RULES_PER_ROUTE",
    "backend_name",
    "render_gateway_api",
    "render_gateway_api_host",
]

API_VERSION = "gateway.networking.k8s.io/v1"
MAX_RULES_PER_ROUTE = 16
MAX_MATCHES_PER_RULE = 64
MAX_MATCHES_PER_ROUTE = 128
MAX_HEADERS_PER_MATCH = 16
MAX_PATH_VALUE = 1024
_LABEL_SERVICE = "traffic-lanes.io/service"
_LABEL_LANE = "traffic-lanes.io/lane"


def backend_name(topology: Topology, service: str, lane: str) -> str:
    """``<service>-<lane>``; hashed when over 63 characters or when it could collide."""
    return _Namer(topology)(service, lane)


class _Namer:
    """Backend names for one topology; collision checks are computed once per render."""

    def __init__(self, topology: Topology) -> None:
        # "a-b" + "c" and "a" + "b-c" give the same name, and so would a real service "a-b-c".
        counts: Counter[str] = Counter(topology.services)
        for service, svc in topology.services.items():
            counts.update(f"{service}-{lane}" for lane in topology.all_lanes)
            if svc.canary is not None:
                counts[f"{service}-{svc.canary.version}"] += 1
        self._counts = counts

    def __call__(self, service: str, lane: str) -> str:
        name = f"{service}-{lane}"
        if len(name) <= 63 and self._counts[name] <= 1:
            return name
        digest = hashlib.sha256(f"{service}/{lane}".encode()).hexdigest()[:10]
        return f"{name[:52].rstrip('-')}-{digest}"


def render_gateway_api_host(
    topology: Topology, service: str, *, lane_label: str = "lane"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(backend Services, HTTPRoutes) of one service."""
    check_label_key(lane_label)
    return _render_host(topology, service, lane_label, _Namer(topology))


def _render_host(
    topology: Topology, service: str, lane_label: str, namer: _Namer
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if service not in topology.services:
        raise KeyError(service)
    ns = topology.namespace_of(service)
    port = topology.services[service].port
    baseline = topology.baseline
    # Group lanes by the backend that answers them: the serving lane, or for a strict miss the
    # strict lane where the walk stopped (a lane falling back into it shares its rule), whose
    # backend selects no pod (the lane does not deploy the service).
    table = topology.routes[service]
    canary = table[baseline].canary
    groups: dict[str, list[str]] = {}
    for lane in topology.lanes:
        res = table[lane]
        target = res.candidates[0] if res.candidates else (res.strict_lane or lane)
        if target != baseline or canary is not None:  # with a canary, every lane needs a rule
            groups.setdefault(target, []).append(lane)
    versions = topology.services[service].versions
    backend_lanes = [x for x in topology.all_lanes if x in versions or x in groups]
    if canary is not None:
        backend_lanes.append(canary.version)
    backends: list[dict[str, Any]] = []
    for lane in backend_lanes:
        backends.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": namer(service, lane),
                    "namespace": ns,
                    "labels": {**MANAGED_BY, _LABEL_LANE: lane, _LABEL_SERVICE: service},
                },
                "spec": {
                    "selector": {"app": service, lane_label: lane},
                    "ports": [
                        {"name": "http", "port": port, "protocol": "TCP", "targetPort": port}
                    ],
                },
            }
        )

    canary_matches = [_match(m, service) for m in canary.matches] if canary else []
    rules: list[dict[str, Any]] = []
    for target in sorted(groups):
        matches: list[dict[str, Any]] = []
        for lane in groups[target]:
            lane_header = {"type": "Exact", "name": topology.header, "value": lane}
            matches.append({"headers": [lane_header]})
            # The same lane AND each canary match: same path, one header more, so it outranks
            # the canary's rule whatever the path type (see the module docstring).
            for cm in canary_matches:
                matches.append({**cm, "headers": [*cm.get("headers", ()), lane_header]})
        for i in range(0, len(matches), MAX_MATCHES_PER_RULE):
            rules.append(
                {
                    "matches": matches[i : i + MAX_MATCHES_PER_RULE],
                    "backendRefs": [{"name": namer(service, target), "port": port}],
                }
            )
    default = {"backendRefs": [{"name": namer(service, baseline), "port": port}]}
    if canary is not None:
        canary_ref = {"name": namer(service, canary.version), "port": port}
        if canary_matches:
            rules.append({"matches": canary_matches, "backendRefs": [dict(canary_ref)]})
        default["backendRefs"] = _weighted(default["backendRefs"][0], canary_ref, canary)

    # Pack lane rules into routes; the first route keeps a slot for the default rule, whose
    # implicit "PathPrefix /" match counts towards the 128.
    packed: list[list[dict[str, Any]]] = [[]]
    used = 1
    for rule in rules:
        n = len(rule["matches"])
        room = MAX_RULES_PER_ROUTE - (1 if len(packed) == 1 else 0)
        if len(packed[-1]) >= room or used + n > MAX_MATCHES_PER_ROUTE:
            packed.append([])
            used = 0
        packed[-1].append(rule)
        used += n
    packed[0].append(default)
    routes: list[dict[str, Any]] = []
    for i, chunk in enumerate(packed):
        routes.append(
            {
                "apiVersion": API_VERSION,
                "kind": "HTTPRoute",
                "metadata": {
                    "name": f"{service}-lanes" if i == 0 else f"{service}-lanes-{i + 1}",
                    "namespace": ns,
                    "labels": {**MANAGED_BY, _LABEL_SERVICE: service},
                },
                "spec": {
                    "parentRefs": [{"group": "", "kind": "Service", "name": service}],
                    "rules": chunk,
                },
            }
        )
    return backends, routes


def _weighted(
    baseline_ref: dict[str, Any], canary_ref: dict[str, Any], canary: Canary
) -> list[dict[str, Any]]:
    if canary.weight <= 0:
        return [baseline_ref]
    if canary.weight >= 100:
        return [canary_ref]
    return [
        {**baseline_ref, "weight": 100 - canary.weight},
        {**canary_ref, "weight": canary.weight},
    ]


def _match(m: ContentMatch, service: str) -> dict[str, Any]:
    """A canary content match as an HTTPRouteMatch (path and headers, AND)."""
    if len(m.headers) >= MAX_HEADERS_PER_MATCH:  # one slot is kept for the lane header
        raise ValueError(
            f"service {service!r}: a canary match with {len(m.headers)} headers does not fit a "
            f"Gateway API match ({MAX_HEADERS_PER_MATCH - 1} at most, besides the lane header)"
        )
    out: dict[str, Any] = {}
    if m.uri is not None:
        kind, value = m.uri
        # PathPrefix matches whole path segments ("/beta" is not a prefix of "/betax", and a
        # trailing "/" is ignored): not the string prefix of the model, so prefixes are regexes.
        if kind != "exact":
            kind, value = "RegularExpression", _regex(kind, value)
            if len(value) > MAX_PATH_VALUE:
                raise ValueError(
                    f"service {service!r}: a canary URI match is {len(value)} characters as a "
                    f"regex; Gateway API paths hold at most {MAX_PATH_VALUE}"
                )
        out["path"] = {"type": "Exact" if kind == "exact" else kind, "value": value}
    if m.headers:
        headers = []
        for name, kind, value in m.headers:
            if kind == "exact" and value:
                headers.append({"type": "Exact", "name": name, "value": value})
            else:
                headers.append(
                    {"type": "RegularExpression", "name": name, "value": _regex(kind, value)}
                )
        out["headers"] = headers
    return out


def _regex(kind: str, value: str) -> str:
    if kind == "regex":
        return value
    if kind == "prefix":
        return f"{re.escape(value)}.*"
    return re.escape(value) or "(?:)"  # an empty exact value: Gateway API values are non-empty


def render_gateway_api(topology: Topology, *, lane_label: str = "lane") -> list[dict[str, Any]]:
    """Every object, in apply order: all backend Services, then all HTTPRoutes."""
    services: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    check_label_key(lane_label)
    namer = _Namer(topology)
    with gc_paused():
        for service in topology.services:
            s, r = _render_host(topology, service, lane_label, namer)
            services.extend(s)
            routes.extend(r)
    return [*services, *routes]
