"""TrafficCanaries in the controller's pure parts: which canary a namespace's topology carries,
what its status says, and the write plan when it appears, steps and goes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from k8s_objects import canary, deployment, lane, service

from lane_router import Canary, ContentMatch
from lane_router._controller import build_namespace, canary_status, desired_host, plan_host

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BASE = [deployment(s, "baseline") for s in ("reviews", "ratings")]


def model(canaries, deps=(), lanes=(), services=("reviews", "ratings")):
    return build_namespace(
        "shop",
        lanes=lanes,
        deployments=[*BASE, *deps],
        services=[service(s) for s in services],
        canaries=canaries,
        now=NOW,
        baseline="baseline",
        header="x-lane",
        baggage_key="lane",
    )


def aged(obj, minutes: int):
    obj["metadata"]["creationTimestamp"] = (NOW - timedelta(minutes=minutes)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    return obj


def test_an_available_canary_is_in_the_topology_for_baseline_traffic_only() -> None:
    match = [{"headers": {"X-User": {"prefix": "qa-"}}, "uri": {"exact": "/v2"}}]
    m = model(
        [canary("reviews-v2", "reviews", "v2", 10, match=match)],
        [deployment("reviews", "v2"), deployment("reviews", "a")],
        [lane("a")],
    )
    svc = m.topology.services["reviews"]
    want = Canary("v2", 10, (ContentMatch((("x-user", "prefix", "qa-"),), ("exact", "/v2")),))
    assert svc.canary == want
    assert set(svc.versions) == {"baseline", "a", "v2"}
    assert m.topology.lanes_of("reviews") == ("baseline", "a")  # a version, never a lane
    assert m.topology.resolve("reviews", None).canary == want
    assert m.topology.resolve("reviews", "a").canary is None  # lane traffic never diverted
    assert m.topology.services["ratings"].canary is None
    info = m.canaries["reviews-v2"]
    assert (info.routed, info.reason, info.weight, info.matches) == (True, "Routed", 10, 1)
    assert "10% of the rest" in info.message


@pytest.mark.parametrize("available", [0, None])
def test_a_canary_without_an_available_deployment_is_not_routed(available) -> None:
    deps = [] if available is None else [deployment("reviews", "v2", available=available)]
    m = model([canary("c", "reviews", "v2", 50)], deps)
    assert m.topology.services["reviews"].canary is None
    assert set(m.topology.services["reviews"].versions) == {"baseline"}
    info = m.canaries["c"]
    assert (info.routed, info.reason) == (False, "VersionNotAvailable")
    assert "app=reviews, lane=v2" in info.message


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"version": "a"}, "spec.version: 'a' is a TrafficLane"),
        ({"version": "gone"}, "spec.version: 'gone' is a TrafficLane"),  # an expired lane too
        ({"version": "baseline"}, "spec.version: 'baseline' is the baseline"),
        ({"weight": 150}, "spec.weight: must be a whole number 0-100, got 150"),
        ({"weight": -1}, "spec.weight: must be a whole number 0-100, got -1"),
        ({"match": [{"headers": {"x-lane": {"exact": "a"}}}]}, "spec.match[0].headers.x-lane"),
        ({"match": [{"uri": {"regex": "(?=x)y"}}]}, "spec.match[0].uri.regex"),
        ({"match": [{"uri": {"glob": "/x*"}}]}, "spec.match[0].uri: unknown match kind"),
        ({"match": [{"uri": {"prefix": "v2"}}]}, "spec.match[0].uri.prefix: a path starts with"),
        ({"match": [{}]}, "spec.match[0]: needs 'headers' or 'uri'"),
    ],
)
def test_an_invalid_canary_is_left_out_alone_and_its_status_names_the_key(spec, key) -> None:
    gone = aged(lane("gone", ttl="1h"), 120)
    bad = canary("bad", "reviews", "v2", 10)
    bad["spec"].update(spec)
    deps = [deployment("reviews", "a"), deployment("reviews", "v2"), deployment("ratings", "v3")]
    ok = canary("ok", "ratings", "v3", 20)
    m = model([bad, ok], deps, [lane("a"), gone])
    info = m.canaries["bad"]
    assert (info.routed, info.reason) == (False, "InvalidSpec")
    assert key in info.message
    # Everything else routes as without the bad canary.
    assert m.topology.services["reviews"].canary is None
    assert m.topology.lanes_of("reviews") == ("baseline", "a")
    assert m.canaries["ok"].routed and m.topology.services["ratings"].canary.weight == 20
    plain = model([ok], deps, [lane("a"), gone])
    assert dict(m.topology.routes) == dict(plain.topology.routes)


def test_the_oldest_canary_of_a_service_wins() -> None:
    deps = [deployment("reviews", "v2"), deployment("reviews", "v3")]
    m = model(
        [aged(canary("zz-first", "reviews", "v2", 5), 30), aged(canary("aa", "reviews", "v3"), 1)],
        deps,
    )
    assert m.topology.services["reviews"].canary.version == "v2"
    info = m.canaries["aa"]
    assert (info.routed, info.reason) == (False, "Duplicate")
    assert "zz-first" in info.message


def test_a_canary_of_a_missing_service_says_so() -> None:
    m = model([canary("c", "details", "v2", 5)], [deployment("details", "v2")])
    info = m.canaries["c"]
    assert (info.routed, info.reason) == (False, "ServiceNotFound")
    assert "details" not in m.topology.services


def _status(obj, m, **kw):
    return canary_status(
        obj, m, conflicts=kw.get("conflicts", {}), failed=kw.get("failed", set()), now=NOW
    )


def test_status_reports_the_routed_weight_only_while_routes_carry_it() -> None:
    obj = canary("c", "reviews", "v2", 30)
    obj["metadata"]["generation"] = 3
    m = model([obj], [deployment("reviews", "v2")])
    st = _status(obj, m)
    assert (st["observedWeight"], st["matches"], st["observedGeneration"]) == (30, 0, 3)
    (ready,) = st["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Routed")
    clash = _status(obj, m, conflicts={"reviews": ("VirtualService shop/mine",)})
    assert "observedWeight" not in clash
    assert clash["conditions"][0]["reason"] == "Conflict"
    assert "VirtualService shop/mine" in clash["conditions"][0]["message"]
    failed = _status(obj, m, failed={"reviews"})
    assert failed["conditions"][0]["reason"] == "ApplyFailed" and "observedWeight" not in failed
    # A canary on another host is not affected by this host's conflict.
    assert "observedWeight" in _status(obj, m, conflicts={"ratings": ("x",)})
    waiting = _status(obj, model([], [deployment("reviews", "v2")]))
    assert waiting["conditions"][0]["reason"] == "Pending"
    # The transition time stays while the status does not flip.
    again = _status(
        {**obj, "status": st},
        m,
    )
    assert again["conditions"][0]["lastTransitionTime"] == ready["lastTransitionTime"]


def _host(deployed, c):
    deps = [deployment("reviews", x) for x in sorted(deployed)]
    deps += [deployment("reviews", v) for v in ("v2", "v3")]
    m = model([c] if c else [], deps, [lane("a"), lane("b")])
    return desired_host(m.topology, "reviews", lane_label="lane", export_to=["."])


def _steps(plan):
    return [(a.verb, a.kind, a.step) for a in plan.actions]


def test_plan_canary_appears_subset_first_steps_rewrite_the_vs_only_abort_routes_first() -> None:
    none = _host({"a"}, None)
    ten = _host({"a"}, canary("c", "reviews", "v2", 10))
    fifty = _host({"a"}, canary("c", "reviews", "v2", 50))
    appear = plan_host("shop", "reviews", desired=ten, current_dr=none[0], current_vs=none[1])
    assert _steps(appear) == [("apply", "DestinationRule", "dr"), ("apply", "VirtualService", "vs")]
    step = plan_host("shop", "reviews", desired=fifty, current_dr=ten[0], current_vs=ten[1])
    assert _steps(step) == [("apply", "VirtualService", "vs")]
    abort = plan_host("shop", "reviews", desired=none, current_dr=fifty[0], current_vs=fifty[1])
    assert _steps(abort) == [
        ("apply", "VirtualService", "vs"),
        ("apply", "DestinationRule", "dr-trim"),
    ]


_canaries = st.one_of(
    st.none(),
    st.builds(
        lambda version, weight, matched: canary(
            "c",
            "reviews",
            version,
            weight,
            match=[{"headers": {"x-user": {"exact": "qa"}}}] if matched else [],
        ),
        st.sampled_from(["v2", "v3"]),
        st.sampled_from([0, 1, 50, 99, 100]),
        st.booleans(),
    ),
)
_lanes = st.frozensets(st.sampled_from(["a", "b"]))


@settings(max_examples=150, deadline=None)
@given(old_lanes=_lanes, new_lanes=_lanes, old=_canaries, new=_canaries, fresh=st.booleans())
def test_canary_plans_never_route_to_a_missing_subset_and_converge(
    old_lanes, new_lanes, old, new, fresh
) -> None:
    """Whatever the canary was (none, another version, any weight) and whatever it becomes,
    with lanes changing too, each step keeps every routed subset in the DestinationRule."""
    cur_dr, cur_vs = (None, None) if fresh else _host(old_lanes, old)
    want = _host(new_lanes, new)
    plan = plan_host("shop", "reviews", desired=want, current_dr=cur_dr, current_vs=cur_vs)
    dr, vs = cur_dr, cur_vs
    for action in plan.actions:
        if action.kind == "DestinationRule":
            dr = action.body
        else:
            vs = action.body
        http = vs["spec"]["http"] if vs is not None else []
        routed = {d["destination"]["subset"] for r in http for d in r.get("route", [])}
        assert routed <= {s["name"] for s in dr["spec"]["subsets"]}, _steps(plan)
    assert (dr["spec"], vs["spec"]) == (want[0]["spec"], want[1]["spec"])
    assert plan_host("shop", "reviews", desired=want, current_dr=dr, current_vs=vs).actions == ()
