"""Istio objects: valid for Istio's own v1 CRD schema, and route every request as the model says."""

from __future__ import annotations

import copy
import json

import pytest
from k8s_schemas import istio_validator
from routing_corpus import predict, requests, topology
from routing_eval import istio_outcome

from lane_router import loads_topology
from lane_router.render import VALID_LANE_REGEX
from lane_router.render.istio import (
    istio_http_routes,
    render_istio,
    render_istio_host,
    render_istio_ingress,
)

TOPO = topology()
CORPUS = requests(TOPO)
GATEWAY = {
    "gateway": "istio-system/ingress",
    "external_hosts": ("shop.example.com", "qa.shop.example.com"),
    "entry_service": "productpage",
}
VARIANTS = {
    "default": {},
    "export-local": {"export_local": True},
    "lane-label": {"lane_label": "example.com/lane"},
    "ingress": GATEWAY,
    "ingress-export-local": {**GATEWAY, "export_local": True},
}


def _errors(obj: dict) -> list[str]:
    validator = istio_validator(obj["kind"], "v1")
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


def _fqdn(service: str) -> str:
    return f"{service}.{TOPO.namespace_of(service)}.svc.cluster.local"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_validates_against_the_closed_v1_crd_schema(variant: str) -> None:
    objects = render_istio(TOPO, **VARIANTS[variant])
    assert {o["apiVersion"] for o in objects} == {"networking.istio.io/v1"}
    problems = {f"{o['kind']}/{o['metadata']['name']}": _errors(o) for o in objects}
    assert not {k: v for k, v in problems.items() if v}


@pytest.mark.parametrize(
    ("where", "bad_key"),
    [
        (("spec", "http", 0, "match", 0), "withoutHeader"),
        (("spec", "http", -1, "route", 0, "destination"), "subsets"),
        (("spec",), "host"),
        (("spec", "http", 0), "matches"),
    ],
)
def test_a_misspelled_key_fails_the_schema(where: tuple, bad_key: str) -> None:
    _, vs = render_istio_host(TOPO, "reviews")
    assert _errors(vs) == []
    broken = copy.deepcopy(vs)
    node = broken
    for step in where:
        node = node[step]
    node[bad_key] = node.get(bad_key.rstrip("s"), "x")
    assert _errors(broken), f"{bad_key} at {where} was accepted"


def test_destination_rule_misspelled_subset_label_key_fails() -> None:
    dr, _ = render_istio_host(TOPO, "reviews")
    dr["spec"]["subsets"][0]["label"] = dr["spec"]["subsets"][0].pop("labels")
    assert _errors(dr)


@pytest.mark.parametrize("mode", ["per-line", "joined"])
@pytest.mark.parametrize("service", sorted(TOPO.services))
def test_every_request_lands_where_the_model_predicts(mode: str, service: str) -> None:
    _, vs = render_istio_host(TOPO, service)
    ingress = render_istio_ingress(TOPO, service, gateway="gw/gw", hosts=["x.example.com"])
    wrong = []
    for label, headers in CORPUS:
        if mode == "joined" and sum(k.lower() == "x-lane" for k, _ in headers) > 1:
            # "BAD,feature-a" is no lane name: only Envoys that match line by line (1.40, the
            # one Istio 1.30 ships) honour a valid x-lane line next to an invalid one.
            continue
        res = predict(TOPO, service, headers)
        for spec in (vs["spec"], ingress["spec"]):
            got = istio_outcome(spec, headers, mode=mode)
            if res.strict_miss:
                ok = got.kind == "direct" and got.status == 503
                body = json.loads(got.body or "{}")
                ok = ok and body["lane"] == res.lane and body["service"] == service
                ok = ok and body["status"] == 503 and body["reason"] == "strict miss"
                strict = TOPO.chains[res.lane][-1]
                ok = ok and f"strict lane {strict}" in body["detail"]
                ok = ok and body["detail"].endswith(f"does not deploy {service}")
            else:
                ok = (got.kind, got.host, got.subset) == ("route", _fqdn(service), res.serving)
            if not ok:
                wrong.append(f"{label}: {headers} -> {got}, model {res}")
    assert not wrong, "\n".join(wrong)


def test_the_corpus_exercises_every_outcome() -> None:
    """Guards the test above against passing vacuously."""
    seen = set()
    for service in TOPO.services:
        for _label, headers in CORPUS:
            res = predict(TOPO, service, headers)
            baggage_only = not any(k.lower() == "x-lane" for k, _ in headers)
            seen.add(
                (
                    "strict" if res.strict_miss else "fallback" if res.is_fallback else "own",
                    res.serving == TOPO.baseline,
                    baggage_only,
                )
            )
    assert ("strict", False, True) in seen and ("strict", False, False) in seen
    assert ("fallback", False, True) in seen and ("fallback", False, False) in seen
    assert ("own", False, True) in seen and ("own", False, False) in seen
    assert ("fallback", True, False) in seen  # lanes served by the baseline


def test_route_order_header_matches_then_guarded_baggage_then_baseline() -> None:
    for service in TOPO.services:
        routes = istio_http_routes(TOPO, service)
        kinds = []
        for r in routes:
            if "match" not in r:
                kinds.append("default")
                continue
            (entry,) = r["match"]
            if "x-lane" in entry["headers"]:
                kinds.append("header")
            else:
                assert set(entry["headers"]) == {"baggage"}
                assert entry["withoutHeaders"] == {"x-lane": {"regex": VALID_LANE_REGEX}}
                kinds.append("baggage")
        assert kinds == sorted(kinds, key=["header", "baggage", "default"].index)
        assert kinds[-1] == "default" and kinds.count("default") == 1
        assert kinds.count("header") == kinds.count("baggage")
        assert routes[-1]["route"] == [
            {"destination": {"host": _fqdn(service), "subset": TOPO.baseline}}
        ]


def test_every_routed_subset_exists_in_an_earlier_destination_rule() -> None:
    objects = render_istio(TOPO, **GATEWAY)
    subsets: dict[str, set[str]] = {}
    for obj in objects:
        if obj["kind"] == "DestinationRule":
            subsets[obj["spec"]["host"]] = {s["name"] for s in obj["spec"]["subsets"]}
            continue
        for route in obj["spec"]["http"]:
            for dest in route.get("route", []):
                d = dest["destination"]
                assert "subset" in d, "a route without a subset would reach lane pods"
                assert d["subset"] in subsets[d["host"]], (obj["metadata"]["name"], d)


def test_one_virtual_service_and_destination_rule_per_host() -> None:
    objects = render_istio(TOPO)
    vs_hosts = [h for o in objects if o["kind"] == "VirtualService" for h in o["spec"]["hosts"]]
    assert len(vs_hosts) == len(set(vs_hosts)) == 2 * len(TOPO.services)
    assert "ratings.data.svc.cluster.local" in vs_hosts
    dr_hosts = [o["spec"]["host"] for o in objects if o["kind"] == "DestinationRule"]
    assert sorted(dr_hosts) == sorted(_fqdn(s) for s in TOPO.services)
    for o in objects:
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "traffic-lanes"
        assert o["metadata"]["namespace"] == TOPO.namespace_of(o["metadata"]["name"])


def test_subsets_select_the_lane_label() -> None:
    dr, _ = render_istio_host(TOPO, "reviews", lane_label="example.com/lane")
    assert dr["spec"]["subsets"] == [
        {"name": lane, "labels": {"example.com/lane": lane}}
        for lane in ("baseline", "feature-a", "feature-ab", "hotfix")
    ]


def test_export_local_scopes_every_object_and_lets_the_gateway_read_the_entry_subsets() -> None:
    objects = render_istio(TOPO, export_local=True, **GATEWAY)
    for o in objects:
        name = o["metadata"]["name"]
        if name == "productpage-ingress" or (
            o["kind"] == "DestinationRule" and name == "productpage"
        ):
            assert o["spec"]["exportTo"] == [".", "istio-system"], name
        else:
            assert o["spec"]["exportTo"] == ["."], name
    assert all("exportTo" not in o["spec"] for o in render_istio(TOPO))


def test_ingress_virtual_service_is_bound_to_the_gateway_hosts() -> None:
    objects = render_istio(TOPO, **GATEWAY)
    ingress = objects[-1]
    assert ingress["metadata"]["name"] == "productpage-ingress"
    assert ingress["spec"]["gateways"] == ["istio-system/ingress"]
    assert ingress["spec"]["hosts"] == ["qa.shop.example.com", "shop.example.com"]
    assert ingress["spec"]["http"] == istio_http_routes(TOPO, "productpage")
    untagged = istio_outcome(ingress["spec"], [("baggage", "userId=1")])
    assert (untagged.kind, untagged.subset) == ("route", "baseline")
    tagged = istio_outcome(ingress["spec"], [("x-lane", "feature-c")])
    assert tagged.subset == "feature-c"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gateway": "istio-system/gw"}, "external-host"),
        ({"gateway": "istio-system/gw", "external_hosts": ["a.example.com"]}, "entry-service"),
        ({**GATEWAY, "gateway": "gw"}, "NAMESPACE/NAME"),
        ({**GATEWAY, "entry_service": "nope"}, "nope"),
        ({**GATEWAY, "external_hosts": ["not a host"]}, "not a host"),
        ({"external_hosts": ["a.example.com"]}, "--gateway"),
        ({"lane_label": "bad label"}, "label"),
    ],
)
def test_bad_options_are_refused_with_a_message(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_istio(TOPO, **options)


def test_baggage_regexes_fit_istio_limits() -> None:
    for service in TOPO.services:
        for route in istio_http_routes(TOPO, service):
            for entry in route.get("match", []):
                for cond in (*entry["headers"].values(), *entry.get("withoutHeaders", {}).values()):
                    if "regex" in cond:
                        assert len(cond["regex"]) <= 1024


def _misrouted(spec: dict, service: str) -> int:
    wrong = 0
    for _, headers in CORPUS:
        res = predict(TOPO, service, headers)
        got = istio_outcome(spec, headers)
        want = ("direct", None) if res.strict_miss else ("route", res.serving)
        wrong += (got.kind, got.subset) != want
    return wrong


def test_the_corpus_catches_a_missing_guard_in_either_order() -> None:
    """The guard is load-bearing: without it a valid x-lane that names an undeclared lane, or a
    lane served by the baseline, loses to the baggage; put baggage first and every x-lane does."""
    http = istio_http_routes(TOPO, "reviews")
    n = (len(http) - 1) // 2
    assert _misrouted({"http": http}, "reviews") == 0
    unguarded = copy.deepcopy(http)
    for route in unguarded[n : 2 * n]:
        del route["match"][0]["withoutHeaders"]
    header_first = _misrouted({"http": unguarded}, "reviews")
    baggage_first = _misrouted(
        {"http": [*unguarded[n : 2 * n], *unguarded[:n], unguarded[-1]]}, "reviews"
    )
    assert 0 < header_first < baggage_first


def test_custom_header_and_baggage_key_are_what_routes_match() -> None:
    topo = loads_topology(
        "header: x-env\nbaggageKey: env\nlanes: {feature-a: {}}\n"
        "services: {web: {versions: {baseline: [], feature-a: []}}}\n"
    )
    _, vs = render_istio_host(topo, "web")
    cases = [
        ([("x-env", "feature-a")], "feature-a"),
        ([("baggage", "env=feature-a")], "feature-a"),
        ([("x-lane", "feature-a")], "baseline"),
        ([("baggage", "lane=feature-a")], "baseline"),
        ([("x-env", "nope"), ("baggage", "env=feature-a")], "baseline"),
        ([("x-lane", "nope"), ("baggage", "env=feature-a")], "feature-a"),
    ]
    for headers, subset in cases:
        assert istio_outcome(vs["spec"], headers).subset == subset, headers


def test_unknown_service_is_refused() -> None:
    with pytest.raises(KeyError):
        render_istio_host(TOPO, "nope")
