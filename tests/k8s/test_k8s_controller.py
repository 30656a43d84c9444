"""The controller against the Kubernetes API double, through the real kubernetes client."""

from __future__ import annotations

from k8s_checks import converged, routed_subsets, settle, violations
from k8s_objects import NS, deployment, lane, service


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


def test_lane_goes_away_routes_leave_before_subsets(double, start_controller) -> None:
    _seed(double)
    double.put(deployment("reviews", "feature-a"))
    ctl = start_controller()
    double.wait_for(lambda: converged(double, NS), what="initial routes")
    assert "feature-a" in routed_subsets(double.get("VirtualService", NS, "reviews"))
    settle(double, ctl)
    start = len(double.log)

    double.remove("Deployment", NS, "reviews-feature-a")
    double.wait_for(
        lambda: (
            "feature-a"
            not in {
                s["name"] for s in double.get("DestinationRule", NS, "reviews")["spec"]["subsets"]
            }
        ),
        what="the feature-a subset to go",
    )
    settle(double, ctl)
    order = [(e.kind, e.name) for e in double.writes() if double.log.index(e) >= start]
    assert order == [("VirtualService", "reviews"), ("DestinationRule", "reviews")]

    # The TrafficLane itself goes: its subsets leave too, after its routes.
    double.put(deployment("ratings", "feature-b"))
    double.wait_for(
        lambda: "feature-b" in routed_subsets(double.get("VirtualService", NS, "ratings")),
        what="a route to feature-b",
    )
    settle(double, ctl)
    start = len(double.log)
    double.remove("TrafficLane", NS, "feature-b")
    double.wait_for(
        lambda: (
            "feature-b"
            not in {
                s["name"] for s in double.get("DestinationRule", NS, "ratings")["spec"]["subsets"]
            }
        ),
        what="the feature-b subset to go",
    )
    settle(double, ctl)
    order = [(e.kind, e.name) for e in double.writes() if double.log.index(e) >= start]
    assert order == [("VirtualService", "ratings"), ("DestinationRule", "ratings")]

    # A host that is no longer routed: VirtualService deleted first, then the DestinationRule.
    start = len(double.log)
    double.remove("Service", NS, "ratings")
    double.wait_for(lambda: double.get("DestinationRule", NS, "ratings") is None, what="delete")
    settle(double, ctl)
    deletes = [(e.method, e.kind) for e in double.writes() if double.log.index(e) >= start]
    assert deletes == [("DELETE", "VirtualService"), ("DELETE", "DestinationRule")]
    assert converged(double, NS)
    assert violations(double, NS) == []


def test_user_owned_virtualservice_is_untouched_and_reported(double, start_controller) -> None:
    _seed(double)
    double.put(deployment("reviews", "feature-a"))
    mine = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews-by-hand", "namespace": NS},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
    }
    same_name = {**mine, "metadata": {"name": "ratings", "namespace": NS}}
    same_name["spec"] = {**mine["spec"], "hosts": ["ratings.shop.svc.cluster.local"]}
    double.put(mine, manager="kubectl-client-side-apply")
    double.put(same_name, manager="kubectl-client-side-apply")
    double.put(deployment("ratings", "feature-b"))
    ctl = start_controller()
    double.wait_for(lambda: double.get("VirtualService", NS, "productpage"), what="other hosts")

    def reported():
        st = double.get("TrafficLane", NS, "feature-a").get("status") or {}
        return st.get("conflicts") and st

    status = double.wait_for(reported, what="the conflict in the lane status")
    settle(double, ctl)
    assert status["conflicts"] == ["VirtualService shop/reviews-by-hand"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Conflict")
    b = double.get("TrafficLane", NS, "feature-b")["status"]
    assert b["conflicts"] == ["VirtualService shop/ratings", "VirtualService shop/reviews-by-hand"]
    # Never written, never deleted: neither the user's objects nor anything for those hosts.
    touched = {(e.kind, e.name) for e in double.writes()}
    assert not touched & {
        ("VirtualService", "reviews-by-hand"),
        ("VirtualService", "ratings"),
        ("VirtualService", "reviews"),
        ("DestinationRule", "reviews"),
        ("DestinationRule", "ratings"),
    }
    assert double.get("VirtualService", NS, "ratings")["spec"] == same_name["spec"]
    events = double.objects("Event", NS)
    assert {e["involvedObject"]["name"] for e in events} == {"reviews-by-hand", "ratings"}
    assert all(e["reason"] == "ManagedByOther" and e["type"] == "Warning" for e in events)

    # The user removes their VirtualService: the controller takes over the host.
    double.remove("VirtualService", NS, "reviews-by-hand")
    double.wait_for(lambda: double.get("VirtualService", NS, "reviews"), what="takeover")
    double.wait_for(
        lambda: "conflicts" not in double.get("TrafficLane", NS, "feature-a")["status"],
        what="the conflict to clear",
    )
    assert violations(double, NS) == []


def test_expired_lane_loses_its_routes_and_shows_expired(double, start_controller) -> None:
    _seed(double)
    double.put(lane("hotfix", ttl="3s"))
    double.put(deployment("reviews", "hotfix"))
    start_controller()

    def expired():
        st = double.get("TrafficLane", NS, "hotfix").get("status") or {}
        conds = {c["type"]: c for c in st.get("conditions", ())}
        return conds.get("Expired", {}).get("status") == "True" and st

    status = double.wait_for(expired, timeout=30, what="the lane to expire")
    assert "expiresAt" in status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Expired")
    double.wait_for(lambda: converged(double, NS), what="routes without the lane")
    vs = double.get("VirtualService", NS, "reviews")
    assert "hotfix" not in routed_subsets(vs)
    assert not any("hotfix" in r["name"] for r in vs["spec"]["http"])
    assert "hotfix" not in {
        s["name"] for s in double.get("DestinationRule", NS, "reviews")["spec"]["subsets"]
    }
    # While it lived, it was routed (the expiry removed it, not a failure to add it).
    assert any(
        e.kind == "VirtualService" and e.name == "reviews" and "hotfix" in routed_subsets(e.body)
        for e in double.writes()
    )
    assert violations(double, NS) == []


def test_one_deployment_change_writes_only_that_host(double, start_controller) -> None:
    names = [f"svc-{i:02d}" for i in range(12)]
    _seed(double, names)
    ctl = start_controller()
    double.wait_for(lambda: converged(double, NS), what="initial routes")
    settle(double, ctl)
    start = len(double.log)
    rendered = ctl.metrics.get("lanes_controller_reconciles_total", result="ok")
    double.put(deployment("svc-07", "feature-b"))
    double.wait_for(
        lambda: "feature-b" in routed_subsets(double.get("VirtualService", NS, "svc-07")),
        what="the new route",
    )
    settle(double, ctl)
    written = {(e.kind, e.name) for e in double.writes() if double.log.index(e) >= start}
    assert written == {("DestinationRule", "svc-07"), ("VirtualService", "svc-07")}
    # Not even re-rendered: the other hosts' inputs did not change (the lane status write that
    # follows is not a spec change either). svc-07 itself runs again for its own write echoes.
    assert ctl.metrics.get("lanes_controller_reconciles_total", result="ok") - rendered <= 4
    reads = [
        e for e in double.log[start:] if e.method == "GET" and not e.watch and e.kind != "Lease"
    ]
    assert reads == []  # served from the watch caches, no relist


def test_the_sample_shop_routes_as_documented(double, start_controller) -> None:
    from k8s_schemas import REPO, load_docs

    sample = REPO / "k8s" / "sample"
    docs = [d for f in ("app.yaml", "lanes.yaml", "canary.yaml") for d in load_docs(sample / f)]
    for doc in docs:
        if doc["kind"] == "Deployment":
            doc["status"] = {"replicas": 1, "availableReplicas": 1}
        if doc["kind"] != "Namespace":
            double.put(doc)
    start_controller()
    double.wait_for(lambda: converged(double, NS), what="the sample's routes")

    def served(host: str) -> dict[str, str]:
        vs = double.get("VirtualService", NS, host)
        out = {}
        for r in vs["spec"]["http"]:
            if r["name"].endswith("-header"):
                lane_name = r["match"][0]["headers"]["x-lane"]["exact"]
                out[lane_name] = (
                    r["route"][0]["destination"]["subset"]
                    if "route" in r
                    else r["directResponse"]["status"]
                )
        return out

    assert served("reviews") == {"feature-a": "feature-a", "feature-b": "feature-a", "hotfix": 503}
    assert served("ratings") == {"feature-b": "feature-b", "hotfix": 503}
    assert served("details") == {"hotfix": "hotfix"}
    assert served("productpage") == {"hotfix": 503}
    for name, services in (
        ("feature-a", ["reviews"]),
        ("feature-b", ["ratings"]),
        ("hotfix", ["details"]),
    ):
        double.wait_for(
            lambda name=name, services=services: (
                double.get("TrafficLane", NS, name).get("status", {}).get("services") == services
            ),
            what=f"the status of {name}",
        )
    assert "expiresAt" in double.get("TrafficLane", NS, "hotfix")["status"]
    # The reviews canary: jason's baseline requests, then 10% of the rest, go to v3.
    double.wait_for(
        lambda: (
            double.get("TrafficCanary", NS, "reviews-v3").get("status", {}).get("observedWeight")
            == 10
        ),
        what="the canary's status",
    )
    http = double.get("VirtualService", NS, "reviews")["spec"]["http"]
    (match,) = [r for r in http if r["name"].startswith("canary-")]
    assert match["match"] == [{"headers": {"end-user": {"exact": "jason"}}}]
    assert match["route"][0]["destination"]["subset"] == "v3"
    assert {d["destination"]["subset"]: d["weight"] for d in http[-1]["route"]} == {
        "baseline": 90,
        "v3": 10,
    }
