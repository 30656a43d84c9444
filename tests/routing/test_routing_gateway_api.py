"""Gateway API (GAMMA) objects: schema-valid, within the API's limits, and routing by x-lane.

HTTPRoutes are checked against the real HTTPRoute CRD (gateway-api v1.6.1, standard channel,
``tests/schemas/gateway-api/``, provenance in ``tests/schemas/SOURCE.md``), every object closed
so a misspelled key fails: field names, enums, patterns and the structural limits (``maxItems``
16 rules / 64 matches / 16 filters / 16 backendRefs / 16 header matches, value lengths). The CEL
rules the renderer relies on are checked here by hand: "at most 128 matches per route", "an
Exact or PathPrefix path is absolute without '?' or '#'", "a Service backendRef has a port".
Backend Services are checked against the strict Kubernetes 1.33 Service schema.
"""

from __future__ import annotations

import copy
import itertools

import pytest
from k8s_schemas import gateway_api_validator, k8s_validator
from routing_corpus import predict, requests, topology
from routing_eval import gamma_backend

from lane_router import Lane, Service, Topology
from lane_router.render.gateway_api import (
    MAX_MATCHES_PER_ROUTE,
    backend_name,
    render_gateway_api,
    render_gateway_api_host,
)

TOPO = topology()
_ROUTE_VALIDATOR = gateway_api_validator("HTTPRoute")


def _route_errors(route: dict) -> list[str]:
    errors = [e.message for e in _ROUTE_VALIDATOR.iter_errors(route)]
    for rule in route["spec"]["rules"]:
        for ref in rule.get("backendRefs", []):
            # CEL: a Service backend (the default kind) needs a port.
            service = ref.get("kind", "Service") == "Service" and ref.get("group", "") == ""
            if service and "port" not in ref:
                errors.append(f"backendRef {ref.get('name')!r}: port required for a Service")
        for m in rule.get("matches", []):
            # CEL: an Exact or PathPrefix value is an absolute path without '?' or '#'.
            path = m.get("path", {})
            if path.get("type", "PathPrefix") != "RegularExpression" and path:
                value = path["value"]
                if not value.startswith("/") or "?" in value or "#" in value:
                    errors.append(f"path {value!r} must be absolute, without ? or #")
    total = sum(len(r.get("matches") or [{}]) for r in route["spec"]["rules"])
    if total > MAX_MATCHES_PER_ROUTE:
        errors.append(f"{total} matches: the CEL rule allows at most 128 per route")
    return errors


def _errors(obj: dict) -> list[str]:
    if obj["kind"] == "Service":
        return [e.message for e in k8s_validator("Service").iter_errors(obj)]
    return _route_errors(obj)


def _big() -> Topology:
    """100 lanes, all deploying 'wide'; 100 lanes falling back to them for 'narrow'."""
    lanes = [Lane(f"lane-{i:03d}") for i in range(100)]
    lanes += [Lane(f"fb-{i:03d}", fallback=f"lane-{i % 7:03d}") for i in range(100)]
    lanes += [Lane(f"strict-{i:03d}", strict=True) for i in range(30)]
    wide = {lane.name: () for lane in lanes if lane.name.startswith("lane-")}
    narrow = {f"lane-{i:03d}": () for i in range(7)}
    return Topology.build(
        lanes=lanes,
        services=[
            Service("wide", {"baseline": (), **wide}, port=8080),
            Service("narrow", {"baseline": (), **narrow}, port=8080),
        ],
    )


@pytest.mark.parametrize("topo", [TOPO, _big()], ids=["corpus", "big"])
def test_objects_are_schema_valid_and_within_limits(topo: Topology) -> None:
    objects = render_gateway_api(topo)
    kinds = [o["kind"] for o in objects]
    assert kinds == sorted(kinds, key=["Service", "HTTPRoute"].index)  # backends first
    problems = {f"{o['kind']}/{o['metadata']['name']}": _errors(o) for o in objects}
    assert not {k: v for k, v in problems.items() if v}


def test_the_big_topology_needs_several_routes_per_service() -> None:
    _, routes = render_gateway_api_host(_big(), "wide")
    assert len(routes) > 1
    assert [r["metadata"]["name"] for r in routes][:2] == ["wide-lanes", "wide-lanes-2"]


def test_misspelled_keys_fail_both_schemas() -> None:
    backends, routes = render_gateway_api_host(TOPO, "reviews")
    svc = copy.deepcopy(backends[0])
    svc["spec"]["selectors"] = svc["spec"].pop("selector")
    assert _errors(svc)
    route = copy.deepcopy(routes[0])
    route["spec"]["rules"][0]["backendRef"] = route["spec"]["rules"][0].pop("backendRefs")
    assert _errors(route)
    route = copy.deepcopy(routes[0])
    route["spec"]["rules"] = route["spec"]["rules"] * 17
    assert _errors(route)


def _lane_of_backend(backends: list[dict], ref: dict) -> str:
    (svc,) = [b for b in backends if b["metadata"]["name"] == ref["name"]]
    assert ref["port"] == svc["spec"]["ports"][0]["port"]
    return svc["spec"]["selector"]["lane"]


@pytest.mark.parametrize("topo", [TOPO, _big()], ids=["corpus", "big"])
def test_x_lane_requests_land_where_the_model_predicts_whatever_the_route_age(
    topo: Topology,
) -> None:
    """x-lane decides; baggage is not matched by Gateway API routes (see _gateway_api)."""
    corpus = (
        requests(topo) if topo is TOPO else [("x-lane " + x, [("x-lane", x)]) for x in topo.lanes]
    )
    wrong = []
    for service in topo.services:
        backends, routes = render_gateway_api_host(topo, service)
        orders = list(itertools.permutations(routes)) if len(routes) < 4 else [routes, routes[::-1]]
        for label, headers in corpus:
            if sum(k.lower() == "x-lane" for k, _ in headers) > 1:
                continue  # repeated x-lane lines are joined: implementation-specific
            xlane_only = [(k, v) for k, v in headers if k.lower() != "baggage"]
            res = predict(topo, service, xlane_only)
            # A strict miss goes to the backend of the strict lane where the walk stopped.
            want = (res.strict_lane or res.lane) if res.strict_miss else res.serving
            for order in orders:
                ref = gamma_backend(order, headers)
                assert ref is not None, label
                got = _lane_of_backend(backends, ref)
                if got != want:
                    wrong.append(f"{service} {label}: {got}, model {res}")
                if res.strict_miss:
                    # The strict lane's backend selects pods that do not exist: 503.
                    assert want not in topo.lanes_of(service)
    assert not wrong, "\n".join(wrong[:20])


def test_untagged_and_baggage_only_requests_reach_the_baseline_backend() -> None:
    backends, routes = render_gateway_api_host(TOPO, "reviews")
    for headers in ([], [("baggage", "lane=feature-a")], [("x-lane", "Feature-A")]):
        assert _lane_of_backend(backends, gamma_backend(routes, headers)) == "baseline"


def test_backend_names_are_unique_short_and_stable() -> None:
    lanes = [Lane("b-c"), Lane("c"), Lane("x" * 63)]
    topo = Topology.build(
        lanes=lanes,
        services=[
            Service("a", {"baseline": (), "b-c": (), "x" * 63: ()}),
            Service("a-b", {"baseline": (), "c": ()}),
        ],
    )
    names = [o["metadata"]["name"] for o in render_gateway_api(topo) if o["kind"] == "Service"]
    assert len(names) == len(set(names))
    assert all(len(n) <= 63 and n[-1] != "-" for n in names)
    assert backend_name(topo, "a", "b-c") != backend_name(topo, "a-b", "c")
    assert backend_name(topo, "a", "baseline") == "a-baseline"
    assert names == [
        o["metadata"]["name"] for o in render_gateway_api(topo) if o["kind"] == "Service"
    ]
