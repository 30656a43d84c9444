"""Real Envoy routes every request of a corpus to the version the topology model predicts.

The expected answer of each request comes from the project's own definitions, never from the
renderer: the lane from ``lanes_sdk``'s extract order (``lane_from_headers``) and the version
from ``Topology.resolve``. One Envoy and one set of upstreams serve the whole module.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator

import aiohttp
import pytest
from envoy_upstreams import Fleet
from envoyproc import EnvoyProcess, running_envoy
from multidict import CIMultiDict

from lane_router import Topology, topology_from_dict
from lane_router.render.envoy import render_envoy
from lanes_sdk.wire import lane_from_headers

# lane -> fallback; hotfix is strict, hotfix-ui falls back into it (so stops there too).
LANES = {
    "feature-a": {},
    "feature-b": {"fallback": "feature-a"},
    "feature-c": {"fallback": "feature-b"},
    "hotfix": {"strict": True},
    "hotfix-ui": {"fallback": "hotfix"},
}
# service -> lanes deploying it (every service has a baseline)
DEPLOYED = {
    "details": ("baseline", "feature-a", "feature-b"),
    "productpage": ("baseline",),
    "ratings": ("baseline", "feature-b", "hotfix-ui"),
    "reviews": ("baseline", "feature-a", "hotfix"),
}
PORT = 9080
NAMESPACES = {"ratings": "ratings-ns"}  # the rest live in the topology's namespace


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet() as fleet:
        yield fleet


@pytest.fixture(scope="module")
def topo(fleet: Fleet) -> Topology:
    services = {}
    for svc, lanes in DEPLOYED.items():
        entry: dict = {
            "port": PORT,
            "versions": {lane: [fleet.start(svc, lane)] for lane in lanes},
        }
        if svc in NAMESPACES:
            entry["namespace"] = NAMESPACES[svc]
        services[svc] = entry
    return topology_from_dict({"namespace": "shop", "lanes": LANES, "services": services})


@pytest.fixture(scope="module")
def envoy(topo: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyProcess]:
    bootstrap = render_envoy(topo, listen="127.0.0.1:0", admin="127.0.0.1:0")
    workdir = tmp_path_factory.mktemp("envoy-routing")
    with running_envoy(bootstrap, workdir=workdir, validate=True) as proxy:
        yield proxy


def _hosts(topo: Topology, svc: str) -> list[str]:
    ns = topo.namespace_of(svc)
    names = [svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"]
    return [h for n in names for h in (n, f"{n}:{PORT}")]


def _corpus(topo: Topology) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(case id, service, request headers) for every service, lane and carrier variant."""
    cases: list[tuple[str, str, list[tuple[str, str]]]] = []
    lanes = (*topo.all_lanes, "undeclared")
    for svc in topo.services:
        hosts = _hosts(topo, svc)
        variants: list[tuple[str, list[tuple[str, str]]]] = []
        for lane in lanes:
            other = "feature-a" if lane != "feature-a" else "feature-b"
            encoded = "%" + format(ord(lane[0]), "02X") + lane[1:]
            variants += [
                (f"x-lane {lane}", [("x-lane", lane)]),
                (f"baggage {lane}", [("baggage", f"lane={lane}")]),
                (f"baggage members {lane}", [("baggage", f"k1=v1, lane={lane};ttl=60;p, k2=v2")]),
                (f"baggage spaces {lane}", [("baggage", f"a=1 ,  lane  =  {lane}  ")]),
                (f"two baggage {lane}", [("baggage", "userid=7"), ("baggage", f"lane={lane}")]),
                (f"first member invalid {lane}", [("baggage", f"lane=NOT VALID,lane={lane}")]),
                (f"percent-encoded {lane}", [("baggage", f"lane={encoded}")]),
                (
                    f"invalid x-lane, baggage {lane}",
                    [("x-lane", "Bad_Lane"), ("baggage", f"lane={lane}")],
                ),
                (
                    f"x-lane {lane} vs baggage {other}",
                    [("x-lane", lane), ("baggage", f"lane={other}")],
                ),
                (
                    f"x-lane {other} vs baggage {lane}",
                    [("x-lane", other), ("baggage", f"lane={lane}")],
                ),
            ]
        variants += [
            ("no lane", []),
            ("empty x-lane", [("x-lane", "")]),
            ("upper-case x-lane", [("x-lane", "FEATURE-A")]),
            ("64-char x-lane", [("x-lane", "a" * 64)]),
            ("10 KB x-lane", [("x-lane", "feature-a" * 1200)]),
            ("trailing dash", [("x-lane", "feature-")]),
            ("non-ascii x-lane", [("x-lane", "feature-\u00e4")]),
            ("key prefix", [("baggage", "lanes=feature-a,xlane=feature-b")]),
            ("value prefix", [("baggage", "lane=feature-ab")]),
            (
                "undeclared x-lane beats baggage",
                [("x-lane", "undeclared"), ("baggage", "lane=feature-a")],
            ),
            ("two x-lane, first invalid", [("x-lane", "NO"), ("x-lane", "feature-b")]),
            ("10 KB baggage, lane last", [("baggage", "k=" + "v" * 10_000 + ",lane=feature-c")]),
        ]
        for i, (name, headers) in enumerate(variants):
            cases.append((f"{svc} <- {name}", svc, [("host", hosts[i % len(hosts)]), *headers]))
    return cases


async def _send(
    session: aiohttp.ClientSession, url: str, headers: list[tuple[str, str]]
) -> tuple[int, str, dict]:
    async with session.get(url, headers=CIMultiDict(headers)) as resp:
        raw = await resp.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"unparsed": raw[:200].decode("latin-1")}
        return resp.status, resp.headers.get("content-type", ""), body


def _expectation(
    topo: Topology, svc: str, headers: list[tuple[str, str]]
) -> tuple[str | None, str | None]:
    """(lane of the request, lane expected to serve it; None = strict miss)."""
    lane = lane_from_headers(
        [v for k, v in headers if k == "x-lane"], [v for k, v in headers if k == "baggage"]
    )
    res = topo.resolve(svc, lane)
    assert res is not None
    return lane, res.serving


async def test_every_request_reaches_the_predicted_version(
    topo: Topology, envoy: EnvoyProcess
) -> None:
    cases = _corpus(topo)
    url = envoy.url("/probe?x=1")
    limit = asyncio.Semaphore(16)
    async with aiohttp.ClientSession(skip_auto_headers=("User-Agent",)) as session:

        async def one(case: tuple[str, str, list[tuple[str, str]]]) -> str | None:
            name, svc, headers = case
            lane, serving = _expectation(topo, svc, headers)
            async with limit:
                status, ctype, body = await _send(session, url, headers)
            if serving is None:
                ok = (
                    status == 503
                    and ctype.startswith("application/json")
                    and body.get("service") == svc
                    and body.get("lane") == lane
                    and body.get("error") == topo.resolve(svc, lane).miss_detail
                )
            else:
                ok = (
                    status == 200
                    and (body.get("service"), body.get("lane")) == (svc, serving)
                    and body.get("x-lane") == ([lane] if lane else [])
                )
            return (
                None if ok else f"{name}: expected {serving!r} (lane {lane!r}), got {status} {body}"
            )

        failures = [f for f in await asyncio.gather(*(one(c) for c in cases)) if f]
    assert len(cases) > 250
    assert not failures, f"{len(failures)} of {len(cases)} wrong:\n" + "\n".join(failures[:20])


async def test_strict_miss_is_a_json_503_naming_lane_and_service(
    topo: Topology, envoy: EnvoyProcess
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            envoy.url("/"), headers={"host": "productpage", "baggage": "lane=hotfix-ui"}
        ) as resp,
    ):
        assert resp.status == 503
        assert resp.headers["content-type"] == "application/json"
        body = json.loads(await resp.read())
    assert body["service"] == "productpage"
    assert body["lane"] == "hotfix-ui"
    # hotfix-ui falls back to the strict lane hotfix: the answer names where the walk stopped.
    assert body["error"] == (
        "lane hotfix-ui falls back to strict lane hotfix, which does not deploy productpage"
    )
    assert body["error"] == topo.resolve("productpage", "hotfix-ui").miss_detail


async def test_unknown_host_is_a_json_404(envoy: EnvoyProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            envoy.url("/"), headers={"host": "nosuchservice", "x-lane": "feature-a"}
        ) as resp,
    ):
        assert resp.status == 404
        assert resp.headers["content-type"] == "application/json"
        body = json.loads(await resp.read())
    assert body["host"] == "nosuchservice"
    assert body["lane"] == "feature-a"
    assert body["service"] is None
    assert "Host" in body["error"]


async def test_stopped_strict_version_is_a_json_503(
    envoy: EnvoyProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # reviews|hotfix has nothing to fall back to: Envoy's own error must still be JSON.
    topo = topology_from_dict(
        {
            "lanes": {"hotfix": {"strict": True}},
            "services": {
                "reviews": {"versions": {"baseline": ["127.0.0.1:9"], "hotfix": [_closed_port()]}}
            },
        }
    )
    workdir = tmp_path_factory.mktemp("envoy-strict-down")
    with running_envoy(
        render_envoy(topo, listen="127.0.0.1:0", admin="127.0.0.1:0"), workdir=workdir
    ) as proxy:
        async with (
            aiohttp.ClientSession() as session,
            session.get(proxy.url("/"), headers={"host": "reviews", "x-lane": "hotfix"}) as resp,
        ):
            assert resp.status == 503
            assert resp.headers["content-type"] == "application/json"
            body = json.loads(await resp.read())
    assert body["service"] == "reviews"
    assert body["lane"] == "hotfix"
    assert body["flags"]  # Envoy's response flags say why (UF: upstream connection failure)


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_http10_is_served(topo: Topology, envoy: EnvoyProcess) -> None:
    # curl -0, ab and old health checkers speak HTTP/1.0: served, not 426.
    host, port = envoy.address()
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: reviews\r\nx-lane: feature-a\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    answer = json.loads(body)
    assert (answer["service"], answer["lane"]) == ("reviews", "feature-a")


async def test_post_body_reaches_the_lane(envoy: EnvoyProcess) -> None:
    payload = b"x" * 200_000
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            envoy.url("/orders"),
            data=payload,
            headers={"host": "details", "baggage": "lane=feature-c"},
        ) as resp,
    ):
        assert resp.status == 200
        body = json.loads(await resp.read())
    # feature-c -> feature-b deploys details
    assert (body["lane"], body["body_bytes"], body["x-lane"]) == (
        "feature-b",
        len(payload),
        ["feature-c"],
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_http2_cleartext_client(envoy: EnvoyProcess) -> None:
    # h2c with prior knowledge: :authority picks the service, the Lua filter sees h2 headers.
    done = subprocess.run(
        [
            "curl", "-sS", "--http2-prior-knowledge", "--max-time", "10",
            "-H", "host: ratings.ratings-ns.svc.cluster.local:9080",
            "-H", "baggage: k=v", "-H", "baggage: lane=feature-c",
            "-w", "\n%{http_version}", envoy.url("/h2"),
        ],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    body, _, version = done.stdout.rpartition("\n")
    assert version == "2"
    answer = json.loads(body)
    # feature-c -> feature-b deploys ratings
    assert (answer["service"], answer["lane"], answer["x-lane"]) == (
        "ratings",
        "feature-b",
        ["feature-c"],
    )


async def test_websocket_follows_the_lane(envoy: EnvoyProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            envoy.url("/ws"), headers={"host": "reviews:9080", "baggage": "lane=feature-b"}
        ) as ws,
    ):
        await ws.send_str("hello")
        reply = await ws.receive_str(timeout=10)
    assert reply == "reviews/feature-a: hello"  # feature-b -> feature-a deploys reviews


def test_absolute_form_target_picks_the_service(envoy: EnvoyProcess) -> None:
    # A client using Envoy as its HTTP_PROXY: the request target names the service, and wins
    # over a different Host header (RFC 9112, section 3.2.2).
    host, port = envoy.address()
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"GET http://details.shop:9080/x HTTP/1.1\r\nHost: reviews\r\n"
            b"baggage: lane=feature-b\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    answer = json.loads(body)
    assert (answer["service"], answer["lane"], answer["path"]) == ("details", "feature-b", "/x")
