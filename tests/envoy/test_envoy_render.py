"""The rendered bootstrap: accepted by Envoy itself, shaped as the contract says, deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from envoyproc import EnvoyError, validate_bootstrap

from lane_router import Topology, topology_from_dict
from lane_router.render.envoy import LUA_FILTER, cluster_name, lua_source, render_envoy

IDEMPOTENT = "GET|HEAD|OPTIONS|TRACE|PUT|DELETE"  # RFC 9110 9.2.2

ROOT = Path(__file__).resolve().parents[2]

DOC = {
    "namespace": "shop",
    "lanes": {
        "feature-a": {},
        "feature-b": {"fallback": "feature-a"},
        "hotfix": {"strict": True},
        "quiet": {},
    },
    "services": {
        "reviews": {
            "port": 9080,
            "versions": {
                "baseline": ["127.0.0.1:9081", "127.0.0.1:9082"],
                "feature-a": ["[::1]:9083"],
                "hotfix": ["reviews-hotfix.shop.svc.cluster.local:9080"],
            },
        },
        "ratings": {
            "namespace": "other",
            "versions": {"baseline": ["127.0.0.1:9091"], "feature-b": []},
        },
    },
}


def _reordered(doc: dict) -> dict:
    """The same topology with every mapping in reverse declaration order."""
    if isinstance(doc, dict):
        return {k: _reordered(doc[k]) for k in reversed(list(doc))}
    return doc


def _hcm(bootstrap: dict) -> dict:
    return bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]


def _vhost(bootstrap: dict, name: str) -> dict:
    (vhost,) = [v for v in _hcm(bootstrap)["route_config"]["virtual_hosts"] if v["name"] == name]
    return vhost


def _clusters(bootstrap: dict) -> dict[str, dict]:
    return {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}


@pytest.fixture(scope="module")
def topo() -> Topology:
    return topology_from_dict(DOC)


def test_envoy_accepts_the_bootstrap(topo: Topology, tmp_path: Path) -> None:
    validate_bootstrap(render_envoy(topo), workdir=tmp_path)
    validate_bootstrap(
        render_envoy(topo, listen="[::1]:15001", admin=None, health_check_interval=2.5),
        workdir=tmp_path,
    )


def test_validation_really_rejects_a_broken_bootstrap(topo: Topology, tmp_path: Path) -> None:
    broken = render_envoy(topo)
    _vhost(broken, "reviews")["routes"][0]["route"] = {"cluster": "reviews|nowhere"}
    with pytest.raises(EnvoyError, match="nowhere"):
        validate_bootstrap(broken, workdir=tmp_path)


def test_same_input_gives_byte_identical_output(topo: Topology) -> None:
    other = topology_from_dict(_reordered(DOC))
    a, b = render_envoy(topo), render_envoy(other)
    assert json.dumps(a) == json.dumps(b)
    assert yaml.safe_dump(a, sort_keys=False) == yaml.safe_dump(b, sort_keys=False)


def test_virtual_host_domains(topo: Topology) -> None:
    bootstrap = render_envoy(topo)
    assert _vhost(bootstrap, "reviews")["domains"] == [
        "reviews",
        "reviews:9080",
        "reviews.shop",
        "reviews.shop:9080",
        "reviews.shop.svc",
        "reviews.shop.svc:9080",
        "reviews.shop.svc.cluster.local",
        "reviews.shop.svc.cluster.local:9080",
    ]
    assert "ratings.other.svc.cluster.local:80" in _vhost(bootstrap, "ratings")["domains"]


def test_routes_lane_matches_then_baseline_default(topo: Topology) -> None:
    routes = _vhost(render_envoy(topo), "reviews")["routes"]
    names = [r["name"] for r in routes]
    # quiet deploys nothing: the baseline default answers it, no route of its own. Each target
    # has a route for idempotent methods (replayed after a reset) and one for the rest.
    assert names == [
        f"reviews/{lane}{suffix}"
        for lane in ("feature-a", "feature-b", "hotfix", "baseline")
        for suffix in ("", "/no-replay")
    ]
    methods = {"name": ":method", "string_match": {"safe_regex": {"regex": IDEMPOTENT}}}
    for replay, other in zip(routes[:-2:2], routes[1:-2:2], strict=True):
        lane = replay["name"].split("/")[1]
        by_lane = {"name": "x-lane", "string_match": {"exact": lane}}
        assert replay["match"]["headers"] == [by_lane, methods]
        assert other["match"]["headers"] == [by_lane]
        assert replay["route"]["cluster"] == other["route"]["cluster"]
        assert "reset" in replay["route"]["retry_policy"]["retry_on"].split(",")
        assert "reset" not in other["route"]["retry_policy"]["retry_on"].split(",")
    assert routes[-2]["match"]["headers"] == [methods]
    assert "headers" not in routes[-1]["match"]
    assert routes[-1]["route"]["cluster"] == "reviews|baseline"
    # feature-b falls back to feature-a, then the baseline: one cluster over the walk.
    assert routes[2]["route"]["cluster"] == "reviews|feature-a>baseline"
    assert routes[4]["route"]["cluster"] == "reviews|hotfix"  # strict: no fallback


def test_strict_miss_is_a_direct_503(topo: Topology) -> None:
    routes = _vhost(render_envoy(topo), "ratings")["routes"]
    (hotfix,) = [r for r in routes if r["name"] == "ratings/hotfix"]
    assert hotfix["direct_response"]["status"] == 503
    assert "hotfix" in hotfix["direct_response"]["body"]["inline_string"]
    assert "ratings" in hotfix["direct_response"]["body"]["inline_string"]


def test_a_cluster_per_version_and_per_walk(topo: Topology) -> None:
    clusters = _clusters(render_envoy(topo))
    assert sorted(clusters) == sorted(
        [
            "reviews|baseline",
            "reviews|feature-a",
            "reviews|hotfix",
            "reviews|feature-a>baseline",
            "ratings|baseline",
            "ratings|feature-b",
            "ratings|feature-b>baseline",
        ]
    )
    for svc, table in topo.routes.items():
        for res in table.values():
            if len(res.candidates) > 1:
                agg = clusters[cluster_name(svc, res.candidates)]["cluster_type"]["typed_config"]
                assert agg["clusters"] == [cluster_name(svc, lane) for lane in res.candidates]
    ipv6 = clusters["reviews|feature-a"]
    assert ipv6["type"] == "STATIC"
    sock = ipv6["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert sock == {"socket_address": {"address": "::1", "port_value": 9083}}
    assert clusters["reviews|hotfix"]["type"] == "STRICT_DNS"  # a host name, not an address
    # feature-b deploys ratings with no endpoint yet: an empty version the walk passes over.
    assert clusters["ratings|feature-b"]["load_assignment"]["endpoints"][0]["lb_endpoints"] == []


def test_runtime_http10_and_json_errors(topo: Topology) -> None:
    bootstrap = render_envoy(topo)
    (layer,) = bootstrap["layered_runtime"]["layers"]
    assert layer["static_layer"]["re2.max_program_size.error_level"] == 32768
    assert layer["static_layer"]["re2.max_program_size.warn_level"] == 32768
    hcm = _hcm(bootstrap)
    assert hcm["http_protocol_options"]["accept_http_10"] is True
    fmt = hcm["local_reply_config"]["body_format"]
    assert fmt["content_type"] == "application/json"
    assert fmt["json_format"]["lane"] == "%REQ(x-lane)%"


def test_addresses(topo: Topology) -> None:
    bootstrap = render_envoy(topo, listen="[::1]:15001", admin="127.0.0.1:0")
    listener = bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener == {"address": "::1", "port_value": 15001}
    assert bootstrap["admin"]["address"]["socket_address"]["port_value"] == 0
    assert "admin" not in render_envoy(topo, admin=None)
    for bad in ("localhost:15001", "::1:15001", "[127.0.0.1]:1", "127.0.0.1", "127.0.0.1:70000"):
        with pytest.raises(ValueError, match="listen"):
            render_envoy(topo, listen=bad)


def test_lua_is_the_shipped_filter_bound_to_the_topology() -> None:
    topo = topology_from_dict({**DOC, "header": "x-env-lane", "baggageKey": "env.lane"})
    lua = _hcm(render_envoy(topo))["http_filters"][0]["typed_config"]["default_source_code"]
    assert lua["inline_string"] == lua_source(topo)
    lines = lua["inline_string"].splitlines()
    assert lines[1] == 'local LANES_HEADER, LANES_BAGGAGE_KEY = "x-env-lane", "env.lane"'
    # The embedded code is the shipped file's code, comments and blank lines aside.
    code = [ln for ln in LUA_FILTER.splitlines() if ln.strip() and not ln.lstrip().startswith("--")]
    assert lines[2:] == code
    assert (ROOT / "envoy" / "lanes.lua").read_text(encoding="utf-8") == LUA_FILTER


def test_a_subset_of_services(topo: Topology) -> None:
    bootstrap = render_envoy(topo, services=["ratings"])
    assert [v["name"] for v in _hcm(bootstrap)["route_config"]["virtual_hosts"]] == ["ratings"]
    assert all(c["name"].startswith("ratings|") for c in bootstrap["static_resources"]["clusters"])
    with pytest.raises(ValueError, match="nosuch"):
        render_envoy(topo, services=["ratings", "nosuch"])
