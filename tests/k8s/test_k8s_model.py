"""The controller's pure parts: cluster objects to a topology, and the write plan for a host."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from k8s_objects import deployment, lane, service

from lane_router._controller import (
    build_namespace,
    desired_host,
    host_keys,
    parse_ttl,
    plan_host,
    status_patch,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def model(lanes, deps, services=("reviews", "ratings")):
    return build_namespace(
        "shop",
        lanes=lanes,
        deployments=deps,
        services=[service(s) for s in services],
        now=NOW,
        baseline="baseline",
        header="x-lane",
        baggage_key="lane",
    )


def created(obj, ago: timedelta):
    obj["metadata"]["creationTimestamp"] = (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")
    return obj


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("1h30m", 5400),
        ("7d", 604800),
        ("", None),
        ("5", None),
        ("1h 2m", None),
        ("h", None),
        (None, None),
        ("1x", None),
        ("365d", 31536000),  # the bound (the CRD says so too)
        ("366d", None),
        ("3000000d", None),  # overflowed the expiry date and stopped every reconcile
        ("1" * 40 + "s", None),  # longer than the CRD's maxLength
    ],
)
def test_parse_ttl(text, seconds) -> None:
    got = parse_ttl(text)
    assert (got.total_seconds() if got else None) == seconds


def test_expired_lane_is_skipped_in_fallback_chains() -> None:
    m = model(
        [
            created(lane("a", ttl="1h"), timedelta(hours=2)),
            lane("b", fallback="a"),
            created(lane("c", ttl="1h"), timedelta(minutes=10)),
        ],
        [
            deployment("reviews", "baseline"),
            deployment("reviews", "a"),
            deployment("reviews", "b"),
            deployment("ratings", "baseline"),
        ],
    )
    assert m.lanes["a"].expired and not m.lanes["a"].live
    assert m.topology.chains["b"] == ("b", "baseline")
    assert "a" not in m.topology.services["reviews"].versions
    assert m.next_expiry == NOW + timedelta(minutes=50)


def test_a_bad_lane_is_left_out_alone() -> None:
    m = model(
        [lane("x", fallback="y"), lane("y", fallback="x"), lane("z", fallback="nope"), lane("ok")],
        [
            deployment("reviews", "baseline"),
            deployment("reviews", "x"),
            deployment("reviews", "ok"),
            deployment("ratings", "baseline"),
        ],
    )
    assert set(m.topology.lanes) == {"ok"}
    assert "cycle" in m.lanes["x"].problem and "cycle" in m.lanes["y"].problem
    assert "unknown lane 'nope'" in m.lanes["z"].problem
    assert m.lanes["ok"].services == ("reviews",)


def test_only_available_labelled_versions_of_real_services_count() -> None:
    m = model(
        [lane("a")],
        [
            deployment("reviews", "baseline"),
            deployment("reviews", "a", available=0),
            deployment("ratings", "baseline"),
            deployment("ratings", "undeclared"),
            deployment("orphan", "baseline"),
            deployment("nobase", "a"),
        ],
        services=("reviews", "ratings", "nobase"),
    )
    assert dict(m.topology.services["reviews"].versions) == {"baseline": ()}
    assert set(m.topology.services) == {"reviews", "ratings"}
    assert m.skipped == ("nobase: no 'baseline' version",)


def _desired(lanes_deployed):
    deps = [deployment("reviews", "baseline"), deployment("ratings", "baseline")]
    deps += [deployment("reviews", x) for x in lanes_deployed]
    m = model([lane("a"), lane("b")], deps)
    return desired_host(m.topology, "reviews", lane_label="lane", export_to=["."])


def _steps(plan):
    return [(a.verb, a.kind, a.step) for a in plan.actions]


def test_plan_new_host_subsets_first() -> None:
    dr, vs = _desired(["a"])
    plan = plan_host("shop", "reviews", desired=(dr, vs), current_dr=None, current_vs=None)
    assert _steps(plan) == [("apply", "DestinationRule", "dr"), ("apply", "VirtualService", "vs")]
    assert not any(a.force for a in plan.actions)


def test_plan_swap_applies_the_union_then_routes_then_trims() -> None:
    old_dr, old_vs = _desired(["a"])
    dr, vs = _desired(["b"])
    plan = plan_host("shop", "reviews", desired=(dr, vs), current_dr=old_dr, current_vs=old_vs)
    assert _steps(plan) == [
        ("apply", "DestinationRule", "dr-union"),
        ("apply", "VirtualService", "vs"),
        ("apply", "DestinationRule", "dr-trim"),
    ]
    union = {s["name"] for s in plan.actions[0].body["spec"]["subsets"]}
    assert union == {"baseline", "a", "b"}
    assert all(a.force for a in plan.actions)


def test_plan_removal_routes_first_and_no_op_when_equal() -> None:
    old_dr, old_vs = _desired(["a"])
    dr, vs = _desired([])
    plan = plan_host("shop", "reviews", desired=(dr, vs), current_dr=old_dr, current_vs=old_vs)
    assert _steps(plan) == [
        ("apply", "VirtualService", "vs"),
        ("apply", "DestinationRule", "dr-trim"),
    ]
    same = plan_host("shop", "reviews", desired=(dr, vs), current_dr=dr, current_vs=vs)
    assert same.actions == () and same.conflicts == ()
    gone = plan_host("shop", "reviews", desired=None, current_dr=dr, current_vs=vs)
    assert [(a.verb, a.kind) for a in gone.actions] == [
        ("delete", "VirtualService"),
        ("delete", "DestinationRule"),
    ]


def test_plan_never_touches_an_object_without_the_label() -> None:
    dr, vs = _desired(["a"])
    theirs = {**vs, "metadata": {**vs["metadata"], "labels": {}}}
    plan = plan_host("shop", "reviews", desired=(dr, vs), current_dr=dr, current_vs=theirs)
    assert plan.actions == () and plan.conflicts == ("VirtualService shop/reviews",)
    gone = plan_host("shop", "reviews", desired=None, current_dr=None, current_vs=theirs)
    assert gone.actions == ()


@pytest.mark.parametrize(
    ("hosts", "want"),
    [
        (["reviews"], {"reviews"}),
        (["reviews.shop"], {"reviews"}),
        (["reviews.shop.svc.cluster.local"], {"reviews"}),
        (["reviews.blog"], set()),
        (["example.com"], set()),
        (["*"], {"*"}),
    ],
)
def test_host_keys(hosts, want) -> None:
    vs = {"kind": "VirtualService", "metadata": {"namespace": "shop"}, "spec": {"hosts": hosts}}
    assert host_keys(vs) == want


def test_status_patch_nulls_removed_keys() -> None:
    assert status_patch({"a": 1}, {"a": 1}) is None
    assert status_patch({"a": 1, "conflicts": ["x"]}, {"a": 2}) == {"a": 2, "conflicts": None}


LANES = ("a", "b", "c", "d")


def _host(deployed: frozenset[str], strict: frozenset[str], export: bool):
    deps = [deployment("reviews", "baseline"), deployment("ratings", "baseline")]
    deps += [deployment("reviews", x) for x in sorted(deployed)]
    lanes_ = [lane(x, strict=True) if x in strict else lane(x) for x in LANES]
    m = model(lanes_, deps)
    return desired_host(
        m.topology, "reviews", lane_label="lane", export_to=["."] if export else None
    )


def _names(dr):
    return {s["name"] for s in (dr or {}).get("spec", {}).get("subsets", [])}


def _routed(vs):
    return {
        d["destination"]["subset"]
        for r in (vs or {}).get("spec", {}).get("http", [])
        for d in r.get("route", [])
    }


_sets = st.frozensets(st.sampled_from(LANES))


@settings(max_examples=200, deadline=None)
@given(
    old=_sets,
    new=_sets,
    old_strict=_sets,
    new_strict=_sets,
    ex1=st.booleans(),
    ex2=st.booleans(),
    fresh=st.booleans(),
    gone=st.booleans(),
)
def test_plans_never_route_to_a_missing_subset_and_reach_the_goal(
    old, new, old_strict, new_strict, ex1, ex2, fresh, gone
) -> None:
    """Whatever the cluster held and whatever is wanted now, executing the plan step by step
    never has the VirtualService name a subset its DestinationRule lacks, and ends at the goal."""
    cur_dr, cur_vs = (None, None) if fresh else _host(old, old_strict, ex1)
    want = None if gone else _host(new, new_strict, ex2)
    plan = plan_host("shop", "reviews", desired=want, current_dr=cur_dr, current_vs=cur_vs)
    dr, vs = cur_dr, cur_vs
    for action in plan.actions:
        if action.verb == "delete":
            dr, vs = (None, vs) if action.kind == "DestinationRule" else (dr, None)
        elif action.kind == "DestinationRule":
            dr = action.body
        else:
            vs = action.body
        assert _routed(vs) <= _names(dr), [a.step for a in plan.actions]
    if want is None:
        assert (dr, vs) == (None, None)
    else:
        assert (dr["spec"], vs["spec"]) == (want[0]["spec"], want[1]["spec"])
    again = plan_host("shop", "reviews", desired=want, current_dr=dr, current_vs=vs)
    assert again.actions == ()  # converged: nothing more to write
    assert len(plan.actions) <= 3
