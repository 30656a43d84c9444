"""TrafficCanaries through the controller, against the API double with the real client: the
canary's subset is in the DestinationRule before a route names it, a weight step rewrites one
VirtualService, removal runs routes first; a canary that cannot route says why and disturbs
nothing else."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from k8s_checks import converged, routed_subsets, settle, violations
from k8s_objects import NS, canary, deployment, lane, service


def _seed(double, services=("productpage", "reviews", "ratings")) -> None:
    for s in services:
        double.put(service(s))
        double.put(deployment(s, "baseline"))
    double.put(lane("feature-a"))
    double.put(deployment("reviews", "feature-a"))


def _subset_of(dr: dict[str, Any] | None, version: str) -> str | None:
    for s in (dr or {}).get("spec", {}).get("subsets", []):
        if s.get("labels") == {"lane": version}:
            return s["name"]
    return None


def _weights(vs: dict[str, Any] | None, subset: str) -> set[int]:
    """The weights the routes give ``subset`` where they split traffic."""
    return {
        d.get("weight", 100)
        for r in (vs or {}).get("spec", {}).get("http", [])
        if len(r.get("route", [])) > 1
        for d in r["route"]
        if d["destination"].get("subset") == subset
    }


def _ready(double, name: str) -> dict[str, Any]:
    st = double.get("TrafficCanary", NS, name).get("status") or {}
    return next((c for c in st.get("conditions", ()) if c["type"] == "Ready"), {})


def _lane_ready(double, name: str) -> str | None:
    st = double.get("TrafficLane", NS, name).get("status") or {}
    return next((c["status"] for c in st.get("conditions", ()) if c["type"] == "Ready"), None)


def _since(double, start: int) -> list[tuple[str, str, str]]:
    return [(e.method, e.kind, e.name) for e in double.writes() if double.log.index(e) >= start]


def _lane_routes(double, host: str) -> list[dict[str, Any]]:
    vs = double.get("VirtualService", NS, host)
    return [r for r in vs["spec"]["http"] if r["name"].startswith(("lane-", "baseline-lanes-"))]


def test_canary_lifecycle_subset_first_one_vs_per_step_routes_leave_first(
    double, start_controller
) -> None:
    _seed(double)
    double.put(lane("feature-b"))  # deploys nothing: served by the baseline everywhere
    double.put(deployment("reviews", "v2"))
    ctl = start_controller()
    double.wait_for(lambda: converged(double, NS), what="initial routes")
    settle(double, ctl)
    lanes_before = _lane_routes(double, "reviews")
    first = start = len(double.log)

    # Appears: the DestinationRule gains the subset, then the VirtualService routes to it.
    match = [{"headers": {"x-canary": {"exact": "yes"}}}]
    double.put(canary("reviews-v2", "reviews", "v2", 10, match=match))
    double.wait_for(
        lambda: _ready(double, "reviews-v2").get("status") == "True", what="the canary routed"
    )
    settle(double, ctl)
    assert _since(double, start) == [
        ("PATCH", "DestinationRule", "reviews"),
        ("PATCH", "VirtualService", "reviews"),
    ]
    subset = _subset_of(double.get("DestinationRule", NS, "reviews"), "v2")
    assert subset is not None
    vs = double.get("VirtualService", NS, "reviews")
    assert subset in routed_subsets(vs)
    assert _weights(vs, subset) == {10}
    # Lane traffic is never diverted: feature-a keeps its version, feature-b (baseline-served)
    # now goes to the baseline by the route pair of the baseline-served lanes, ahead of the
    # canary's.
    lane_routes = _lane_routes(double, "reviews")
    assert [r for r in lane_routes if "feature-a" in r["name"]] == lanes_before
    assert {r["name"]: r["route"][0]["destination"]["subset"] for r in lane_routes} == {
        "lane-feature-a-header": "feature-a",
        "lane-feature-a-baggage": "feature-a",
        "baseline-lanes-header": "baseline",
        "baseline-lanes-baggage": "baseline",
    }
    names = [r["name"] for r in vs["spec"]["http"]]
    assert max(names.index(r["name"]) for r in lane_routes) < len(lane_routes)
    st = double.get("TrafficCanary", NS, "reviews-v2")["status"]
    assert (st["observedWeight"], st["matches"]) == (10, 1)
    assert converged(double, NS)

    # A weight step: only that host's VirtualService is written.
    start = len(double.log)
    double.put(canary("reviews-v2", "reviews", "v2", 50, match=match))
    double.wait_for(
        lambda: double.get("TrafficCanary", NS, "reviews-v2")["status"].get("observedWeight") == 50,
        what="the new weight",
    )
    settle(double, ctl)
    assert _since(double, start) == [("PATCH", "VirtualService", "reviews")]
    assert _weights(double.get("VirtualService", NS, "reviews"), subset) == {50}

    # Deleted (an abort): routes first, then the subset.
    start = len(double.log)
    double.remove("TrafficCanary", NS, "reviews-v2")
    double.wait_for(
        lambda: _subset_of(double.get("DestinationRule", NS, "reviews"), "v2") is None,
        what="the canary subset to go",
    )
    settle(double, ctl)
    assert _since(double, start) == [
        ("PATCH", "VirtualService", "reviews"),
        ("PATCH", "DestinationRule", "reviews"),
    ]
    assert subset not in routed_subsets(double.get("VirtualService", NS, "reviews"))
    assert _lane_routes(double, "reviews") == lanes_before
    assert converged(double, NS)
    assert violations(double, NS) == []
    assert {name for _, _, name in _since(double, first)} == {"reviews"}  # no other host


def test_canary_without_available_pods_waits_then_routes(double, start_controller) -> None:
    _seed(double)
    double.put(deployment("ratings", "v3", available=0))
    ctl = start_controller()
    double.wait_for(lambda: converged(double, NS), what="initial routes")
    settle(double, ctl)
    start = len(double.log)
    double.put(canary("ratings-v3", "ratings", "v3", 100))
    double.wait_for(lambda: _ready(double, "ratings-v3").get("reason"), what="a status")
    settle(double, ctl)
    ready = _ready(double, "ratings-v3")
    assert (ready["status"], ready["reason"]) == ("False", "VersionNotAvailable")
    assert "app=ratings, lane=v3" in ready["message"]
    assert "observedWeight" not in double.get("TrafficCanary", NS, "ratings-v3")["status"]
    assert _since(double, start) == []  # nothing routed, nothing written
    assert _subset_of(double.get("DestinationRule", NS, "ratings"), "v3") is None

    # The rollout becomes available: subset first, then the routes, now at 100%.
    start = len(double.log)
    double.put(deployment("ratings", "v3", available=1))
    double.wait_for(
        lambda: _ready(double, "ratings-v3").get("status") == "True", what="the canary routed"
    )
    settle(double, ctl)
    assert _since(double, start) == [
        ("PATCH", "DestinationRule", "ratings"),
        ("PATCH", "VirtualService", "ratings"),
    ]
    subset = _subset_of(double.get("DestinationRule", NS, "ratings"), "v3")
    vs = double.get("VirtualService", NS, "ratings")
    default = vs["spec"]["http"][-1]["route"]
    assert {d["destination"]["subset"]: d.get("weight", 100) for d in default}.get(subset) == 100
    assert violations(double, NS) == []

    # A second canary for the same service waits its turn; the first keeps routing untouched.
    start = len(double.log)
    double.put(deployment("ratings", "v4"))
    double.put(canary("ratings-v4", "ratings", "v4", 5))
    double.wait_for(lambda: _ready(double, "ratings-v4").get("reason"), what="a status")
    settle(double, ctl)
    ready = _ready(double, "ratings-v4")
    assert (ready["status"], ready["reason"]) == ("False", "Duplicate")
    assert "ratings-v3" in ready["message"]
    assert _since(double, start) == []


def test_invalid_canaries_say_why_and_leave_every_route_alone(double, start_controller) -> None:
    _seed(double)
    double.put(deployment("ratings", "v3"))
    ctl = start_controller()
    double.wait_for(lambda: converged(double, NS), what="initial routes")
    settle(double, ctl)
    before = {
        (k, h): double.get(k, NS, h)["spec"]
        for k in ("VirtualService", "DestinationRule")
        for h in ("productpage", "reviews", "ratings")
    }
    start = len(double.log)
    # A version that is a lane: the Deployment reviews-feature-a is the lane's, not a canary.
    double.put(canary("as-lane", "reviews", "feature-a", 50))
    # A weight the schema refuses now but an older, looser one admitted.
    double.put(canary("too-heavy", "ratings", "v3", 150), validate=False)
    for name in ("as-lane", "too-heavy"):
        double.wait_for(lambda name=name: _ready(double, name).get("reason"), what=name)
    settle(double, ctl)
    lane_ready = _ready(double, "as-lane")
    assert (lane_ready["status"], lane_ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.version: 'feature-a' is a TrafficLane" in lane_ready["message"]
    heavy = _ready(double, "too-heavy")
    assert (heavy["status"], heavy["reason"]) == ("False", "InvalidSpec")
    assert "spec.weight: must be a whole number 0-100, got 150" in heavy["message"]
    assert _since(double, start) == []
    after = {key: double.get(key[0], NS, key[1])["spec"] for key in before}
    assert after == before
    # The lane is untouched too: its status and routes are as before.
    st = double.get("TrafficLane", NS, "feature-a")["status"]
    assert st["services"] == ["reviews"]
    assert {c["type"]: c["status"] for c in st["conditions"]} == {"Ready": "True"}
    # The API server refuses the out-of-range weight outright with the CRD's schema.
    with pytest.raises(ValueError, match="weight"):
        double.put(canary("too-heavy-2", "ratings", "v3", 101))


def test_without_the_canary_crd_lanes_still_route(double, start_controller) -> None:
    """A controller upgraded before its new CRD was applied keeps routing lanes, and picks
    canaries up once the kind is served."""
    _seed(double)
    served = threading.Event()  # the CRD is not applied until this is set
    double.fail(10**9, status=404, when=lambda e: e.kind == "TrafficCanary" and not served.is_set())
    ctl = start_controller()
    double.wait_for(lambda: converged(double, NS), what="lane routes without the canary kind")
    assert "feature-a" in routed_subsets(double.get("VirtualService", NS, "reviews"))
    double.wait_for(
        lambda: _lane_ready(double, "feature-a") == "True", what="the lane status while absent"
    )
    served.set()
    double.put(canary("c", "reviews", "nope", 10))
    double.wait_for(
        lambda: _ready(double, "c").get("reason") == "VersionNotAvailable",
        what="the canary seen once the kind is served",
    )
    assert ctl.metrics.get(
        "lanes_controller_watch_restarts_total", resource="trafficcanaries", reason="absent"
    )
