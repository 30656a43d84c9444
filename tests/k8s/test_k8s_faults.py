"""The controller converges, losing nothing, through the faults a real API server has."""

from __future__ import annotations

from k8s_checks import converged, settle, violations
from k8s_objects import NS, deployment, lane, service


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
