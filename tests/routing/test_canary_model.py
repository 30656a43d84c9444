"""The canary model: what the file may say, where a canary applies, and the reference decision."""

from __future__ import annotations

import pytest
from canary_corpus import CANARY_YAML, topology

from lane_router import (
    Canary,
    ContentMatch,
    Lane,
    Service,
    Topology,
    TopologyError,
    loads_topology,
    topology_from_dict,
    topology_to_dict,
)

TOPO = topology()

BASE = """\
lanes: {feature-a: {}}
services:
  web:
    versions: {baseline: [], feature-a: [], v2: []}
    canary:
"""


def _problems(canary_yaml: str) -> str:
    with pytest.raises(TopologyError) as info:
        loads_topology(BASE + canary_yaml, source="lanes.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    ("canary", "fragment"),
    [
        ("      version: v3\n      weight: 5\n", "services.web.canary.version (line 6): unknown"),
        ("      version: feature-a\n", "'feature-a' is a lane"),
        ("      version: baseline\n", "'baseline' is a lane"),
        ("      version: v2\n      weight: 101\n", "services.web.canary.weight (line 7): must be"),
        ("      version: v2\n      weight: -1\n", "canary.weight (line 7)"),
        ("      version: v2\n      weight: 2.5\n", "canary.weight (line 7)"),
        ("      version: v2\n      weight: true\n", "canary.weight (line 7)"),
        ("      version: v2\n      wieght: 5\n", "canary.wieght (line 7): unknown key"),
        ("      weight: 5\n", "canary.version"),
        ("      version: v2\n      match: [{}]\n", "match[0] (line 7): needs 'headers' or 'uri'"),
        (
            "      version: v2\n      match: [{headers: {x-a: {glob: a*}}}]\n",
            "match[0].headers.x-a (line 7): unknown match kind 'glob'",
        ),
        (
            "      version: v2\n      match: [{headers: {x-a: {exact: a, prefix: b}}}]\n",
            "match[0].headers.x-a (line 7): must be exactly one",
        ),
        (
            "      version: v2\n      match: [{headers: {x-lane: {exact: a}}}]\n",
            "the lane header selects lanes",
        ),
        (
            "      version: v2\n      match: [{headers: {x-a: {regex: '(?=a)a'}}}]\n",
            "look-around",
        ),
        ("      version: v2\n      match: [{uri: {regex: '(a'}}]\n", "invalid regex"),
        (
            "      version: v2\n      match: [{headers: {method: {exact: GET}}}]\n",
            "headers.method (line 7): Istio ignores",
        ),
        (
            "      version: v2\n      match: [{uri: {regex: '" + "a" * 1025 + "'}}]\n",
            "uri.regex (line 7): longer than 1024 characters",
        ),
        ("      version: v2\n      match: [{uri: {prefix: beta}}]\n", "starts with '/'"),
        ("      version: v2\n      match: [{uri: {exact: '/a?b=1'}}]\n", "holds no '?'"),
        ("      version: v2\n      match: {uri: {exact: /a}}\n", "canary.match (line 7)"),
        ("      [v2]\n", "services.web.canary (line 5): must be a mapping"),
    ],
)
def test_bad_canaries_are_errors_naming_the_key(canary: str, fragment: str) -> None:
    assert fragment in _problems(canary)


def test_a_canary_version_is_not_an_unknown_lane_but_other_extra_versions_are() -> None:
    assert "versions.v2 (line 4): unknown lane" in _problems("      null\n")
    loads_topology(BASE + "      {version: v2}\n")  # valid: weight 0, no match


def test_build_validates_canaries_too() -> None:
    with pytest.raises(TopologyError, match=r"services\.web\.canary\.weight"):
        Topology.build(
            lanes=[],
            services=[Service("web", {"baseline": (), "v2": ()}, canary=Canary("v2", 200))],
        )
    with pytest.raises(TopologyError, match="is a lane"):
        Topology.build(
            lanes=[Lane("v2")],
            services=[Service("web", {"baseline": (), "v2": ()}, canary=Canary("v2", 5))],
        )


def test_resolution_carries_the_canary_only_for_the_baseline() -> None:
    table = TOPO.routes["reviews"]
    canary = TOPO.services["reviews"].canary
    assert table["baseline"].canary is canary
    for lane in TOPO.lanes:  # feature-c and idle fall back to the baseline: still no canary
        assert table[lane].canary is None, lane
    assert table["feature-c"].serving == "baseline"
    assert TOPO.resolve("reviews", None).canary is canary
    assert TOPO.resolve("reviews", "nope").canary is canary  # undeclared lane = baseline
    assert TOPO.resolve("reviews", "Feature-A").canary is canary
    assert TOPO.routes["productpage"]["baseline"].canary is None
    # The canary version is not a lane: it never appears in a walk.
    assert all("v2" not in r.candidates for r in table.values())


def _headers(pairs: dict[str, list[str]]):
    return lambda name: pairs.get(name, [])


def test_takes_content_matches_first_then_the_weight() -> None:
    canary = TOPO.services["reviews"].canary
    assert canary.weight == 10
    h = _headers({})
    assert canary.takes(h, "/", 0.0999) and not canary.takes(h, "/", 0.1)
    assert canary.takes(_headers({"x-canary": ["1"]}), "/", 0.99)
    assert canary.takes(_headers({"x-canary": ["0", "1"]}), "/", 0.99)  # any field line
    assert not canary.takes(_headers({"x-canary": ["11"]}), "/", 0.99)
    assert canary.takes(h, "/beta/x", 0.99) and not canary.takes(h, "/beta", 0.99)
    both = _headers({"x-user": ["alice-1"], "x-tenant": ["acme"]})
    assert canary.takes(both, "/cart", 0.99)  # all three conditions hold
    assert not canary.takes(both, "/cart/1", 0.99)  # uri exact fails
    assert not canary.takes(_headers({"x-user": ["alice-1"]}), "/cart", 0.99)  # AND
    assert not canary.takes(
        _headers({"x-user": ["alice-1x"], "x-tenant": ["acme"]}), "/cart", 0.99
    )  # regex is a full match


@pytest.mark.parametrize(("weight", "share"), [(0, 0), (1, 1), (10, 10), (50, 50), (100, 100)])
def test_weight_is_a_percentage_of_the_unmatched_requests(weight: int, share: int) -> None:
    canary = Canary("v2", weight, (ContentMatch(uri=("exact", "/x")),))
    rolls = [i / 1000 for i in range(1000)]
    assert sum(canary.takes(_headers({}), "/", r) for r in rolls) == share * 10


def test_round_trip_through_to_dict_keeps_the_canary() -> None:
    again = topology_from_dict(topology_to_dict(TOPO))
    for name, svc in TOPO.services.items():
        assert again.services[name].canary == svc.canary
    assert "canary" in CANARY_YAML
