"""Routing through the sidecar process: the service from Host or the absolute-form target, the
lane per design.md's extract order, the version per the routing core."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sidecar_helpers import Loop, Upstream, connect, read_response, request, start_sidecar, topology

from lane_router import Topology, topology_from_dict


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: Any) -> Iterator[tuple[Any, Topology, dict[str, Any]]]:
    """One sidecar and three upstreams for the whole module (a process start costs ~0.5 s)."""
    loop = Loop()
    ups = {lane: Upstream(lane, loop).start() for lane in ("baseline", "feature-a", "hotfix")}
    topo = topology(
        reviews={lane: [u.endpoint] for lane, u in ups.items() if lane != "hotfix"},
        ratings={"baseline": [ups["baseline"].endpoint], "hotfix": [ups["hotfix"].endpoint]},
    )
    topo["lanes"]["hotfix-qa"] = {"fallback": "hotfix"}  # a walk that ends in a strict lane
    sc = start_sidecar(tmp_path_factory.mktemp("mesh"), topo)
    try:
        yield sc, topology_from_dict(topo), ups
    finally:
        sc.stop()
        for up in ups.values():
            up.stop()
        loop.close()


@pytest.mark.parametrize(
    "host",
    [
        "reviews",
        "reviews:9080",
        "reviews.shop",
        "reviews.shop.svc",
        "reviews.shop.svc.cluster.local",
        "Reviews.Shop.svc.cluster.local.",
        "reviews:1234",
    ],
)
def test_service_from_every_host_form(mesh: Any, host: str) -> None:
    sc, _, _ = mesh
    status, _, body = request(sc, "/p?q=1", host=host, headers={"x-lane": "feature-a"})
    assert status == 200
    assert body["served"] == "feature-a"
    assert body["path"] == "/p?q=1"


def test_other_namespace_or_ip_host_is_unknown(mesh: Any) -> None:
    sc, _, _ = mesh
    for host in ("reviews.other", "reviews.shop.svc.cluster.example", "127.0.0.1:1", "[::1]:80"):
        status, headers, body = request(sc, "/", host=host)
        assert status == 404, host
        assert body["reason"] == "unknown service"
        assert headers["x-lanes-error"] == "unknown-service"


# (headers sent, the lane design.md's extract order yields)
CASES = [
    ({}, None),
    ({"x-lane": "feature-a"}, "feature-a"),
    ({"x-lane": "feature-b"}, "feature-b"),  # falls back to feature-a for reviews
    ({"x-lane": "hotfix"}, "hotfix"),  # strict: 503 for reviews, its own ratings
    ({"x-lane": "hotfix-qa"}, "hotfix-qa"),  # -> strict hotfix: 503 naming hotfix for reviews
    ({"x-lane": "nope"}, "nope"),  # valid, undeclared: baseline
    ({"x-lane": "Feature-A"}, None),  # invalid: no lane
    ({"baggage": "k=v, lane=feature-a;ttl=60"}, "feature-a"),
    ({"x-lane": "feature-b", "baggage": "lane=feature-a"}, "feature-b"),
    ({"x-lane": "BAD LANE", "baggage": "lane=feature-a"}, "feature-a"),
    ({"x-lane": "", "baggage": "lane=feature-b"}, "feature-b"),
    ({"baggage": "lane=" + "a" * 64}, None),
]


@pytest.mark.parametrize(("headers", "lane"), CASES)
@pytest.mark.parametrize("service", ["reviews", "ratings"])
def test_version_is_the_routing_cores(
    mesh: Any, headers: dict[str, str], lane: str | None, service: str
) -> None:
    sc, topo, _ = mesh
    res = topo.resolve(service, lane)
    status, _, body = request(sc, "/", host=service, headers=headers)
    if res.strict_miss:
        assert status == 503
        strict = topo.chains[res.lane][-1]  # where the walk stopped, not the requested lane
        detail = (
            f"strict lane {strict} does not deploy {service}"
            if strict == res.lane
            else f"lane {res.lane} falls back to strict lane {strict}, which does not deploy "
            f"{service}"
        )
        assert body == {
            "status": 503,
            "reason": "strict miss",
            "service": service,
            "lane": res.lane,
            "detail": detail,
        }
        assert body == json.loads(res.miss_body())  # the one definition, as Istio sends it
        return
    assert status == 200
    assert body["served"] == res.serving
    sent = [v for k, v in body["headers"] if k == "x-lane"]
    # The forwarded request carries the validated lane once (also when it came from baggage
    # only), and never an invalid value.
    assert sent == ([] if lane is None else [lane])


def test_absolute_form_target_wins_over_host(mesh: Any) -> None:
    sc, _, _ = mesh
    with connect(sc.proxy) as sock:
        sock.sendall(
            b"GET http://reviews.shop:9080/abs?x=1 HTTP/1.1\r\nHost: ratings\r\n"
            b"x-lane: feature-a\r\nConnection: close\r\n\r\n"
        )
        status, _, raw = read_response(sock)
    body = json.loads(raw)
    assert status == 200
    assert body["served"] == "feature-a"  # reviews has feature-a; ratings would be baseline
    assert body["path"] == "/abs?x=1"
    assert ["host", "reviews.shop:9080"] in body["headers"]


def test_absolute_form_other_scheme_is_400_json(mesh: Any) -> None:
    sc, _, _ = mesh
    with connect(sc.proxy) as sock:
        sock.sendall(b"GET https://reviews/ HTTP/1.1\r\nHost: reviews\r\n\r\n")
        status, _, raw = read_response(sock)
    assert status == 400
    assert json.loads(raw)["reason"] == "bad request"


def test_hop_by_hop_fields_xff_and_hop_counter(mesh: Any) -> None:
    sc, _, _ = mesh
    status, _, body = request(
        sc,
        "/",
        headers={
            "Connection": "close, X-Named",
            "X-Named": "drop me",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Trailer": "X-T",
            "Upgrade": "h2c",
            "Proxy-Connection": "keep-alive",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "X-Forwarded-For": "203.0.113.7",
            "x-lanes-hops": "3",
            "X-Kept": "yes",
        },
    )
    assert status == 200
    names = [k for k, _ in body["headers"]]
    for gone in (
        "x-named",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "proxy-authorization",
    ):
        assert gone not in names, gone
    sent = dict(body["headers"])
    assert sent["x-kept"] == "yes"
    assert sent["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert sent["x-lanes-hops"] == "4"


def test_response_hop_by_hop_fields_are_dropped(mesh: Any) -> None:
    sc, _, _ = mesh
    status, headers, body = request(sc, "/hop")
    assert (status, body) == (200, b"hop")
    assert headers["x-public"] == "yes"
    for gone in ("x-private", "keep-alive", "proxy-authenticate"):
        assert gone not in headers, gone


def test_loop_answers_508(upstreams: Any, sidecars: Any) -> None:
    from sidecar_helpers import free_port

    port = free_port()
    topo = topology(reviews={"baseline": [f"127.0.0.1:{port}"]})
    sc = sidecars(topo, "--max-hops", "4", listen=f"127.0.0.1:{port}")
    status, _, body = request(sc, "/")
    assert status == 508
    assert body["reason"] == "loop detected"
    assert body["service"] == "reviews"
    assert 'code="508"' in sc.metrics()
    assert sc.alive()


def test_round_robin_and_pooled_keepalive(upstreams: Any, sidecars: Any) -> None:
    a, b = upstreams("baseline"), upstreams("baseline")
    sc = sidecars(topology(reviews={"baseline": [a.endpoint, b.endpoint]}))
    with connect(sc.proxy) as sock:
        for _ in range(40):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
            assert read_response(sock)[0] == 200
    assert (a.requests, b.requests) == (20, 20)
    # Sequential requests reuse one upstream connection per endpoint.
    assert len(a.peers) == 1 and len(b.peers) == 1


def test_metric_labels_never_carry_client_values(mesh: Any) -> None:
    """Undeclared lanes and unknown hosts are counted as the baseline / "-", so a client cannot
    grow the metrics without bound."""
    sc, _, _ = mesh
    for i in range(3):
        assert request(sc, "/", host=f"svc-{i}", headers={"x-lane": f"made-up-{i}"})[0] == 404
        assert request(sc, "/", headers={"x-lane": f"made-up-{i}"})[2]["served"] == "baseline"
    text = sc.metrics()
    assert "made-up" not in text and "svc-" not in text
    assert 'lanes_requests_total{service="-",lane="baseline",served_by="-",code="404"}' in text
