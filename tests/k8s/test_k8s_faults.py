"""The controller converges, losing nothing, through the faults a real API server has."""

from __future__ import annotations

from k8s_checks import converged, settle, violations
from k8s_objects import NS, canary, deployment, lane, service


def _seed(double, n: int = 8) -> list[str]:
    names = [f"svc-{i}" for i in range(n)]
    for s in names:
        double.put(service(s))
        double.put(deployment(s, "baseline"))
    for name in ("feature-a", "feature-b"):
        double.put(lane(name))
    return names


def test_dropped_watches_410_500s_and_restarts_lose_nothing(double, start_controller) -> None:
    names = _seed(double)
    ctl = start_controller()
    double.wait_for(lambda: converged(double, NS), what="initial routes")

    # 1. Every watch cut mid-stream; a change made while they are down is still seen.
    watches = double.active_watches()
    double.drop_watches()
    double.put(deployment(names[0], "feature-a"))
    double.wait_for(lambda: converged(double, NS), what="convergence after dropped watches")
    double.wait_for(lambda: double.active_watches() >= watches, what="watches to resume")

    # 2. History compacted: watches end with 410 and the controller relists.
    double.compact()
    double.put(deployment(names[1], "feature-b"))
    double.remove("Deployment", NS, f"{names[0]}-feature-a")
    double.wait_for(lambda: converged(double, NS), what="convergence after 410 Gone")
    gone = ctl.metrics.get(
        "lanes_controller_watch_restarts_total", resource="deployments", reason="gone"
    )
    assert gone >= 1

    # 3. A burst of 500s on writes and on lists/watches: backoff, then every host lands.
    settle(double, ctl)
    double.fail(12, status=500, when=lambda e: e.write and e.kind != "Lease")
    for s in names[2:6]:
        double.put(deployment(s, "feature-a"))
    double.wait_for(lambda: converged(double, NS), what="convergence after a burst of 500s")
    double.fail(6, status=503, when=lambda e: e.method == "GET" and e.kind == "Deployment")
    double.drop_watches()
    double.put(deployment(names[6], "feature-b"))
    double.wait_for(lambda: converged(double, NS), what="convergence after failing relists")
    assert sum(1 for e in double.log if e.status in (500, 503)) == 18

    # 4. The API server restarts in the middle of a reconcile: once after committing a write
    # whose answer never arrives, once before committing it.
    settle(double, ctl)
    double.restart_on(lambda e: e.write and e.kind == "DestinationRule", commit=True)
    double.put(lane("feature-c", fallback="feature-a"))
    for s in names[:4]:
        double.put(deployment(s, "feature-c"))
    double.wait_for(lambda: double.restarts == 1, what="the first restart")
    double.wait_for(lambda: converged(double, NS), what="convergence after a restart")
    settle(double, ctl)
    double.restart_on(lambda e: e.write and e.kind == "VirtualService", commit=False)
    for s in names[4:]:
        double.remove("Deployment", NS, f"{s}-feature-a")
    double.put(deployment(names[7], "feature-c"))
    double.wait_for(lambda: double.restarts == 2, what="the second restart")
    double.wait_for(lambda: converged(double, NS), what="convergence after a second restart")
    settle(double, ctl)
    assert converged(double, NS)
    assert violations(double, NS) == []
    # Every lane's status caught up too.
    for name in ("feature-a", "feature-b", "feature-c"):
        st = double.get("TrafficLane", NS, name)["status"]
        want = sorted(
            d["metadata"]["labels"]["app"]
            for d in double.objects("Deployment", NS)
            if d["metadata"]["labels"]["lane"] == name
        )
        assert st["services"] == want


def _ready(double, kind: str, ns: str, name: str) -> dict:
    obj = double.get(kind, ns, name) or {}
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Ready"), {})


def test_a_bad_lane_or_canary_is_reported_on_its_own_and_never_stops_the_others(
    double, start_controller
) -> None:
    # "a-team" reconciles before "shop": a lane there whose ttl overflows a date (the CRD
    # pattern admits it) and a lane and a canary an older, looser schema admitted.
    other = "a-team"
    double.put(service("cart", ns=other))
    for version in ("baseline", "forever", "ok"):
        double.put(deployment("cart", version, ns=other))
    double.put(lane("forever", ns=other, ttl="3000000d"))
    double.put(lane("ok", ns=other))
    double.put({**lane("garbled", ns=other), "spec": "not a mapping"}, validate=False)
    bad_canary = canary("odd", "cart", "v2", ns=other)
    bad_canary["spec"]["match"] = "not a list"
    double.put(bad_canary, validate=False)
    names = _seed(double, 2)
    double.put(deployment(names[0], "feature-a"))
    start_controller(namespace=None)  # every namespace
    double.wait_for(
        lambda: converged(double, NS, export_to=None), what="the next namespace's routes"
    )
    double.wait_for(lambda: converged(double, other, export_to=None), what="the good lane's routes")

    forever = double.wait_for(
        lambda: (
            _ready(double, "TrafficLane", other, "forever").get("reason") == "InvalidSpec"
            and _ready(double, "TrafficLane", other, "forever")
        ),
        what="the bad ttl reported",
    )
    assert forever["status"] == "False" and "spec.ttl" in forever["message"]
    assert "365d" in forever["message"]
    garbled = _ready(double, "TrafficLane", other, "garbled")
    assert garbled.get("reason") == "InvalidSpec" and "spec" in garbled["message"]
    assert _ready(double, "TrafficLane", other, "ok").get("reason") == "Routed"
    assert _ready(double, "TrafficCanary", other, "odd").get("reason") == "InvalidSpec"
    events = double.wait_for(
        lambda: (
            [e for e in double.objects("Event", other) if e["reason"] == "InvalidSpec"]
            if len(double.objects("Event", other)) >= 3
            else None
        ),
        what="one Event per bad object",
    )
    assert {(e["involvedObject"]["kind"], e["involvedObject"]["name"]) for e in events} == {
        ("TrafficLane", "forever"),
        ("TrafficLane", "garbled"),
        ("TrafficCanary", "odd"),
    }
    assert all(e["type"] == "Warning" for e in events)
