"""The one routing semantics (lane_router._topology) on the shapes users build."""

from __future__ import annotations

import json

import pytest
from routing_corpus import INVALID, UNKNOWN, topology

from lane_router import Lane, Service, Topology, TopologyError, loads_topology

TOPO = topology()


@pytest.mark.parametrize(
    ("service", "lane", "candidates"),
    [
        ("reviews", "feature-a", ("feature-a", "baseline")),
        ("reviews", "feature-b", ("feature-a", "baseline")),  # one hop
        ("reviews", "feature-c", ("feature-a", "baseline")),  # two hops
        ("details", "feature-c", ("feature-b", "baseline")),
        ("productpage", "feature-c", ("feature-c", "baseline")),
        ("productpage", "feature-b", ("baseline",)),  # the lane misses the service
        ("ratings", "idle", ("baseline",)),  # a lane that deploys nothing
        ("reviews", "hotfix", ("hotfix",)),  # strict: no fallback candidate after it
        ("details", "hotfix", ()),  # strict miss
        ("details", "qa", ("qa",)),
        ("reviews", "qa", ("hotfix",)),  # qa -> hotfix (strict): the walk stops there
        ("productpage", "qa", ()),  # ... a strict miss reached through a fallback
        ("reviews", "baseline", ("baseline",)),
    ],
)
def test_fallback_walk(service: str, lane: str, candidates: tuple[str, ...]) -> None:
    res = TOPO.resolve(service, lane)
    assert res is not None
    assert res.candidates == candidates
    assert res.strict_miss == (candidates == ())
    assert res.serving == (candidates[0] if candidates else None)
    assert res.is_fallback == bool(candidates and candidates[0] != lane)
    assert TOPO.routes[service][lane] == res


@pytest.mark.parametrize(
    ("service", "lane", "detail"),
    [
        ("details", "hotfix", "strict lane hotfix does not deploy details"),
        (
            "productpage",
            "qa",
            "lane qa falls back to strict lane hotfix, which does not deploy productpage",
        ),
    ],
)
def test_strict_miss_names_the_strict_lane_where_the_walk_stopped(
    service: str, lane: str, detail: str
) -> None:
    res = TOPO.routes[service][lane]
    assert res.strict_miss and res.strict_lane == "hotfix"
    assert res.miss_detail == detail
    assert json.loads(res.miss_body()) == {
        "status": 503,
        "reason": "strict miss",
        "service": service,
        "lane": lane,
        "detail": detail,
    }


def test_every_walk_records_its_strict_stop() -> None:
    for table in TOPO.routes.values():
        for lane, res in table.items():
            last = TOPO.chains[lane][-1]
            assert res.strict_lane == (None if last == TOPO.baseline else last)


def test_host_names_of_a_service() -> None:
    assert TOPO.host_names("ratings") == (
        "ratings",
        "ratings.data",
        "ratings.data.svc",
        "ratings.data.svc.cluster.local",
    )


@pytest.mark.parametrize("lane", [None, UNKNOWN, *INVALID])
def test_no_invalid_and_undeclared_lanes_mean_baseline(lane: str | None) -> None:
    for service in TOPO.services:
        res = TOPO.resolve(service, lane)
        assert res is not None and res.lane == "baseline" and res.candidates == ("baseline",)


def test_unknown_service_resolves_to_none() -> None:
    assert TOPO.resolve("nope", "feature-a") is None


def test_lane_order_never_matters() -> None:
    def build(order: list[Lane]) -> Topology:
        return Topology.build(
            lanes=order,
            services=[Service("web", {"baseline": (), "b": ()}), Service("api", {"baseline": ()})],
        )

    lanes = [Lane("a", fallback="b"), Lane("b"), Lane("c", strict=True)]
    one, two = build(lanes), build(lanes[::-1])
    assert list(one.lanes) == list(two.lanes) == ["a", "b", "c"]
    assert list(one.services) == ["api", "web"]
    for s in one.services:
        assert dict(one.routes[s]) == dict(two.routes[s])


@pytest.mark.parametrize(
    ("lanes", "services", "fragment"),
    [
        ([Lane("a", fallback="b"), Lane("b", fallback="a")], [], "fallback cycle"),
        ([Lane("a", fallback="a")], [], "fallback cycle a -> a"),
        ([Lane("a", fallback="ghost")], [], "lanes.a.fallback: unknown lane 'ghost'"),
        ([Lane("a", fallback="b", strict=True), Lane("b")], [], "strict lane does not fall back"),
        ([Lane("baseline")], [], "baseline lane is implicit"),
        ([Lane("UPPER")], [], "not a valid lane name"),
        ([], [Service("web", {"a": ()})], "services.web.versions: no 'baseline' version"),
        ([], [Service("web", {"baseline": (), "x": ()})], "services.web.versions.x: unknown lane"),
        ([], [Service("web", {"baseline": ()}, port=0)], "services.web.port"),
    ],
)
def test_invalid_topologies_name_the_key(lanes, services, fragment: str) -> None:
    with pytest.raises(TopologyError) as info:
        Topology.build(lanes=lanes, services=services)
    assert any(fragment in p for p in info.value.problems), info.value.problems


def test_every_problem_is_reported_at_once() -> None:
    text = "lanes:\n  a: {fallback: ghost}\n  B: {}\nservices:\n  web: {versions: {}}\n"
    with pytest.raises(TopologyError) as info:
        loads_topology(text)
    keys = [p.split(" ")[0] for p in info.value.problems]
    assert {"lanes.a.fallback", "lanes.B", "services.web.versions"} <= set(keys)
