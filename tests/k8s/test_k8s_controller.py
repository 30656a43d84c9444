"""The controller against the Kubernetes API double, through the real kubernetes client."""

from __future__ import annotations

from conftest import NS, deployment, lane, service
from k8s_checks import converged, routed_subsets, settle, violations


def _seed(double, services=("productpage", "reviews", "ratings")) -> None:
    for s in services:
        double.put(service(s))
        double.put(deployment(s, "baseline"))
    double.put(lane("feature-a"))
    double.put(lane("feature-b", fallback="feature-a"))


def test_lane_deployment_appears_routes_follow_subset_first(double, start_controller) -> None:
    _seed(double)
    ctl = start_controller()
    double.wait_for(lambda: converged(double, NS), what="initial routes")
    vs = double.get("VirtualService", NS, "reviews")
    assert routed_subsets(vs) == {"baseline"}
    start = len(double.log)

    double.put(deployment("reviews", "feature-a"))
    double.wait_for(
        lambda: "feature-a" in routed_subsets(double.get("VirtualService", NS, "reviews")),
        what="a route to feature-a",
    )
    settle(double, ctl)
    assert converged(double, NS)
    writes = [e for e in double.writes() if double.log.index(e) >= start]
    order = [(e.kind, e.name) for e in writes]
    assert order == [("DestinationRule", "reviews"), ("VirtualService", "reviews")]
    # feature-b falls back to feature-a for reviews: both lanes route to the new subset.
    vs = double.get("VirtualService", NS, "reviews")
    by_name = {r["name"]: r for r in vs["spec"]["http"]}
    for name in ("lane-feature-a-header", "lane-feature-b-header"):
        assert by_name[name]["route"][0]["destination"]["subset"] == "feature-a"
    assert vs["spec"]["exportTo"] == ["."]
    assert vs["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "traffic-lanes"
    assert violations(double, NS) == []
    status = double.get("TrafficLane", NS, "feature-a")["status"]
    assert status["services"] == ["reviews"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Ready": "True"}
