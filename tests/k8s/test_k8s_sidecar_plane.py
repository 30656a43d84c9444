"""The controller's sidecar data plane (``data_plane="sidecar"``) on the API double: per-lane
Services and the namespace's ConfigMap, make-before-break at every write, through faults."""

from __future__ import annotations

from typing import Any

import yaml
from k8s_checks import settle
from k8s_objects import NS, canary, deployment, lane, service
from kube_double import KubeDouble

from lane_router import topology_from_dict
from lane_router._controller._sidecar_plane import plan_sidecar
from lane_router.render import MANAGED_BY_KEY

CM = "traffic-lanes"


def _doc(cm: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if cm is None else yaml.safe_load(cm["data"]["lanes.yaml"])


def _routes(double: KubeDouble) -> dict[str, dict[str, str]]:
    """service -> version -> backend Service name, from the stored ConfigMap."""
    doc = _doc(double.get("ConfigMap", NS, CM)) or {"services": {}}
    return {
        s: {v: eps[0].split(".")[0] for v, eps in spec["versions"].items()}
        for s, spec in doc["services"].items()
    }


def _backend_ok(double: KubeDouble, name: str, app: str, version: str) -> bool:
    svc = double.get("Service", NS, name)
    return (
        svc is not None
        and svc["spec"]["selector"] == {"app": app, "lane": version}
        and svc["metadata"]["labels"][MANAGED_BY_KEY] == "traffic-lanes"
    )


def make_before_break(double: KubeDouble) -> list[str]:
    """Replay every committed Service/ConfigMap write: whenever a ConfigMap was written, every
    backend it names existed; a Service was never deleted while the ConfigMap named it."""
    services: set[str] = set()
    named: set[str] = set()
    problems = []
    for e in double.writes(kinds=("Service", "ConfigMap")):
        if e.kind == "Service":
            if e.method == "DELETE":
                if e.name in named:
                    problems.append(f"Service {e.name} deleted while the ConfigMap names it")
                services.discard(e.name)
            else:
                services.add(e.name)
        elif e.method == "DELETE":
            named = set()
        else:
            doc = yaml.safe_load(e.body["data"]["lanes.yaml"])
            named = {
                ep.split(".")[0]
                for spec in doc["services"].values()
                for eps in spec["versions"].values()
                for ep in eps
            }
            problems += [f"ConfigMap names {n} before it exists" for n in named - services]
    return problems


def _seed(double: KubeDouble) -> None:
    for s in ("reviews", "ratings"):
        double.put(service(s))
        double.put(deployment(s, "baseline"))
    double.put(lane("feature-a"))
    double.put(lane("feature-b", fallback="feature-a"))
    double.put(deployment("reviews", "feature-a"))


def test_services_and_configmap_follow_lanes_make_before_break(double, start_controller) -> None:
    _seed(double)
    ctl = start_controller(data_plane="sidecar")
    double.wait_for(
        lambda: _routes(double).get("reviews", {}).keys() == {"baseline", "feature-a"},
        what="reviews with its feature-a version in the ConfigMap",
    )
    doc = _doc(double.get("ConfigMap", NS, CM))
    assert doc["namespace"] == NS and set(doc["lanes"]) == {"feature-a", "feature-b"}
    assert doc["services"]["reviews"]["versions"]["feature-a"] == [
        "reviews-feature-a.shop.svc:9080"
    ]
    topology_from_dict(doc)  # what the sidecar will load
    for s, versions in _routes(double).items():
        for v, name in versions.items():
            assert _backend_ok(double, name, s, v), name
    backend = double.get("Service", NS, "reviews-feature-a")
    assert backend["spec"]["ports"] == [
        {"name": "http", "port": 9080, "protocol": "TCP", "targetPort": 9080}
    ]
    # Our Services are outputs, never routed services themselves.
    assert set(_routes(double)) == {"reviews", "ratings"}

    # A lane version appears, a canary comes and goes, a lane goes: Services before the
    # ConfigMap names them, deletions after it stopped naming them.
    settle(double, ctl)
    # One metric prefix (docs/design.md), every series typed: this plane counts its reconciles
    # in the same counter as the Istio plane.
    text = ctl.metrics.render()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    assert names and all(n.startswith("lanes_controller_") for n in names), names
    assert "untyped" not in text and 'lanes_controller_reconciles_total{result="ok"}' in text
    double.put(deployment("ratings", "feature-b"))
    double.put(deployment("reviews", "v3"))
    double.put(canary("reviews-v3", "reviews", "v3", weight=20))
    double.wait_for(
        lambda: (
            {"feature-b", "v3"} <= set(_routes(double)["ratings"]) | set(_routes(double)["reviews"])
        ),
        what="ratings feature-b and the reviews canary",
    )
    assert _doc(double.get("ConfigMap", NS, CM))["services"]["reviews"]["canary"] == {
        "version": "v3",
        "weight": 20,
    }
    double.remove("TrafficCanary", NS, "reviews-v3")
    double.remove("TrafficLane", NS, "feature-a")
    double.wait_for(
        lambda: (
            double.get("Service", NS, "reviews-feature-a") is None
            and double.get("Service", NS, "reviews-v3") is None
        ),
        what="the lane's and the canary's Services to go",
    )
    assert set(_routes(double)["reviews"]) == {"baseline"}
    assert make_before_break(double) == []
    settle(double, ctl)
    assert double.writes(kinds=("VirtualService", "DestinationRule")) == []


def test_faults_and_conflicts(double, start_controller) -> None:
    _seed(double)
    # Somebody else's Service holds the name of a backend: that version stays out of the file
    # (feature-a requests fall back to the baseline) and the lane's status says why.
    theirs = service("reviews-feature-a")
    double.put(theirs)
    ctl = start_controller(data_plane="sidecar")
    double.wait_for(lambda: "reviews" in _routes(double), what="the ConfigMap")
    assert set(_routes(double)["reviews"]) == {"baseline"}
    double.wait_for(
        lambda: (
            "Service shop/reviews-feature-a"
            in str((double.get("TrafficLane", NS, "feature-a") or {}).get("status"))
        ),
        what="the conflict in the lane's status",
    )
    double.remove("Service", NS, "reviews-feature-a")
    double.wait_for(lambda: "feature-a" in _routes(double).get("reviews", {}), what="the takeover")
    # Writes fail (500s), the API server restarts mid-write: it converges, never breaking.
    settle(double, ctl)
    double.fail(6, status=500, when=lambda e: e.write and e.kind in ("Service", "ConfigMap"))
    double.put(deployment("ratings", "feature-a"))
    double.wait_for(
        lambda: "feature-a" in _routes(double).get("ratings", {}), what="convergence after 500s"
    )
    settle(double, ctl)
    double.restart_on(lambda e: e.write and e.kind == "Service", commit=True)
    double.put(deployment("ratings", "feature-b"))
    double.wait_for(
        lambda: "feature-b" in _routes(double).get("ratings", {}), what="convergence on restart"
    )
    assert make_before_break(double) == []


def test_plan_orders_and_names() -> None:
    long = "a-very-long-service-name-that-goes-on-and-on"
    topo = topology_from_dict(
        {
            "namespace": NS,
            "lanes": {"feature-with-an-even-longer-name": {}, "hotfix": {"strict": True}},
            "services": {
                long: {
                    "port": 80,
                    "versions": {"baseline": [], "feature-with-an-even-longer-name": []},
                }
            },
        }
    )
    plan = plan_sidecar(
        NS,
        topo,
        services=[service(long, port=80)],
        current_configmap=None,
        app_label="app",
        lane_label="lane",
        configmap_name=CM,
    )
    steps = [(a.step, a.kind) for a in plan.actions]
    assert steps == [("svc", "Service"), ("svc", "Service"), ("cm", "ConfigMap")]
    names = [a.name for a in plan.actions if a.kind == "Service"]
    assert all(len(n) <= 63 for n in names) and len(set(names)) == 2
    assert f"{long}-baseline" in names  # short enough: kept readable
    # Nothing routed any more: the ConfigMap goes first, then our Services.
    current = [
        {**a.body, "metadata": {**a.body["metadata"], "resourceVersion": "7"}} for a in plan.actions
    ]
    gone = plan_sidecar(
        NS,
        None,
        services=[service(long, port=80), *current[:2]],
        current_configmap=current[2],
        app_label="app",
        lane_label="lane",
        configmap_name=CM,
    )
    assert [(a.verb, a.kind) for a in gone.actions] == [
        ("delete", "ConfigMap"),
        ("delete", "Service"),
        ("delete", "Service"),
    ]
