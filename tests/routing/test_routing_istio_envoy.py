"""The rendered Istio routes, run by a real Envoy: RE2, repeated headers and inverted matches.

istiod turns each VirtualService ``http`` route into Envoy routes: one per ``match`` entry,
header conditions as ``HeaderMatcher`` (``exact`` / ``prefix`` / ``safe_regex``),
``withoutHeaders`` as the same matcher with ``invert_match: true`` and
``treat_missing_header_as_empty: true`` (istio's ``route_test.go``, "regex matching on
without_header"; without the latter a request with no ``x-lane`` at all would never match a
guarded baggage route), ``directResponse`` as ``direct_response``; its proxies raise
``re2.max_program_size.error_level`` to 32768. This test applies that translation (written here
from the Istio and Envoy references) with one change: a route to a subset becomes a
``direct_response`` naming host and subset, so no upstream is needed. Then the request corpus
goes through Envoy and each answer must name what the model predicts. It checks what the Python
evaluator cannot: Envoy's own RE2, its header normalisation and its repeated-header handling.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoyproc import EnvoyProcess, running_envoy
from routing_corpus import predict, requests, topology

from lane_router import Topology
from lane_router.render.istio import render_istio_host

TOPO = topology()


def _matcher(name: str, cond: dict[str, str], *, invert: bool) -> dict[str, Any]:
    ((kind, value),) = cond.items()
    string_match = {"safe_regex": {"regex": value}} if kind == "regex" else {kind: value}
    out: dict[str, Any] = {"name": name, "string_match": string_match}
    if invert:  # istiod: withoutHeaders -> inverted, and a missing header counts as ""
        out["invert_match"] = True
        out["treat_missing_header_as_empty"] = True
    return out


def _path_match(uri: dict[str, str] | None) -> dict[str, Any]:
    """istiod: uri exact -> ``path``, prefix -> ``prefix``, regex -> ``safe_regex``."""
    if uri is None:
        return {"prefix": "/"}
    ((kind, value),) = uri.items()
    if kind == "exact":
        return {"path": value}
    if kind == "prefix":
        return {"prefix": value}
    return {"safe_regex": {"regex": value}}


def _envoy_routes(vs_spec: dict[str, Any]) -> list[dict[str, Any]]:
    routes = []
    for route in vs_spec["http"]:
        if "directResponse" in route:
            dr = route["directResponse"]
            action = {"status": dr["status"], "body": {"inline_string": dr["body"]["string"]}}
        else:
            # A weighted route answers with its split (the Python evaluator samples it).
            target = " ".join(
                f"{d['destination']['subset']}={d.get('weight', 100)}" for d in route["route"]
            )
            host = route["route"][0]["destination"]["host"]
            action = {"status": 200, "body": {"inline_string": f"route {host} {target}"}}
        for entry in route.get("match") or [{}]:
            headers = [_matcher(k, v, invert=False) for k, v in entry.get("headers", {}).items()]
            headers += [
                _matcher(k, v, invert=True) for k, v in entry.get("withoutHeaders", {}).items()
            ]
            match: dict[str, Any] = _path_match(entry.get("uri"))
            if headers:
                match["headers"] = headers
            routes.append({"match": match, "direct_response": action})
    return routes


def _bootstrap(topo: Topology = TOPO) -> dict[str, Any]:
    hosts = []
    for service in topo.services:
        _, vs = render_istio_host(topo, service)
        hosts.append({"name": service, "domains": [service], "routes": _envoy_routes(vs["spec"])})
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "istio_routes",
        "route_config": {"name": "istio", "virtual_hosts": hosts},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "layered_runtime": {
            "layers": [
                {
                    "name": "istio",
                    "static_layer": {"re2.max_program_size.error_level": 32768},
                }
            ]
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "http",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyProcess]:
    bootstrap = _bootstrap()
    workdir = tmp_path_factory.mktemp("istio-envoy")
    with running_envoy(bootstrap, workdir=workdir, validate=True) as proxy:
        yield proxy


def _send(
    conn: http.client.HTTPConnection, service: str, headers: list[tuple[str, str]], path: str = "/"
):
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", service)
    for name, value in headers:
        conn.putheader(name, value.encode("latin-1"))
    conn.endheaders()
    resp = conn.getresponse()
    return resp.status, resp.read().decode()


@pytest.mark.parametrize("service", sorted(TOPO.services))
def test_real_envoy_routes_every_request_where_the_model_predicts(
    envoy: EnvoyProcess, service: str, tmp_path: Path
) -> None:
    host, port = envoy.address()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    wrong = []
    sent = 0
    try:
        for label, headers in requests(TOPO):
            if any(not v.isascii() for _, v in headers):
                continue  # Envoy's codec may refuse obs-text; the Python evaluator covers it
            res = predict(TOPO, service, headers)
            status, body = _send(conn, service, headers)
            sent += 1
            if res.strict_miss:
                doc = json.loads(body) if status == 503 else {}
                ok = doc.get("lane") == res.lane and doc.get("service") == service
            else:
                fqdn = f"{service}.{TOPO.namespace_of(service)}.svc.cluster.local"
                ok = (status, body) == (200, f"route {fqdn} {res.serving}=100")
            if not ok:
                wrong.append(f"{label}: {headers} -> {status} {body!r}, model {res}")
    finally:
        conn.close()
    assert sent > 150
    assert not wrong, "\n".join(wrong)
