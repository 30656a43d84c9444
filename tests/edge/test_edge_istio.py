"""Istio gateway edge objects validate against Istio's own CRD schemas (closed: no unknown field)
and place the edge filters first, in order, on the gateway workload only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from edge_tokens import make_keys
from k8s_schemas import gateway_api_validator, istio_validator

from lane_router import topology_from_dict
from lane_router.cli import main
from lane_router.render.envoy_edge import DROP_FILTER, JWT_FILTER, STRIP_FILTER
from lane_router.render.istio_edge import render_istio_edge

TOPO = topology_from_dict(
    {"lanes": {"feature-a": {}}, "services": {"web": {"versions": {"baseline": ["a:1"]}}}}
)


def _valid(doc: dict) -> None:
    api = doc["apiVersion"].rpartition("/")[2]
    errors = sorted(e.message for e in istio_validator(doc["kind"], api).iter_errors(doc))
    assert not errors, errors


@pytest.mark.parametrize("mode", ["envoy-filter", "request-authentication"])
def test_objects_validate_and_select_the_gateway_only(mode: str, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    docs = render_istio_edge(
        TOPO,
        namespace="istio-ingress",
        selector={"istio": "ingressgateway"},
        jwks_json=json.dumps(keys.jwks),
        mode=mode,
    )
    for doc in docs:
        _valid(doc)
        assert doc["metadata"]["namespace"] == "istio-ingress"
    ef = docs[0]
    assert ef["spec"]["workloadSelector"] == {"labels": {"istio": "ingressgateway"}}
    patches = ef["spec"]["configPatches"]
    assert {p["match"]["context"] for p in patches} == {"GATEWAY"}
    names = [p["patch"]["value"]["name"] for p in patches]
    ops = [p["patch"]["operation"] for p in patches]
    if mode == "envoy-filter":
        assert names == [STRIP_FILTER, JWT_FILTER, DROP_FILTER]
        assert ops == ["INSERT_FIRST", "INSERT_AFTER", "INSERT_AFTER"]
        assert [p["match"]["listener"]["filterChain"]["filter"].get("subFilter") for p in patches][
            1:
        ] == [{"name": STRIP_FILTER}, {"name": JWT_FILTER}]
        jwt = patches[1]["patch"]["value"]["typed_config"]
        requirements = jwt["rules"][0]["requires"]["requires_any"]["requirements"]
        assert {"allow_missing_or_failed": {}} in requirements
        assert len(docs) == 1
    else:
        assert (names, ops) == ([STRIP_FILTER], ["INSERT_FIRST"])
        (rule,) = docs[1]["spec"]["jwtRules"]
        assert rule["fromHeaders"] == [{"name": "x-lane-token"}]
        assert rule["fromCookies"] == ["lane_token"]
        assert rule["outputClaimToHeaders"] == [{"header": "x-lane", "claim": "lane"}]
        assert json.loads(rule["jwks"]) == keys.jwks
        assert docs[1]["spec"]["selector"] == {"matchLabels": {"istio": "ingressgateway"}}


def test_a_misspelt_field_is_caught_by_the_schema(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    _, authn = render_istio_edge(
        TOPO,
        namespace="gw",
        selector={"istio": "ingressgateway"},
        jwks_json=json.dumps(keys.jwks),
        mode="request-authentication",
    )
    authn["spec"]["jwtRules"][0]["outputClaimToHeader"] = []
    assert list(istio_validator("RequestAuthentication", "v1").iter_errors(authn))


def test_render_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = make_keys(tmp_path)
    topo = tmp_path / "lanes.yaml"
    topo.write_text(
        "lanes: {feature-a: {}}\nservices:\n  web:\n    versions:\n"
        "      baseline: ['127.0.0.1:9']\n"
    )
    base = ["render", "-f", str(topo)]
    edge = ["--edge", "--jwks", str(keys.jwks_path)]
    assert main([*base, "--format", "envoy", *edge]) == 0
    (bootstrap,) = yaml.safe_load_all(capsys.readouterr().out)
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    names = [f["name"] for f in hcm["typed_config"]["http_filters"]]
    assert names[:3] == [STRIP_FILTER, JWT_FILTER, DROP_FILTER]
    xds = ["--xds-dir", str(tmp_path / "xds")]
    assert main([*base, "--format", "envoy", *edge, *xds]) == 0
    (bootstrap,) = yaml.safe_load_all(capsys.readouterr().out)
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    assert [f["name"] for f in hcm["typed_config"]["http_filters"]][:2] == [
        STRIP_FILTER,
        JWT_FILTER,
    ]
    gateway = [
        "--gateway",
        "istio-ingress/public",
        "--external-host",
        "shop.example.com",
        "--entry-service",
        "web",
    ]
    assert main([*base, *gateway, *edge, "--gateway-selector", "app=edge"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert docs[0]["kind"] == "EnvoyFilter"
    assert docs[0]["spec"]["workloadSelector"] == {"labels": {"app": "edge"}}
    for doc in docs:
        if doc["apiVersion"].startswith(("networking.istio.io", "security.istio.io")):
            _valid(doc)
    assert main([*base, *gateway]) == 0
    assert "anyone can pick a lane" in capsys.readouterr().err
    assert main([*base, "--format", "gateway-api", "--edge", *gateway]) == 0
    out = capsys.readouterr()
    assert "cannot verify a lane token" in out.err
    route = list(yaml.safe_load_all(out.out))[-1]
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "istio-ingress"}]
    (rule,) = route["spec"]["rules"]
    assert rule["filters"][0]["requestHeaderModifier"]["remove"] == [
        "x-lane",
        "baggage",
        "x-lane-token",
    ]
    assert rule["backendRefs"] == [{"name": "web", "port": 80, "namespace": "default"}]
    # The real HTTPRoute CRD (closed): a misspelled key fails, the route passes.
    assert not [e.message for e in gateway_api_validator("HTTPRoute").iter_errors(route)]
    rule["filters"][0]["requestHeaderModifier"]["remvoe"] = ["x"]
    assert list(gateway_api_validator("HTTPRoute").iter_errors(route))
    for bad, why in [
        (["--format", "envoy", "--edge"], "needs --jwks"),
        (["--edge", *edge[1:]], "needs --gateway"),
        (["--format", "gateway-api", *edge, *gateway], "Gateway API cannot verify"),
        (["--format", "gateway-api", "--edge"], "needs --gateway"),
        (["--format", "envoy", "--edge", "--jwks", str(topo)], "not JSON"),
    ]:
        assert main([*base, *bad]) == 2, bad
        assert why in capsys.readouterr().err, bad
