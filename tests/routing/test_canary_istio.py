"""Canaries in the Istio objects: schema-valid, and the independent evaluator lands every request
(lanes x canary headers x paths) where the model says, weights included."""

from __future__ import annotations

import random

import pytest
from canary_corpus import canary_requests, predict, topology
from k8s_schemas import istio_validator
from routing_eval import istio_outcome

from lane_router import Canary, Lane, Service, Topology, loads_topology
from lane_router.render.istio import istio_http_routes, render_istio, render_istio_host

TOPO = topology()
CORPUS = canary_requests(TOPO)
GATEWAY = {
    "gateway": "istio-system/ingress",
    "external_hosts": ("shop.example.com",),
    "entry_service": "reviews",
}


def _errors(obj: dict) -> list[str]:
    validator = istio_validator(obj["kind"], "v1")
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


@pytest.mark.parametrize("options", [{}, {"export_local": True, **GATEWAY}], ids=["mesh", "gw"])
def test_every_object_with_canaries_validates_against_the_closed_v1_schema(options) -> None:
    objects = render_istio(TOPO, **options)
    problems = {f"{o['kind']}/{o['metadata']['name']}": _errors(o) for o in objects}
    assert not {k: v for k, v in problems.items() if v}
    # ... and the schema is not vacuous for the new fields.
    _, vs = render_istio_host(TOPO, "reviews")
    vs["spec"]["http"][-1]["route"][0]["weigth"] = 5
    assert _errors(vs)


def test_destination_rule_has_the_canary_subset_and_every_route_target_exists() -> None:
    dr, vs = render_istio_host(TOPO, "reviews", lane_label="example.com/lane")
    assert dr["spec"]["subsets"] == [
        {"name": "baseline", "labels": {"example.com/lane": "baseline"}},
        {"name": "feature-a", "labels": {"example.com/lane": "feature-a"}},
        {"name": "v2", "labels": {"example.com/lane": "v2"}},
    ]
    names = {s["name"] for s in dr["spec"]["subsets"]}
    for route in vs["spec"]["http"]:
        for dest in route.get("route", []):
            assert dest["destination"]["subset"] in names


@pytest.mark.parametrize("mode", ["per-line", "joined"])
@pytest.mark.parametrize("service", sorted(TOPO.services))
def test_every_request_lands_where_the_model_predicts(mode: str, service: str) -> None:
    _, vs = render_istio_host(TOPO, service)
    canary = TOPO.services[service].canary
    wrong = []
    checked = 0
    for label, headers, path in CORPUS:
        if mode == "joined" and any(
            sum(k.lower() == n for k, _ in headers) > 1 for n in ("x-lane", "x-canary")
        ):
            continue  # repeated lines joined with ',' is the older Envoys' behaviour
        lane, want = predict(TOPO, service, headers, path)
        got = istio_outcome(vs["spec"], headers, mode=mode, path=path)
        checked += 1
        if want == "503":
            ok = got.kind == "direct" and got.status == 503
        elif want is None:
            assert canary is not None
            ok = got.kind == "route" and got.split == (
                (TOPO.baseline, 100 - canary.weight),
                (canary.version, canary.weight),
            )
        else:
            ok = got.kind == "route" and got.subset == want
        if not ok:
            wrong.append(f"{label} (lane {lane}): {got}, model {want}")
    assert checked > 1000
    assert not wrong, "\n".join(wrong[:20])


def test_the_corpus_exercises_every_canary_outcome() -> None:
    seen = {
        (service, predict(TOPO, service, h, p)[1])
        for service in TOPO.services
        for _, h, p in CORPUS
    }
    assert {("reviews", "v2"), ("reviews", None), ("reviews", "baseline")} <= seen
    assert {("reviews", "feature-a"), ("reviews", "503")} <= seen
    assert ("details", "v3") not in seen and ("details", "baseline") in seen
    assert ("ratings", "v9") in seen and ("ratings", None) not in seen  # weight 100: no split


@pytest.mark.parametrize("service", ["reviews", "ratings"])
def test_lane_requests_never_reach_the_canary(service: str) -> None:
    """Whatever canary header or path a lane request carries, fallback to the baseline included."""
    _, vs = render_istio_host(TOPO, service)
    version = TOPO.services[service].canary.version
    lane_traffic = 0
    for label, headers, path in CORPUS:
        lane, _ = predict(TOPO, service, headers, path)
        if lane == TOPO.baseline:
            continue
        lane_traffic += 1
        got = istio_outcome(vs["spec"], headers, path=path)
        assert version not in {s for s, _ in got.split}, (label, got)
    assert lane_traffic > 500


def test_weight_10_sends_10_percent_of_10000_baseline_requests_to_the_canary() -> None:
    _, vs = render_istio_host(TOPO, "reviews")
    rng = random.Random(20261125)
    shapes = [
        ([], "/"),
        ([("x-lane", "nope")], "/x"),  # valid but undeclared: baseline
        ([("x-lane", "Feature-A")], "/"),  # invalid: baseline
        ([("baggage", "userId=1")], "/beta"),  # not the /beta/ prefix
        ([("x-canary", "2")], "/cart"),
    ]
    hits = 0
    for i in range(10_000):
        headers, path = shapes[i % len(shapes)]
        got = istio_outcome(vs["spec"], headers, path=path)
        hits += got.pick(rng.random()) == "v2"
    assert 850 <= hits <= 1150, hits


def test_content_matches_always_win_over_the_weight() -> None:
    _, vs = render_istio_host(TOPO, "reviews")
    rng = random.Random(7)
    for headers, path in (([("x-canary", "1")], "/"), ([], "/beta/a?b"), ([], "/beta/")):
        got = istio_outcome(vs["spec"], headers, path=path)
        assert all(got.pick(rng.random()) == "v2" for _ in range(200)), (headers, path)


def test_lane_routes_come_before_canary_routes_and_cover_baseline_served_lanes() -> None:
    routes = istio_http_routes(TOPO, "reviews")
    names = [r["name"] for r in routes]
    # feature-c and idle are served by the baseline: one route pair for both sends them to the
    # baseline subset, ahead of the canary (or the canary takes them); the others have their own.
    table = TOPO.routes["reviews"]
    grouped = [lane for lane in TOPO.lanes if table[lane].serving == TOPO.baseline]
    assert grouped == ["feature-c", "idle"]
    for lane in TOPO.lanes:
        own = f"lane-{lane}-header" in names and f"lane-{lane}-baggage" in names
        assert own == (lane not in grouped), lane
    by_name = {r["name"]: r for r in routes}
    pair = [by_name["baseline-lanes-header"], by_name["baseline-lanes-baggage"]]
    assert pair[0]["match"] == [{"headers": {"x-lane": {"regex": "(?:feature-c|idle)"}}}]
    assert all(r["route"] == [{"destination": pair[0]["route"][0]["destination"]}] for r in pair)
    assert pair[0]["route"][0]["destination"]["subset"] == TOPO.baseline
    assert names[-2:] == ["canary-v2-match", "baseline"]
    first_baggage = next(i for i, n in enumerate(names) if n.endswith("-baggage"))
    assert all(n.endswith("-header") for n in names[:first_baggage])
    # No canary: a lane served by the baseline needs no route (unchanged output).
    plain = [r["name"] for r in istio_http_routes(TOPO, "productpage")]
    assert "lane-feature-a-header" not in plain and plain[-1] == "baseline"


def test_weight_0_without_matches_renders_no_canary_route() -> None:
    routes = istio_http_routes(TOPO, "details")
    assert all("v3" not in str(r.get("route")) for r in routes)
    assert routes[-1]["route"] == [
        {"destination": {"host": "details.shop.svc.cluster.local", "subset": "baseline"}}
    ]


def test_weight_0_without_matches_routes_as_if_there_were_no_canary() -> None:
    without = loads_topology("lanes: {a: {}}\nservices: {web: {versions: {baseline: [], a: []}}}\n")
    with_zero = loads_topology(
        "lanes: {a: {}}\nservices: {web: {versions: {baseline: [], a: [], v2: []},"
        " canary: {version: v2, weight: 0}}}\n"
    )
    assert istio_http_routes(without, "web") == istio_http_routes(with_zero, "web")


def test_many_baseline_served_lanes_share_one_route_pair_under_istios_regex_limit() -> None:
    # 60 long lane names served by the baseline: the pair's regexes need several chunks.
    lanes = [Lane(f"team-{i:02d}-" + "x" * 40) for i in range(60)]
    canary = Canary("v2", weight=10)
    svc = Service("cart", {"baseline": (), "v2": (), lanes[0].name: ()}, canary=canary)
    topo = Topology.build(lanes=lanes, services=[svc])
    _, vs = render_istio_host(topo, "cart")
    assert not _errors(vs)
    routes = {r["name"]: r for r in vs["spec"]["http"]}
    pair = routes["baseline-lanes-header"], routes["baseline-lanes-baggage"]
    assert len(pair[0]["match"]) == len(pair[1]["match"]) > 1
    regexes = [
        m["headers"][h]["regex"]
        for r, h in zip(pair, ("x-lane", "baggage"), strict=True)
        for m in r["match"]
    ]
    assert max(len(r) for r in regexes) <= 1024
    assert len(vs["spec"]["http"]) == 5  # own lane pair, baseline pair, weighted default
    for lane in lanes:
        want = lane.name if lane is lanes[0] else "baseline"
        for headers in ([("x-lane", lane.name)], [("baggage", f"k=v, lane={lane.name};p=1")]):
            got = istio_outcome(vs["spec"], headers)
            assert (got.kind, got.subset) == ("route", want), (headers, got)
    # A prefix of a lane name is no lane: baseline traffic, which the canary may take.
    got = istio_outcome(vs["spec"], [("x-lane", "team-01")])
    assert got.split == (("baseline", 90), ("v2", 10))
