"""Canaries on real Envoy: content matches win, the weight splits the rest of the baseline
traffic, and no lane request ever reaches a canary.

Expectations come from the project's definitions, never from the renderer: the lane from
``lanes_sdk``'s extract order, the route from ``Topology.resolve``, and a canary's decision from
``Canary.takes`` (deterministic at weights 0 and 100; at weight 10 a share is measured).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
from envoy_upstreams import Fleet
from envoyproc import EnvoyProcess, running_envoy, validate_bootstrap
from multidict import CIMultiDict

from lane_router import Topology, topology_from_dict, topology_to_dict
from lane_router.render.envoy import cluster_name, render_envoy
from lanes_sdk.wire import lane_from_headers

# feature-b falls back to feature-a; feature-c and idle deploy nothing here (baseline serves
# them: a fallback to the baseline version that must still never reach a canary); hotfix is
# strict and deploys nothing (503).
LANES = {
    "feature-a": {},
    "feature-b": {"fallback": "feature-a"},
    "feature-c": {},
    "hotfix": {"strict": True},
    "idle": {},
}
MATCHES = [
    {"headers": {"x-canary": {"exact": "1"}}},
    {"uri": {"prefix": "/beta/"}},
    {
        "headers": {"x-user": {"regex": "(alice|bob)-[0-9]+"}, "x-tenant": {"prefix": "acme"}},
        "uri": {"exact": "/cart"},
    },
    {"uri": {"regex": "/items/[0-9]+"}},
]
# service -> (weight, matches): reviews takes only its matches, ratings everything baseline,
# details nothing at all, cart 10% of what its one match leaves.
CANARIES = {
    "reviews": (0, MATCHES),
    "ratings": (100, []),
    "details": (0, []),
    "cart": (10, [{"headers": {"x-canary": {"exact": "1"}}}]),
}
CANARY_VERSION = "next"


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet() as fleet:
        yield fleet


@pytest.fixture(scope="module")
def topo(fleet: Fleet) -> Topology:
    services = {}
    for svc, (weight, matches) in CANARIES.items():
        versions = {v: [fleet.start(svc, v)] for v in ("baseline", "feature-a", CANARY_VERSION)}
        canary: dict = {"version": CANARY_VERSION, "weight": weight}
        if matches:
            canary["match"] = matches
        services[svc] = {"port": 9080, "versions": versions, "canary": canary}
    return topology_from_dict({"namespace": "shop", "lanes": LANES, "services": services})


@pytest.fixture(scope="module")
def envoy(topo: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyProcess]:
    bootstrap = render_envoy(topo, listen="127.0.0.1:0", admin="127.0.0.1:0")
    workdir = tmp_path_factory.mktemp("envoy-canary")
    with running_envoy(bootstrap, workdir=workdir, validate=True) as proxy:
        yield proxy


Headers = list[tuple[str, str]]

# Every way a request carries (or fails to carry) a lane. None: no lane header at all.
LANE_CARRIERS: list[tuple[str, Headers]] = [
    ("none", []),
    ("invalid x-lane", [("x-lane", "Feature_A")]),
    ("undeclared x-lane", [("x-lane", "nobody")]),
    ("undeclared baggage", [("baggage", "lane=nobody")]),
    *[(f"x-lane {lane}", [("x-lane", lane)]) for lane in LANES],
    *[(f"baggage {lane}", [("baggage", f"k=v, lane={lane};ttl=3")]) for lane in LANES],
    ("invalid x-lane, baggage feature-c", [("x-lane", "BAD"), ("baggage", "lane=feature-c")]),
]
CONTENT: list[tuple[str, Headers]] = [
    ("plain", []),
    ("x-canary 1", [("x-canary", "1")]),
    ("x-canary 2", [("x-canary", "2")]),
    ("x-canary 1 in a second line", [("x-canary", "0"), ("x-canary", "1")]),
    ("alice acme", [("x-user", "alice-7"), ("x-tenant", "acme-eu")]),
    ("alice, no tenant", [("x-user", "alice-7")]),
    ("alice partial", [("x-user", "alice-7x"), ("x-tenant", "acme")]),
]
PATHS = ["/", "/beta/", "/beta/x?y=1", "/beta", "/cart", "/cart?id=1", "/cart/1", "/items/42"]


def _expected(topo: Topology, svc: str, headers: Headers, path: str) -> str:
    """The version the contract names ("503" for a strict miss); weights here are 0 or 100."""
    lane = lane_from_headers(
        [v for k, v in headers if k == "x-lane"], [v for k, v in headers if k == "baggage"]
    )
    res = topo.resolve(svc, lane)
    assert res is not None
    if res.strict_miss:
        return "503"
    if res.canary is not None:

        def values(name: str) -> list[str]:
            return [v for k, v in headers if k == name]

        assert res.canary.weight in (0, 100)
        if res.canary.takes(values, path.partition("?")[0], roll=0.5):
            return res.canary.version
    assert res.serving is not None
    return res.serving


async def _served(
    session: aiohttp.ClientSession, url: str, svc: str, headers: Headers
) -> tuple[int, str]:
    async with session.get(url, headers=CIMultiDict([("host", svc), *headers])) as resp:
        body = json.loads(await resp.read())
        return resp.status, body["lane"] if resp.status == 200 else str(body)


async def test_content_matches_win_and_lanes_never_reach_a_canary(
    topo: Topology, envoy: EnvoyProcess
) -> None:
    cases = [
        (f"{svc} <- {lname} + {cname} {path}", svc, [*lh, *ch], path)
        for svc in ("reviews", "ratings", "details")
        for lname, lh in LANE_CARRIERS
        for cname, ch in CONTENT
        for path in PATHS
    ]
    limit = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as session:

        async def one(case: tuple[str, str, Headers, str]) -> str | None:
            name, svc, headers, path = case
            want = _expected(topo, svc, headers, path)
            async with limit:
                status, got = await _served(session, envoy.url(path), svc, headers)
            if want == "503":
                return None if status == 503 else f"{name}: expected 503, got {status} {got}"
            return None if (status, got) == (200, want) else f"{name}: {want} != {status} {got}"

        failures = [f for f in await asyncio.gather(*(one(c) for c in cases)) if f]
    assert not failures, f"{len(failures)} of {len(cases)} wrong:\n" + "\n".join(failures[:20])
    # The corpus really exercises every branch: lanes, strict misses, matches, weight 100, 0.
    outcomes = Counter(_expected(topo, svc, h, p) for _, svc, h, p in cases)
    assert {"baseline", "feature-a", CANARY_VERSION, "503"} <= set(outcomes)


async def test_weight_10_takes_10_percent_of_baseline_traffic_only(
    topo: Topology, envoy: EnvoyProcess
) -> None:
    # 10,000 baseline requests (untagged, an invalid lane, an undeclared lane) to a canary at
    # weight 10; lane requests and content matches run at the same time.
    baseline_shapes: list[Headers] = [[], [("x-lane", "NOT-VALID")], [("baggage", "lane=nobody")]]
    lane_shapes: list[Headers] = [
        h for name, h in LANE_CARRIERS if name.split(" ")[-1] in LANES and "hotfix" not in name
    ]
    jobs: list[tuple[str, Headers]] = [("baseline", baseline_shapes[i % 3]) for i in range(10_000)]
    jobs += [("lane", [*lane_shapes[i % len(lane_shapes)], ("x-canary", "2")]) for i in range(1000)]
    jobs += [("match", [("x-canary", "1"), *baseline_shapes[i % 3]]) for i in range(500)]
    jobs += [("weight 0", []) for _ in range(500)]
    queue = iter(jobs)
    results: dict[str, Counter[tuple[int, str]]] = {k: Counter() for k in ("baseline", "lane")}
    results |= {"match": Counter(), "weight 0": Counter(), "lane wrong": Counter()}
    url = envoy.url("/orders")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def worker() -> None:
            for kind, headers in queue:
                svc = "details" if kind == "weight 0" else "cart"
                status, got = await _served(session, url, svc, headers)
                results[kind][(status, got)] += 1
                if kind == "lane":
                    lane = lane_from_headers(
                        [v for k, v in headers if k == "x-lane"],
                        [v for k, v in headers if k == "baggage"],
                    )
                    res = topo.resolve("cart", lane)
                    assert res is not None and res.lane != topo.baseline
                    if (status, got) != (200, res.serving):
                        results["lane wrong"][(status, got)] += 1

        await asyncio.gather(*(worker() for _ in range(48)))

    baseline = results["baseline"]
    assert set(baseline) <= {(200, "baseline"), (200, CANARY_VERSION)}, baseline
    share = baseline[(200, CANARY_VERSION)] / 10_000
    print(f"canary share at weight 10: {share:.2%} of 10,000 baseline requests")  # -rP shows it
    assert 0.085 <= share <= 0.115, f"canary share {share:.2%} of 10,000 baseline requests"
    assert results["match"] == {(200, CANARY_VERSION): 500}
    assert results["weight 0"] == {(200, "baseline"): 500}
    assert not results["lane wrong"], results["lane wrong"]
    assert (200, CANARY_VERSION) not in results["lane"]
    served = Counter(got for (_, got), n in results["lane"].items() for _ in range(n))
    assert served.keys() == {"feature-a", "baseline"}  # both direct and fallback lanes ran
    # Envoy's counters agree: the canary's version cluster served the matches and the share.
    counter = f"cluster.{cluster_name('cart', CANARY_VERSION)}.upstream_rq_total"
    assert envoy.stats(counter)[counter] == 500 + baseline[(200, CANARY_VERSION)]


async def test_a_canary_without_healthy_endpoints_falls_back_to_the_baseline(
    fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The canary's version is gone (crashed rollout): its requests are served by the baseline.
    gone = fleet.start("orders", CANARY_VERSION)
    fleet.stop("orders", CANARY_VERSION)
    topo = topology_from_dict(
        {
            "services": {
                "orders": {
                    "versions": {"baseline": [fleet.start("orders", "baseline")], "v2": [gone]},
                    "canary": {"version": "v2", "weight": 50, "match": [{"uri": {"exact": "/"}}]},
                }
            }
        }
    )
    bootstrap = render_envoy(topo, listen="127.0.0.1:0", admin="127.0.0.1:0")
    with running_envoy(bootstrap, workdir=tmp_path_factory.mktemp("envoy-canary-down")) as proxy:
        async with aiohttp.ClientSession() as session:
            answers = Counter(
                [await _served(session, proxy.url(p), "orders", []) for p in ["/", "/x"] * 20]
            )
        stats = proxy.stats("cluster.orders|v2.")
    assert answers == {(200, "baseline"): 40}
    assert stats["cluster.orders|v2.upstream_cx_connect_fail"] > 0  # the canary was really tried


def _routes(bootstrap: dict, service: str) -> list[dict]:
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    vhosts = hcm["typed_config"]["route_config"]["virtual_hosts"]
    (vhost,) = [v for v in vhosts if v["name"] == service]
    return vhost["routes"]


def _doc(canary: dict | None) -> dict:
    svc: dict = {"versions": {"baseline": ["127.0.0.1:9081"], "feature-a": ["127.0.0.1:9082"]}}
    if canary is not None:
        svc["versions"]["v2"] = ["127.0.0.1:9083", "127.0.0.1:9084"]
        svc["canary"] = canary
    return {
        "lanes": {"feature-a": {}, "idle": {}, "hotfix": {"strict": True}},
        "services": {"s": svc},
    }


def test_rendered_order_lanes_then_matches_then_the_weighted_default(tmp_path) -> None:
    canary = {
        "version": "v2",
        "weight": 25,
        "match": [
            {"headers": {"x-b": {"prefix": "p"}, "x-a": {"regex": "r.*"}}, "uri": {"exact": "/c"}},
            {"uri": {"regex": "/i/[0-9]+"}},
        ],
    }
    bootstrap = render_envoy(topology_from_dict(_doc(canary)))
    validate_bootstrap(bootstrap, workdir=tmp_path)
    routes = _routes(bootstrap, "s")
    # Every declared lane first (idle too, though the baseline serves it: a canary never takes
    # lane traffic), the strict miss as a direct 503; then the matches; the default last.
    assert [r["name"] for r in routes] == [
        "s/feature-a", "s/feature-a/no-replay", "s/hotfix", "s/idle", "s/idle/no-replay",
        "s/v2/match-0", "s/v2/match-0/no-replay", "s/v2/match-1", "s/v2/match-1/no-replay",
        "s/baseline", "s/baseline/no-replay",
    ]  # fmt: skip
    assert routes[3]["route"]["cluster"] == "s|baseline"
    match0 = routes[6]["match"]  # the no-replay route: no method condition
    assert match0 == {
        "path": "/c",
        "headers": [
            {"name": "x-a", "string_match": {"safe_regex": {"regex": "r.*"}}},
            {"name": "x-b", "string_match": {"prefix": "p"}},
        ],
    }
    assert routes[8]["match"] == {"safe_regex": {"regex": "/i/[0-9]+"}}
    assert routes[6]["route"]["cluster"] == "s|v2>baseline"
    assert routes[-1]["route"]["weighted_clusters"] == {
        "clusters": [{"name": "s|baseline", "weight": 75}, {"name": "s|v2>baseline", "weight": 25}]
    }
    # Two canary endpoints before the baseline: three attempts reach the baseline.
    assert routes[-1]["route"]["retry_policy"]["num_retries"] == 3
    clusters = [c["name"] for c in bootstrap["static_resources"]["clusters"]]
    assert clusters == [
        "s|baseline",
        "s|feature-a",
        "s|v2",
        "s|feature-a>baseline",
        "s|v2>baseline",
    ]
    # The same topology, declared in another order, renders byte for byte the same.
    again = _doc(canary)
    again["services"]["s"]["canary"]["match"][0]["headers"] = {
        "x-b": {"prefix": "p"},
        "x-a": {"regex": "r.*"},
    }
    assert json.dumps(render_envoy(topology_from_dict(again))) == json.dumps(bootstrap)


def test_weights_0_and_100_and_no_canary() -> None:
    plain = _routes(render_envoy(topology_from_dict(_doc(None))), "s")
    idle = _routes(render_envoy(topology_from_dict(_doc({"version": "v2", "weight": 0}))), "s")
    assert idle == plain  # a canary that takes nothing changes no route
    full = _routes(render_envoy(topology_from_dict(_doc({"version": "v2", "weight": 100}))), "s")
    assert full[-1]["route"]["cluster"] == "s|v2>baseline"
    assert "s/idle" in [r["name"] for r in full]


def _shared_corpus() -> ModuleType:
    """tests/routing/canary_corpus.py (it imports its neighbours by module name)."""
    routing = str(Path(__file__).resolve().parents[1] / "routing")
    if routing not in sys.path:
        sys.path.insert(0, routing)
    import canary_corpus

    return canary_corpus


async def test_the_shared_canary_corpus_on_real_envoy(
    fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The corpus the Istio and Gateway API renderers are checked against (tests/routing), with
    # its endpoints replaced by live upstreams; every third request, for time.
    corpus = _shared_corpus()
    doc = topology_to_dict(corpus.topology())
    for svc, spec in doc["services"].items():
        spec["versions"] = {v: [fleet.start(f"shared-{svc}", v)] for v in spec["versions"]}
    topo = topology_from_dict(doc)
    cases = corpus.canary_requests(topo)[::3]
    bootstrap = render_envoy(topo, listen="127.0.0.1:0", admin="127.0.0.1:0")
    limit = asyncio.Semaphore(32)
    with running_envoy(bootstrap, workdir=tmp_path_factory.mktemp("envoy-shared")) as proxy:
        async with aiohttp.ClientSession() as session:

            async def one(svc: str, label: str, headers: Headers, path: str) -> str | None:
                lane, want = corpus.predict(topo, svc, headers, path)
                async with limit:
                    status, got = await _served(session, proxy.url(path), svc, headers)
                if status == 503:
                    got = "503"
                res = topo.resolve(svc, lane)
                assert res is not None
                ok = got in (res.serving, res.canary.version) if want is None else got == want
                return None if ok else f"{svc} <- {label}: {want} != {status} {got}"

            results = await asyncio.gather(
                *(one(s, *case) for s in topo.services for case in cases)
            )
    failures = [r for r in results if r]
    assert len(results) > 5000
    assert not failures, f"{len(failures)} of {len(results)} wrong:\n" + "\n".join(failures[:20])
