"""The example Applications end to end, short of a real KubeVela: the traits' outputs and pod
labels and the workflow steps' ``#Apply`` values (from the real CUE evaluator) go to the API
double, the real controller routes them, and the VirtualService it writes sends requests where
docs/design.md says. The test plays KubeVela's part: it builds the Deployments the webservice
components would, fills each action's ``$returns`` from the double, and re-evaluates a step until
its ``#ConditionalWait`` continues (a real KubeVela re-runs the step the same way)."""

from __future__ import annotations

from typing import Any

from k8s_checks import converged, settle, violations
from k8s_objects import NS, deployment, service
from routing.routing_eval import istio_outcome
from vela_cue import Case, evaluate
from vela_defs import STEP_CONTEXT, example, returns, template, trait_context

STEPS = {"canary-rollout-content", "canary-rollout-weight", "canary-promote", "canary-abort"}
ANON: list[tuple[str, str]] = []
JASON = [("end-user", "jason")]
LANE_A = [("x-lane", "feature-a")]


def _eval(definition: str, parameter: dict[str, Any], context: dict, extra: str = "") -> dict:
    (got,) = evaluate([Case(template(definition), parameter, context, extra)])
    assert got.ok, f"{definition}: {got.error}"
    return got.value


def _components(double, app: dict[str, Any]) -> None:
    """What KubeVela deploys for the webservice components with our traits: a Deployment per
    component (pod labels patched by the trait) and each trait's outputs."""
    rows = [(comp, trait) for comp in app["spec"]["components"] for trait in comp.get("traits", ())]
    cases = [
        Case(template(t["type"]), t.get("properties", {}), trait_context(c["name"]))
        for c, t in rows
    ]
    for (comp, _), got in zip(rows, evaluate(cases), strict=True):
        assert got.ok, got.error
        for obj in (got.value.get("outputs") or {}).values():
            double.put(obj, manager="kubevela")
        labels = {"app.oam.dev/component": comp["name"]}
        pod = labels | got.value["patch"]["spec"]["template"]["metadata"]["labels"]
        double.put(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": comp["name"], "namespace": NS, "labels": labels},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": pod},
                        "spec": {
                            "containers": [
                                {"name": comp["name"], "image": comp["properties"]["image"]}
                            ]
                        },
                    },
                },
                "status": {"replicas": 1, "availableReplicas": 1},
            },
            manager="kubevela",
        )


def _run_step(double, ctl, step: dict[str, Any]) -> dict[str, Any]:
    """One addon step as KubeVela's workflow engine runs it, to the end of its wait."""
    kind, params = step["type"], step.get("properties", {})
    rets: dict[str, Any] = {}
    first = _eval(kind, params, STEP_CONTEXT)
    if "read" in first:  # the kube provider reads before the apply that uses it
        want = first["read"]["$params"]["value"]
        md = want["metadata"]
        cur = double.get(want["kind"], md["namespace"], md["name"])
        rets["read"] = {"value": cur} if cur else {"err": f"{md['name']} not found"}
    obj = _eval(kind, params, STEP_CONTEXT, returns(**rets))["apply"]["$params"]["value"]
    key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
    double.put(obj, manager="kubevela")

    def observed() -> bool:
        cur = double.get(*key) or {}
        st = cur.get("status") or {}
        return st.get("observedGeneration") == cur["metadata"].get("generation")

    double.wait_for(observed, what=f"the controller to see step {step['name']}")
    settle(double, ctl)
    rets["apply"] = {"value": double.get(*key)}
    done = _eval(kind, params, STEP_CONTEXT, returns(**rets))
    assert "fail" not in done, done["fail"]
    assert done["wait"]["$params"]["continue"] is True, done["wait"]["$params"]["message"]
    if "remove" in done:
        double.remove(*key)
        settle(double, ctl)
    return done


def _subset(double, host: str, version: str) -> str | None:
    dr = double.get("DestinationRule", NS, host) or {}
    return next(
        (
            s["name"]
            for s in dr.get("spec", {}).get("subsets", [])
            if s["labels"] == {"lane": version}
        ),
        None,
    )


def _where(double, host: str, headers: list[tuple[str, str]]) -> tuple[tuple[str, int], ...]:
    """(subset, weight) pairs a request to ``host`` with ``headers`` goes to."""
    vs = double.get("VirtualService", NS, host)
    return istio_outcome(vs["spec"], headers).split


def test_bookinfo_canary_workflow_routes_as_the_model_says(double, start_controller) -> None:
    app = example("bookinfo-canary.yaml")
    for s in ("productpage", "ratings"):
        double.put(service(s))
        double.put(deployment(s, "baseline"))
    double.put(
        {
            "apiVersion": "lanes.traffic-lanes.io/v1alpha1",
            "kind": "TrafficLane",
            "metadata": {"name": "feature-a", "namespace": NS},
            "spec": {},
        }
    )
    double.put(deployment("reviews", "feature-a"))
    _components(double, app)  # reviews (baseline, its Service) and reviews-v2 (pods lane=v2)
    ctl = start_controller()
    double.wait_for(lambda: _subset(double, "reviews", "feature-a"), what="the lane's subset")
    settle(double, ctl)
    base, lane_a = _subset(double, "reviews", "baseline"), _subset(double, "reviews", "feature-a")
    assert _where(double, "reviews", ANON) == ((base, 100),)
    assert _subset(double, "reviews", "v2") is None  # no canary yet: no subset

    steps = [s for s in app["spec"]["workflow"]["steps"] if s["type"] in STEPS]
    assert [s["name"] for s in steps] == [
        "jason-first",
        "weight-10",
        "weight-50",
        "weight-100",
        "promote",
    ]
    expected = {  # after each step: (jason, anyone else) as the canary semantics say
        "jason-first": ("v2", (("baseline", 100),)),
        "weight-10": ("v2", (("baseline", 90), ("v2", 10))),
        "weight-50": ("v2", (("baseline", 50), ("v2", 50))),
        "weight-100": ("v2", (("v2", 100),)),
        "promote": ("v2", (("v2", 100),)),
    }
    for step in steps:
        _run_step(double, ctl, step)
        v2 = _subset(double, "reviews", "v2")
        names = {"baseline": base, "v2": v2}
        jason, others = expected[step["name"]]
        assert _where(double, "reviews", JASON) == ((names[jason], 100),), step["name"]
        assert _where(double, "reviews", ANON) == tuple((names[v], w) for v, w in others)
        # Lane traffic never reaches the canary, even with the canary's header.
        assert _where(double, "reviews", [*LANE_A, *JASON]) == ((lane_a, 100),)
        assert _where(double, "ratings", JASON) == ((_subset(double, "ratings", "baseline"), 100),)
        assert converged(double, NS)
    tc = double.get("TrafficCanary", NS, "reviews-v2")
    assert "match" not in tc["spec"] and tc["status"]["matches"] == 0  # promote drops them

    # Then (after rolling the baseline to v2's image): abort with remove, make-before-break.
    abort = {
        "name": "cleanup",
        "type": "canary-abort",
        "properties": {"component": "reviews", "versions": {"newVersion": "v2"}, "remove": True},
    }
    _run_step(double, ctl, abort)
    double.wait_for(lambda: _subset(double, "reviews", "v2") is None, what="the v2 subset to go")
    settle(double, ctl)
    assert double.get("TrafficCanary", NS, "reviews-v2") is None
    assert _where(double, "reviews", JASON) == ((base, 100),)
    assert converged(double, NS)
    assert violations(double, NS) == []  # no route ever named a missing subset


def test_lane_example_puts_two_components_into_feature_a(double, start_controller) -> None:
    for s in ("productpage", "reviews", "ratings"):
        double.put(service(s))
        double.put(deployment(s, "baseline"))
    _components(double, example("lane-feature-a.yaml"))
    lane = double.get("TrafficLane", NS, "feature-a")
    assert lane["spec"] == {"ttl": "7d", "description": "new review ranking"}
    ctl = start_controller()
    double.wait_for(lambda: _subset(double, "ratings", "feature-a"), what="the lane's subsets")
    settle(double, ctl)
    for host in ("reviews", "ratings"):
        assert _where(double, host, LANE_A) == ((_subset(double, host, "feature-a"), 100),)
        assert _where(double, host, ANON) == ((_subset(double, host, "baseline"), 100),)
    # productpage has no feature-a version: the lane falls back to the baseline there.
    assert _where(double, "productpage", LANE_A) == (
        (_subset(double, "productpage", "baseline"), 100),
    )
    assert converged(double, NS)


def test_canary_trait_example_routes_as_the_model_says(double, start_controller) -> None:
    double.put(service("ratings"))
    double.put(deployment("ratings", "baseline"))
    _components(double, example("reviews-canary-trait.yaml"))
    ctl = start_controller()
    double.wait_for(lambda: _subset(double, "reviews", "v2"), what="the canary's subset")
    settle(double, ctl)
    base, v2 = _subset(double, "reviews", "baseline"), _subset(double, "reviews", "v2")
    assert _where(double, "reviews", JASON) == ((v2, 100),)
    assert _where(double, "reviews", ANON) == ((base, 90), (v2, 10))
    tc = double.get("TrafficCanary", NS, "reviews-v2")
    assert (tc["status"]["observedWeight"], tc["status"]["matches"]) == (10, 1)
    assert converged(double, NS)
