"""In-process tests of the sidecar's pieces: the table against the routing core and the wire
rules, error bodies, metrics text, and a bug in one request staying in that request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar_helpers import Loop, Upstream, connect, read_response, topology

from lane_router import topology_from_dict
from lane_router._sidecar import Sidecar, SidecarConfig, parse_hostport
from lane_router._sidecar._http import drop_connection_named, error_response
from lane_router._sidecar._metrics import Metrics
from lane_router._sidecar._table import RouteTable
from lanes_sdk.wire import lane_from_headers

TOPO = topology(
    reviews={"baseline": ["127.0.0.1:9081"], "feature-a": ["127.0.0.1:9082"]},
    ratings={"baseline": ["[::1]:9083"]},
)


@pytest.fixture
def table() -> RouteTable:
    return RouteTable(topology_from_dict(TOPO), registry={})


@pytest.mark.parametrize(
    ("host", "service"),
    [
        (b"reviews", "reviews"),
        (b"reviews:9080", "reviews"),
        (b"REVIEWS.shop", "reviews"),
        (b"reviews.shop.svc", "reviews"),
        (b"reviews.shop.svc.cluster.local.", "reviews"),
        (b"ratings.shop.svc.cluster.local:80", "ratings"),
        (b"reviews.default", None),
        (b"reviews:http", None),
        (b"[::1]:9083", None),
        (b"\xff\xfe", None),
        (b"", None),
        (b"r" * 5000, None),
    ],
)
def test_service_for_host(table: RouteTable, host: bytes, service: str | None) -> None:
    assert table.service_for_host(host) == service
    assert table.service_for_host(host) == service  # cached answer is the same


lane_bytes = st.one_of(
    st.sampled_from([b"feature-a", b" feature-b\t", b"Feature-A", b"", b"a" * 64, b"x\r\ny"]),
    st.binary(max_size=70),
)
baggage_bytes = st.one_of(
    st.sampled_from([b"lane=feature-a", b"k=v, lane=feature-b;ttl=1", b"lane=BAD,lane=hotfix"]),
    st.binary(max_size=120),
)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(lane_bytes, max_size=3),
    baggage=st.lists(baggage_bytes, max_size=3),
)
def test_lane_of_is_the_wire_rule(values: list[bytes], baggage: list[bytes]) -> None:
    table = RouteTable(topology_from_dict(TOPO), registry={})
    want = lane_from_headers(values, baggage, baggage_key="lane")
    for _ in range(2):  # the second call is served from the caches
        assert table.lane_of(values or None, baggage or None) == want


def test_route_follows_the_core(table: RouteTable) -> None:
    topo = table.topology
    for svc in topo.services:
        for lane in (None, "nope", *topo.all_lanes):
            route = table.route(svc, lane)
            res = topo.resolve(svc, lane)
            assert route.lane == res.lane
            assert tuple(p.lane for p in route.pools) == res.candidates


def test_error_response_is_json_and_framed() -> None:
    raw = error_response(
        503,
        "strict miss",
        service="reviews",
        lane="hotfix",
        close=True,
        detail='quote " and \n newline',
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"content-length: %d" % len(body) in head and b"connection: close" in head
    assert json.loads(body) == {
        "status": 503,
        "reason": "strict miss",
        "service": "reviews",
        "lane": "hotfix",
        "detail": 'quote " and \n newline',
    }
    assert error_response(404, "x", service=None, lane=None, close=False, head_only=True).endswith(
        b"\r\n\r\n"
    )


def test_connection_named_fields_are_dropped() -> None:
    headers = [
        b"X-A",
        b": ",
        b"1",
        b"\r\n",
        b"x-b",
        b": ",
        b"2",
        b"\r\n",
        b"X-C",
        b": ",
        b"3",
        b"\r\n",
    ]
    assert drop_connection_named(headers, [b"close"]) is headers
    kept = drop_connection_named(headers, [b"keep-alive, x-a", b" X-C "])
    assert kept == [b"x-b", b": ", b"2", b"\r\n"]


def test_metrics_text() -> None:
    m = Metrics()
    m.observe("reviews", "feature-b", "feature-a", 200, 0.0007)
    m.observe("reviews", "feature-b", "feature-a", 200, 20.0)
    text = m.render(open_connections=3, generation=2, ready=True)
    fb = 'service="reviews",lane="feature-b"'
    assert f'lanes_requests_total{{{fb},served_by="feature-a",code="200"}} 2' in text
    assert (
        f'lanes_request_duration_seconds_bucket{{{fb},served_by="feature-a",le="0.0005"}} 0' in text
    )
    assert (
        f'lanes_request_duration_seconds_bucket{{{fb},served_by="feature-a",le="0.001"}} 1' in text
    )
    assert (
        f'lanes_request_duration_seconds_bucket{{{fb},served_by="feature-a",le="+Inf"}} 2' in text
    )
    assert "lanes_open_connections 3" in text and "lanes_table_generation 2" in text
    assert "source=" not in text  # a shared sidecar (no --service) has no source label


def test_metrics_source_and_route_info() -> None:
    """``--service``: a constant ``source`` label added at scrape time; the live table as
    ``lanes_route_info`` (what the LanePropagationBreak alert joins on)."""
    m = Metrics(source="productpage")
    m.observe("reviews", "baseline", "v2", 500, 0.002)
    routes = [("reviews", "baseline", "baseline"), ("reviews", "hotfix", "")]
    text = m.render(open_connections=0, generation=1, ready=True, routes=routes)
    want = 'service="reviews",lane="baseline",served_by="v2"'
    assert f'lanes_requests_total{{{want},code="500",source="productpage"}} 1' in text
    assert f'lanes_request_duration_seconds_count{{{want},source="productpage"}} 1' in text
    assert 'lanes_route_info{service="reviews",lane="hotfix",serving=""} 1' in text
    assert 'lanes_route_info{service="reviews",lane="baseline",serving="baseline"} 1' in text


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:15001", ("127.0.0.1", 15001)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_hostport(text: str, want: tuple[str, int]) -> None:
    assert parse_hostport(text) == want


@pytest.mark.parametrize("text", ["::1:80", "host", ":80", "h:99999", "[::1]80"])
def test_parse_hostport_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hostport(text)


# -- a bug hit by one request -------------------------------------------------------------


class InProcess:
    """The sidecar on a uvloop loop in a thread, so a test can break one of its methods."""

    def __init__(self, path: Path) -> None:
        self.loop = Loop(uvloop.new_event_loop)
        config = SidecarConfig(topology_path=str(path), listen=(("127.0.0.1", 0),), admin=None)

        async def make() -> Sidecar:
            sc = Sidecar(config)
            await sc.start()
            return sc

        self.sidecar: Sidecar = self.loop.run(make())
        self.addr = parse_hostport(self.sidecar.listen_addrs[0])

    def close(self) -> None:
        self.loop.run(self.sidecar.drain())
        self.loop.close()


@pytest.fixture
def inproc(tmp_path: Path) -> Iterator[tuple[InProcess, Upstream]]:
    ups = Loop()
    up = Upstream("baseline", ups).start()
    path = tmp_path / "lanes.yaml"
    path.write_text(
        yaml.safe_dump(
            topology(reviews={"baseline": [up.endpoint]}, ratings={"baseline": [up.endpoint]})
        )
    )
    sc = InProcess(path)
    try:
        yield sc, up
    finally:
        sc.close()
        up.stop()
        ups.close()


def _get(addr: tuple[str, int], host: str) -> tuple[int, dict[str, str], bytes]:
    with connect(addr) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        return read_response(sock)


def test_a_bug_in_routing_is_a_502_for_that_request_only(inproc: Any) -> None:
    sc, _ = inproc
    table = sc.sidecar.table
    real = table.route

    def broken(service: str, lane: str | None) -> Any:
        if service == "ratings":
            raise KeyError("a bug")
        return real(service, lane)

    table.route = broken  # type: ignore[method-assign]
    with connect(sc.addr) as other:  # a connection opened before, mid-keep-alive
        other.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
        assert read_response(other)[0] == 200
        status, headers, body = _get(sc.addr, "ratings")
        assert status == 502
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["reason"] == "internal"
        other.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
        assert read_response(other)[0] == 200
    assert sc.sidecar.metrics.internal_errors == 1


def test_a_bug_on_the_response_side_is_a_502(inproc: Any, monkeypatch: Any) -> None:
    sc, _ = inproc
    from lane_router._sidecar import _exchange

    real = _exchange.Exchange.response_head

    def broken(self: Any, up: Any, status: int) -> None:
        if self.service == "ratings":
            raise RuntimeError("a bug")
        real(self, up, status)

    monkeypatch.setattr(_exchange.Exchange, "response_head", broken)
    status, _, body = _get(sc.addr, "ratings")
    assert (status, json.loads(body)["reason"]) == (502, "internal")
    assert _get(sc.addr, "reviews")[0] == 200
    assert sc.sidecar.metrics.internal_errors == 1


def test_drain_with_nothing_in_flight_is_immediate(inproc: Any) -> None:
    sc, _ = inproc
    with connect(sc.addr) as idle:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
        assert read_response(idle)[0] == 200
        left = sc.loop.run(asyncio.wait_for(sc.sidecar.drain(), 5))
        assert left == 0
        assert idle.recv(1) == b""  # idle keep-alive connections are closed at once


def test_ejection_doubles_up_to_the_cap_and_success_resets() -> None:
    from lane_router import Endpoint
    from lane_router._sidecar._table import EndpointState

    ep = EndpointState(Endpoint("127.0.0.1", 9081))
    periods = [ep.failed(100.0, 5.0, 60.0) for _ in range(6)]
    assert periods == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert not ep.healthy(159.9) and ep.healthy(160.0)
    ep.fails = 0  # what a successful response does
    assert ep.failed(200.0, 5.0, 60.0) == 5.0
