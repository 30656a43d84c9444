"""Canaries on the sidecar: baseline traffic only, content matches first, then the weight.

The reference decision is the routing core's (``Resolution.canary`` and ``Canary.takes``); the
shared corpus (``tests/routing/canary_corpus.py``, also run against Istio's and Envoy's renderings)
is replayed here against real upstreams that say which version answered.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from sidecar_helpers import (
    SidecarProc,
    connect,
    free_port,
    read_response,
    topology,
    wait_for,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "routing"))
from canary_corpus import CANARY_YAML, canary_requests, predict

from lane_router import topology_from_dict
from lane_router.cli import main

Headers = list[tuple[str, str]]
BATCH = 100  # requests pipelined per write on one keep-alive connection


def send_all(
    sc: SidecarProc, reqs: list[tuple[str, Headers, str]]
) -> list[tuple[int, dict[str, Any]]]:
    """(host, header lines, path) -> (status, JSON body), in order, pipelined in batches."""
    import json

    out: list[tuple[int, dict[str, Any]]] = []
    with connect(sc.proxy) as sock:
        for start in range(0, len(reqs), BATCH):
            batch = reqs[start : start + BATCH]
            wire = []
            for host, headers, path in batch:
                lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
                lines += [f"{k}: {v}" for k, v in headers]
                wire.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            sock.sendall(b"".join(wire))
            for _ in batch:
                status, _, body = read_response(sock)
                out.append((status, json.loads(body)))
    return out


def served(sc: SidecarProc, reqs: list[tuple[str, Headers, str]]) -> Counter[str]:
    results = send_all(sc, reqs)
    bad = [(s, b) for s, b in results if s != 200]
    assert not bad, bad[:3]
    return Counter(b["served"] for _, b in results)


def reviews_topology(ups: dict[str, Any], weight: int, **canary: Any) -> dict[str, Any]:
    """reviews: baseline v1, lane feature-a (feature-b falls back to it), canary v2 (without an
    upstream, nothing listens on its port). ``idle`` deploys nothing: its requests fall back to
    the baseline version, and stay lane traffic."""
    topo = topology(
        reviews={
            "baseline": [ups["v1"].endpoint],
            "feature-a": [ups["feature-a"].endpoint],
            "v2": [ups["v2"].endpoint] if "v2" in ups else [f"127.0.0.1:{free_port()}"],
        }
    )
    topo["lanes"]["idle"] = {}
    topo["services"]["reviews"]["canary"] = {"version": "v2", "weight": weight, **canary}
    return topo


UNTAGGED: list[Headers] = [
    [],
    [("x-lane", "Not A Lane!")],  # invalid: the baseline
    [("x-lane", "undeclared")],  # valid but undeclared: the baseline
    [("baggage", "userId=7")],
]
LANES: list[Headers] = [
    [("x-lane", "feature-a")],
    [("baggage", "lane=feature-a")],  # baggage only
    [("x-lane", "feature-b")],  # falls back to feature-a
    [("x-lane", "idle")],  # falls back to the baseline version: still a lane, never the canary
    [("baggage", "k=v, lane=idle")],
]


def test_weight_10_takes_10_percent_of_baseline_traffic_and_no_lane_request(
    upstreams: Any, sidecars: Any
) -> None:
    ups = {n: upstreams(n) for n in ("v1", "v2", "feature-a")}
    sc = sidecars(reviews_topology(ups, 10))
    n = 10_000
    base = [("reviews", UNTAGGED[i % len(UNTAGGED)], "/") for i in range(n)]
    counts = served(sc, base)
    share = counts["v2"] / n
    print(f"canary share at weight 10: {share:.2%} of {n} baseline requests ({dict(counts)})")
    assert set(counts) <= {"v1", "v2"}
    assert 0.085 <= share <= 0.115, counts
    lanes = served(sc, [("reviews", LANES[i % len(LANES)], "/") for i in range(1_000)])
    assert lanes["v2"] == 0, lanes
    assert lanes["feature-a"] == 600 and lanes["v1"] == 400, lanes
    metrics = sc.metrics()
    assert 'served_by="v2"' in metrics  # the canary's answers are labelled with its version


def test_content_matches_always_win_and_weight_0_takes_nothing_else(
    upstreams: Any, sidecars: Any
) -> None:
    ups = {n: upstreams(n) for n in ("v1", "v2", "feature-a")}
    match = [
        {"headers": {"x-canary": {"exact": "1"}}},
        {"headers": {"x-user": {"prefix": "beta-"}}},
        {"headers": {"x-tenant": {"regex": "acme|initech"}}},
        {"uri": {"prefix": "/new/"}},
    ]
    sc = sidecars(reviews_topology(ups, 0, match=match))
    wins: list[tuple[Headers, str]] = [
        ([("x-canary", "1")], "/"),
        ([("X-Canary", "1")], "/x?q=1"),
        ([("x-canary", "0"), ("x-canary", "1")], "/"),  # any field line matches
        ([("x-user", "beta-42")], "/"),
        ([("x-tenant", "initech")], "/"),
        ([], "/new/page?x=1"),
        ([("x-lane", "bad lane"), ("x-canary", "1")], "/"),  # invalid lane: baseline traffic
        ([("x-lane", "undeclared"), ("x-user", "beta-")], "/"),
    ]
    misses: list[tuple[Headers, str]] = [
        ([], "/"),
        ([("x-canary", "2")], "/"),
        ([("x-canary", "11")], "/"),
        ([("x-user", "alpha-beta-1")], "/"),
        ([("x-tenant", "acme-eu")], "/"),  # a regex is a full match
        ([], "/new"),
        ([], "/old/new/"),
        ([], "/x?to=/new/"),  # the query is not the path
    ]
    lane_with_match: list[tuple[Headers, str]] = [
        ([("x-lane", "feature-a"), ("x-canary", "1")], "/new/"),
        ([("x-lane", "idle"), ("x-canary", "1")], "/new/"),
        ([("baggage", "lane=idle"), ("x-user", "beta-1")], "/"),
    ]
    for _ in range(5):  # weight 0: the outcome must not depend on a draw
        got = send_all(sc, [("reviews", h, p) for h, p in wins + misses + lane_with_match])
        names = [b["served"] for _, b in got]
        assert names[: len(wins)] == ["v2"] * len(wins), list(zip(wins, names, strict=False))
        rest = names[len(wins) : len(wins) + len(misses)]
        assert rest == ["v1"] * len(misses), list(zip(misses, rest, strict=False))
        assert names[len(wins) + len(misses) :] == ["feature-a", "v1", "v1"]
    assert served(sc, [("reviews", [], "/")] * 500) == Counter({"v1": 500})


def test_canary_without_a_healthy_endpoint_falls_back_to_the_baseline(
    upstreams: Any, sidecars: Any
) -> None:
    ups = {n: upstreams(n) for n in ("v1", "feature-a")}  # v2's endpoint: nothing listens
    sc = sidecars(reviews_topology(ups, 100, match=[{"headers": {"x-canary": {"exact": "1"}}}]))
    reqs = [("reviews", [("x-canary", "1")] if i % 2 else [], "/") for i in range(400)]
    assert served(sc, reqs) == Counter({"v1": 400})  # and no error answered (served() checks)
    canary = sc.routes()["services"]["reviews"]["canary"]
    assert canary["version"] == "v2" and canary["weight"] == 100
    assert canary["candidates"] == ["v2", "baseline"]
    assert canary["match"] == [{"headers": {"x-canary": {"exact": "1"}}}]
    assert "canary" not in sc.routes()["services"]["reviews"]["lanes"]["feature-a"]


def test_shared_canary_corpus_lands_where_the_core_says(upstreams: Any, sidecars: Any) -> None:
    doc = yaml.safe_load(CANARY_YAML)
    for sname, svc in doc["services"].items():
        for version in svc["versions"]:
            svc["versions"][version] = [upstreams(f"{sname}/{version}").endpoint]
    sc = sidecars(doc)
    topo = topology_from_dict(doc)
    corpus = canary_requests(topo)[::3]  # a third of it, spread over every shape
    reqs: list[tuple[str, Headers, str]] = []
    expected: list[tuple[str, str, str | None, str]] = []
    for sname in ("reviews", "details", "ratings", "productpage"):
        for label, headers, path in corpus:
            lane, version = predict(topo, sname, headers, path)
            host = f"{sname}.{topo.namespace_of(sname)}.svc.cluster.local"
            reqs.append((host, headers, path))
            expected.append((sname, lane, version, label))
    results = send_all(sc, reqs)
    wrong = []
    split: Counter[str] = Counter()
    for (sname, lane, version, label), (status, body) in zip(expected, results, strict=True):
        if version == "503":
            ok = status == 503 and body["reason"] == "strict miss"
        elif version is None:  # split by the weight: either the canary or the baseline
            got = body.get("served", "")
            split[got] += 1
            ok = status == 200 and got in (f"{sname}/v2", f"{sname}/baseline")
        else:
            ok = status == 200 and body.get("served") == f"{sname}/{version}"
        if not ok:
            wrong.append((sname, label, lane, version, status, body.get("served")))
    assert not wrong, (len(wrong), wrong[:5])
    assert len(reqs) > 1000 and split["reviews/v2"] < split["reviews/baseline"]


def _share(sc: SidecarProc, n: int = 300) -> float:
    counts = served(sc, [("reviews", UNTAGGED[i % len(UNTAGGED)], "/") for i in range(n)])
    lanes = served(sc, [("reviews", [("x-lane", "feature-a")], "/")] * 20)
    assert lanes == Counter({"feature-a": 20})
    return counts["v2"] / n


def test_lanes_canary_steps_change_the_live_share(upstreams: Any, sidecars: Any) -> None:
    ups = {n: upstreams(n) for n in ("v1", "v2", "feature-a")}
    sc = sidecars(reviews_topology(ups, 0), "--reload-interval", "0.02")
    assert _share(sc) == 0.0
    generation = sc.generation()
    for step, share in (
        (["--weight", "100"], 1.0),
        (["--abort"], 0.0),
        (["--weight", "100"], 1.0),
    ):
        assert main(["canary", "reviews", "-f", str(sc.path), *step]) == 0
        generation += 1
        wait_for(lambda g=generation: sc.generation() >= g, f"generation {generation}")
        assert _share(sc) == share, step
    assert main(["canary", "reviews", "-f", str(sc.path), "--promote"]) == 0
    wait_for(lambda: sc.generation() > generation, "the promote's reload")
    routes = sc.routes()["services"]["reviews"]
    assert "canary" not in routes
    assert served(sc, [("reviews", [], "/")] * 100) == Counter({"v2": 100})  # v2 is the baseline
    assert yaml.safe_load(sc.path.read_text())["services"]["reviews"]["versions"]["baseline"] == [
        ups["v2"].endpoint
    ]
