"""The sidecar's routing decision on its own: ``decide`` and ``upstream_head`` are pure (a table
and a parsed head in, a Forward or a Refusal out), and endpoint choice is the route's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "routing"))
from canary_corpus import canary_requests, predict
from canary_corpus import topology as canary_topology

from lane_router import topology_from_dict
from lane_router._sidecar._decide import Forward, Refusal, RequestHead, decide, upstream_head
from lane_router._sidecar._http import H_BAGGAGE, H_HOST, H_LANE
from lane_router._sidecar._table import RouteTable

ALWAYS_LAST = 0.999999  # a weight roll no weight below 100 takes


def head(
    table: RouteTable,
    lines: list[tuple[str, str]],
    *,
    method: bytes = b"GET",
    url: bytes = b"/",
) -> RequestHead:
    """A parsed head, classified as the client connection does for these kinds (the other
    kinds the proxy handles itself are set by each test)."""
    req = RequestHead(0.0)
    req.method = method
    req.url = url
    for k, v in lines:
        name, value = k.encode("latin-1"), v.encode("latin-1")
        kind = table.special.get(name.lower())
        if kind == H_HOST:
            req.dup_host = req.host is not None
            req.host = value
        elif kind == H_LANE:
            req.lanes = [*(req.lanes or []), value]
        elif kind is None or kind == H_BAGGAGE:
            req.headers += (name, b": ", value, b"\r\n")
            if kind == H_BAGGAGE:
                req.baggage = [*(req.baggage or []), value]
    return req


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return RouteTable(canary_topology(), registry={})


def test_the_canary_corpus_gets_the_core_s_answer(table: RouteTable) -> None:
    topo = table.topology
    checked = 0
    for label, headers, path in canary_requests(topo):
        for service in topo.services:
            host = "ratings.data" if service == "ratings" else service
            req = head(table, [("Host", host), *headers], url=path.encode())
            got = decide(table, req, max_hops=16, roll=lambda: ALWAYS_LAST)
            lane, version = predict(topo, service, headers, path)
            if version == "503":
                assert isinstance(got, Refusal), label
                assert (got.status, got.reason, got.lane) == (503, "strict miss", lane)
                continue
            assert isinstance(got, Forward), (label, got)
            assert (got.service, got.lane) == (service, lane), label
            expected = version if version is not None else topo.routes[service][lane].serving
            assert got.route.pools[0].lane == expected, (label, service, got)
            checked += 1
    assert checked > 1000


def test_the_weight_roll_is_the_only_chance(table: RouteTable) -> None:
    req = head(table, [("Host", "reviews")])
    low = decide(table, req, max_hops=16, roll=lambda: 0.05)  # 5 < weight 10: the canary
    high = decide(table, req, max_hops=16, roll=lambda: 0.5)
    assert isinstance(low, Forward) and isinstance(high, Forward)
    assert [p.lane for p in low.route.pools] == ["v2", "baseline"]  # falls back, no error
    assert [p.lane for p in high.route.pools] == ["baseline"]


@pytest.mark.parametrize(
    ("lines", "method", "url", "expected"),
    [
        ([("Host", "reviews"), ("Host", "reviews")], b"GET", b"/", (400, True)),
        ([("Host", "reviews")], b"CONNECT", b"reviews:80", (405, True)),
        ([("Host", "reviews")], b"GET", b"https://reviews/", (400, True)),
        ([], b"GET", b"/", (400, True)),
        ([("Host", "nope")], b"GET", b"/", (404, False)),
        ([("Host", "reviews"), ("x-lane", "hotfix")], b"GET", b"/", (503, False)),
    ],
)
def test_refusals(
    table: RouteTable,
    lines: list[tuple[str, str]],
    method: bytes,
    url: bytes,
    expected: tuple[int, bool],
) -> None:
    got = decide(table, head(table, lines, method=method, url=url), max_hops=16)
    assert isinstance(got, Refusal)
    assert (got.status, got.close) == expected
    assert got.reason and got.detail


def test_unknown_service_names_the_effective_lane_never_a_raw_value(table: RouteTable) -> None:
    got = decide(table, head(table, [("Host", "nope:81"), ("x-lane", "no such lane")]), max_hops=4)
    assert isinstance(got, Refusal)
    assert (got.status, got.lane, got.asked) == (404, "baseline", "nope:81")


def test_other_codings_and_loops(table: RouteTable) -> None:
    req = head(table, [("Host", "reviews")])
    req.te, req.te_other = True, True
    got = decide(table, req, max_hops=16)
    assert isinstance(got, Refusal) and (got.status, got.close) == (501, True)
    req = head(table, [("Host", "reviews")])
    req.hops = 3
    got = decide(table, req, max_hops=3, hops_header="x-h")
    assert isinstance(got, Refusal) and got.status == 508 and "x-h" in (got.detail or "")


def test_absolute_form_target_wins_and_the_upstream_head(table: RouteTable) -> None:
    req = head(
        table,
        [("Host", "ignored"), ("Connection", "x-private"), ("x-private", "1"), ("A", "b")],
        url=b"http://productpage:9080/p?q=1",
    )
    req.conn_tokens = [b"x-private"]
    req.baggage = [b"lane=feature-c"]
    req.xff = [b"10.0.0.1"]
    req.cl = b"5"
    got = decide(table, req, max_hops=16)
    assert isinstance(got, Forward)
    assert (got.service, got.lane, got.asked_lane) == ("productpage", "feature-c", "feature-c")
    wire = upstream_head(table, req, got, b"127.0.0.1", b"x-lanes-hops: 1\r\n")
    assert wire == (
        b"GET /p?q=1 HTTP/1.1\r\nhost: productpage:9080\r\nA: b\r\n"
        b"x-lane: feature-c\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\n"
        b"x-lanes-hops: 1\r\ncontent-length: 5\r\n\r\n"
    )


def test_endpoint_choice_is_the_route_s_round_robin_fallback_then_panic() -> None:
    topo = topology_from_dict(
        {
            "lanes": {"feature-a": {}},
            "services": {
                "s": {
                    "port": 80,
                    "versions": {
                        "baseline": ["127.0.0.1:1", "127.0.0.1:2"],
                        "feature-a": ["127.0.0.1:3"],
                    },
                }
            },
        }
    )
    table = RouteTable(topo, registry={})
    route = table.route("s", "feature-a")
    a3, b1, b2 = (table.endpoints[("127.0.0.1", p)] for p in (3, 1, 2))
    assert route.pick(0.0, None) == (route.pools[0], a3)
    a3.ejected_until = 10.0
    picks = [route.pick(0.0, None) for _ in range(3)]
    assert [ep for _, ep in picks] == [b1, b2, b1]  # the fallback lane, round robin
    assert route.pick(0.0, [b1]) == (route.pools[1], b2)
    b1.ejected_until = b2.ejected_until = 10.0
    assert route.pick(0.0, None) == (route.pools[0], a3)  # panic: the first ejected, in order
    assert route.pick(0.0, [a3]) == (route.pools[1], b1)
    assert route.pick(0.0, [a3, b1, b2]) is None
