"""Canaries in the Gateway API objects: schema-valid, within limits, and the GAMMA precedence of the
independent evaluator lands every x-lane request (x canary headers x paths) where the model says."""

from __future__ import annotations

import itertools
import random

import pytest
from canary_corpus import canary_requests, predict, topology
from routing_eval import gamma_rule
from test_routing_gateway_api import _errors

from lane_router import Canary, ContentMatch, Lane, Service, Topology
from lane_router.render.gateway_api import render_gateway_api, render_gateway_api_host

TOPO = topology()
CORPUS = canary_requests(TOPO)


def _big() -> Topology:
    """60 lanes and a canary with three matches: the combined matches need several routes."""
    lanes = [Lane(f"lane-{i:02d}") for i in range(60)]
    canary = Canary(
        "v2",
        25,
        (
            ContentMatch(headers=(("x-canary", "exact", "1"),)),
            ContentMatch(uri=("prefix", "/beta/")),
            ContentMatch(headers=(("x-user", "regex", "a.*"),), uri=("exact", "/cart")),
        ),
    )
    versions = {"baseline": (), "v2": (), **{f"lane-{i:02d}": () for i in range(0, 60, 3)}}
    return Topology.build(lanes=lanes, services=[Service("wide", versions, canary=canary)])


@pytest.mark.parametrize("topo", [TOPO, _big()], ids=["corpus", "big"])
def test_objects_with_canaries_are_schema_valid_and_within_limits(topo: Topology) -> None:
    objects = render_gateway_api(topo)
    problems = {f"{o['kind']}/{o['metadata']['name']}": _errors(o) for o in objects}
    assert not {k: v for k, v in problems.items() if v}


def test_the_canary_has_its_own_backend_service() -> None:
    backends, _ = render_gateway_api_host(TOPO, "reviews")
    (svc,) = [b for b in backends if b["metadata"]["name"] == "reviews-v2"]
    assert svc["spec"]["selector"] == {"app": "reviews", "lane": "v2"}


def _lane_of(backends: list[dict], name: str) -> str:
    (svc,) = [b for b in backends if b["metadata"]["name"] == name]
    return svc["spec"]["selector"]["lane"]


def _outcome(backends: list[dict], refs: list[dict]) -> tuple[tuple[str, int], ...]:
    if len(refs) == 1:
        return ((_lane_of(backends, refs[0]["name"]), 100),)
    return tuple((_lane_of(backends, r["name"]), r.get("weight", 1)) for r in refs)


@pytest.mark.parametrize("service", sorted(TOPO.services))
def test_x_lane_requests_land_where_the_model_predicts_whatever_the_route_age(
    service: str,
) -> None:
    """Gateway API matches x-lane only (see _gateway_api): baggage is dropped from the request
    before predicting; repeated lines are joined by implementations, so they are left out."""
    backends, routes = render_gateway_api_host(TOPO, service)
    canary = TOPO.services[service].canary
    orders = list(itertools.permutations(routes))
    wrong = []
    for label, headers, path in CORPUS:
        names = [k.lower() for k, _ in headers]
        if any(names.count(n) > 1 for n in names):
            continue
        xlane_only = [(k, v) for k, v in headers if k.lower() != "baggage"]
        lane, want = predict(TOPO, service, xlane_only, path)
        if want == "503":  # the strict lane's backend selects no pod
            expected = ((lane, 100),)
        elif want is None:
            expected = ((TOPO.baseline, 100 - canary.weight), (canary.version, canary.weight))
        else:
            expected = ((want, 100),)
        for order in orders:
            refs = gamma_rule(order, headers, path)
            got = refs and _outcome(backends, refs)
            if got != expected:
                wrong.append(f"{label} (lane {lane}): {got}, model {expected}")
    assert not wrong, "\n".join(wrong[:20])


def test_big_topology_lanes_never_reach_the_canary_across_split_routes() -> None:
    topo = _big()
    backends, routes = render_gateway_api_host(topo, "wide")
    assert len(routes) > 1
    for lane in topo.lanes:
        for extra, path in (
            ([], "/"),
            ([("x-canary", "1")], "/"),
            ([], "/beta/x"),
            ([("x-user", "ann")], "/cart"),
        ):
            for order in (routes, routes[::-1]):
                refs = gamma_rule(order, [("x-lane", lane), *extra], path)
                want = topo.resolve("wide", lane).serving
                assert _outcome(backends, refs) == ((want, 100),), (lane, extra, path)


def test_weight_10_sends_10_percent_of_10000_baseline_requests_to_the_canary() -> None:
    backends, routes = render_gateway_api_host(TOPO, "reviews")
    rng = random.Random(11)
    hits = 0
    for i in range(10_000):
        headers = [] if i % 2 else [("x-lane", "Not-Valid")]
        split = _outcome(backends, gamma_rule(routes, headers, "/" if i % 3 else "/beta"))
        total = sum(w for _, w in split)
        point = rng.random() * total
        for version, w in split:
            if point < w:
                hits += version == "v2"
                break
            point -= w
    assert 850 <= hits <= 1150, hits


def test_canary_matches_outrank_the_default_and_lane_rules_outrank_canary_matches() -> None:
    _, routes = render_gateway_api_host(TOPO, "reviews")
    weighted = gamma_rule(routes, [], "/cart")  # no content match holds
    assert [(r["name"], r["weight"]) for r in weighted] == [
        ("reviews-baseline", 90),
        ("reviews-v2", 10),
    ]
    assert [r["name"] for r in gamma_rule(routes, [("x-canary", "1")], "/")] == ["reviews-v2"]
    assert [r["name"] for r in gamma_rule(routes, [], "/beta/a")] == ["reviews-v2"]
    alice = [("x-user", "alice-1"), ("x-tenant", "acme")]
    assert [r["name"] for r in gamma_rule(routes, alice, "/cart")] == ["reviews-v2"]
    lane = [("x-lane", "feature-c"), *alice]  # served by the baseline
    assert [r["name"] for r in gamma_rule(routes, lane, "/cart")] == ["reviews-baseline"]


def test_a_canary_match_with_too_many_headers_is_refused() -> None:
    canary = Canary(
        "v2", 0, (ContentMatch(headers=tuple((f"x-h{i:02d}", "exact", "1") for i in range(16))),)
    )
    topo = Topology.build(
        lanes=[], services=[Service("web", {"baseline": (), "v2": ()}, canary=canary)]
    )
    with pytest.raises(ValueError, match="15 at most"):
        render_gateway_api(topo)


def test_a_uri_prefix_too_long_as_a_regex_is_refused() -> None:
    canary = Canary("v2", 0, (ContentMatch(uri=("prefix", "/" + "." * 600)),))
    topo = Topology.build(
        lanes=[], services=[Service("web", {"baseline": (), "v2": ()}, canary=canary)]
    )
    with pytest.raises(ValueError, match="at most 1024"):
        render_gateway_api(topo)
