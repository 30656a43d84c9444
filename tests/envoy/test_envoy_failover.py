"""Stopping a lane's version under load: real Envoy fails over to the next lane with 0 errors.

Topology: feature-b falls back to feature-a, which falls back to the baseline. Service ``cart``
has one feature-b endpoint, two feature-a endpoints and one baseline endpoint. Constant load
(feature-a, feature-b and untagged GETs, and feature-a and feature-b POSTs) runs while the
versions are stopped one by one (their servers closed gracefully: the listening socket first,
then idle keep-alive connections):

1. stop feature-b            -> feature-b requests go to feature-a
2. stop one feature-a (of 2) -> everything stays on the surviving feature-a endpoint
3. stop the other feature-a  -> feature-a and feature-b requests go to the baseline

A last test restarts a stopped version: with the active check its lane comes back to it.

Every GET of the run must answer 200. A POST must answer 200 unless it overlapped a stop: Envoy
may have written it on a keep-alive connection the stopping version was closing, and a request
the upstream may have acted on is not replayed (RFC 9110 9.2.2), so such a POST may get Envoy's
JSON 503 naming the service; it is never sent twice (see test_a_request_inside_a_dying_version).
Every request that started and ended between two stops must come from the version the walk
names for that state. Envoy's counters prove that connections really failed and were retried.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from envoy_upstreams import Fleet
from envoyproc import EnvoyProcess, running_envoy

from lane_router import topology_from_dict
from lane_router.render.envoy import cluster_name, render_envoy

# (lane, method) -> concurrent closed-loop clients
WORKERS = {
    ("feature-a", "GET"): 5,
    ("feature-b", "GET"): 5,
    (None, "GET"): 2,
    ("feature-a", "POST"): 2,
    ("feature-b", "POST"): 2,
}
PER_PHASE = 150  # requests that must complete entirely inside each steady phase


@dataclass
class Load:
    """Closed-loop load; each record notes the phase at its start and at its end."""

    url: str
    phase: int = 0
    records: list[tuple[int, int, str | None, str, int, str]] = field(default_factory=list)
    steady: dict[int, int] = field(default_factory=dict)
    wanted: dict[int, asyncio.Event] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def worker(self, session: aiohttp.ClientSession, lane: str | None, method: str) -> None:
        headers = {"host": "cart"}
        if lane:
            headers["x-lane"] = lane
        body = b"order=1" if method == "POST" else None
        while not self.stop.is_set():
            start = self.phase
            async with session.request(method, self.url, headers=headers, data=body) as resp:
                raw = await resp.read()
                status = resp.status
            answer = json.loads(raw)
            served = answer["lane"] if status == 200 else json.dumps(answer)[:300]
            end = self.phase
            self.records.append((start, end, lane, method, status, served))
            if start == end:
                self.steady[end] = self.steady.get(end, 0) + 1
                event = self.wanted.get(end)
                if event is not None and self.steady[end] >= PER_PHASE:
                    event.set()

    async def until_steady(self, phase: int, timeout: float = 30) -> None:
        event = self.wanted.setdefault(phase, asyncio.Event())
        if self.steady.get(phase, 0) >= PER_PHASE:
            return
        await asyncio.wait_for(event.wait(), timeout)


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    with Fleet() as fleet:
        yield fleet


@pytest.mark.parametrize("health_check_interval", [None, 0.5], ids=["passive", "active-hc"])
async def test_stopped_versions_fail_over_with_zero_errors(
    fleet: Fleet, tmp_path_factory: pytest.TempPathFactory, health_check_interval: float | None
) -> None:
    topo = topology_from_dict(
        {
            "lanes": {"feature-a": {}, "feature-b": {"fallback": "feature-a"}},
            "services": {
                "cart": {
                    "versions": {
                        "baseline": [fleet.start("cart", "baseline")],
                        "feature-a": [fleet.start("cart", "feature-a", index=i) for i in (0, 1)],
                        "feature-b": [fleet.start("cart", "feature-b")],
                    }
                }
            },
        }
    )
    assert topo.routes["cart"]["feature-b"].candidates == ("feature-b", "feature-a", "baseline")
    bootstrap = render_envoy(
        topo,
        listen="127.0.0.1:0",
        admin="127.0.0.1:0",
        health_check_interval=health_check_interval,
    )
    workdir = tmp_path_factory.mktemp("envoy-failover")
    with running_envoy(bootstrap, workdir=workdir, validate=True) as proxy:
        await _run_scenario(fleet, proxy, active_checks=health_check_interval is not None)


async def _run_scenario(fleet: Fleet, proxy: EnvoyProcess, *, active_checks: bool) -> None:
    load = Load(proxy.url("/checkout"))
    # Steady phases and who must serve each lane in them (None = untagged).
    expected = {
        0: {"feature-a": "feature-a", "feature-b": "feature-b", None: "baseline"},
        2: {"feature-a": "feature-a", "feature-b": "feature-a", None: "baseline"},
        4: {"feature-a": "feature-a", "feature-b": "feature-a", None: "baseline"},
        6: {"feature-a": "baseline", "feature-b": "baseline", None: "baseline"},
    }
    stops = [("feature-b", 0), ("feature-a", 0), ("feature-a", 1)]
    async with aiohttp.ClientSession() as session:
        tasks = [
            asyncio.create_task(load.worker(session, lane, method))
            for (lane, method), n in WORKERS.items()
            for _ in range(n)
        ]
        try:
            await load.until_steady(0)
            for lane, index in stops:
                load.phase += 1  # stopping: either version may answer
                await fleet.astop("cart", lane, index=index)
                load.phase += 1  # stopped
                await load.until_steady(load.phase)
        finally:
            load.stop.set()
            await asyncio.gather(*tasks)

    def steady(r: tuple) -> bool:
        return r[0] == r[1] and r[0] in expected

    errors = [r for r in load.records if r[4] != 200]
    assert not [r for r in errors if r[3] == "GET"], f"GETs failed: {errors[:5]}"
    assert not [r for r in errors if steady(r)], f"failed between stops: {errors[:5]}"
    for r in errors:  # a POST overlapping a stop: Envoy's JSON 503 naming the service and lane
        answer = json.loads(r[5])
        assert (r[4], answer["service"], answer["lane"]) == (503, "cart", r[2]), r
    wrong = [r for r in load.records if steady(r) and r[5] != expected[r[0]][r[2]]]
    assert not wrong, f"{len(wrong)} answered by the wrong version: {wrong[:5]}"
    walks = {
        "feature-a": ("feature-a", "baseline"),
        "feature-b": ("feature-b", "feature-a", "baseline"),
    }
    outside = [
        r for r in load.records if r[4] == 200 and r[5] not in walks.get(r[2], ("baseline",))
    ]
    assert not outside, f"answered outside the lane's walk: {outside[:5]}"
    # POSTs ran and were answered in every steady phase.
    assert {r[0] for r in load.records if r[3] == "POST" and steady(r)} == set(expected)

    # The failover path was really taken: each stopped version was found unhealthy (ejected by
    # passive health, or failed an active check), and every retry Envoy made succeeded.
    stats = proxy.stats("cluster.")
    for lane in ("feature-a", "feature-b"):
        prefix = f"cluster.{cluster_name('cart', lane)}."
        found = stats[prefix + "outlier_detection.ejections_enforced_total"] + stats.get(
            prefix + "health_check.failure", 0
        )
        assert found > 0, f"{lane} was never seen unhealthy"
    retried = 0
    for walk in (("feature-a", "baseline"), ("feature-b", "feature-a", "baseline")):
        prefix = f"cluster.{cluster_name('cart', walk)}."
        assert stats.get(prefix + "upstream_rq_retry_limit_exceeded", 0) == 0
        assert stats.get(prefix + "upstream_rq_retry_overflow", 0) == 0
        retried += stats.get(prefix + "upstream_rq_retry_success", 0)
    if not active_checks:  # only failed requests can have revealed the stopped versions
        assert retried > 0
    assert stats[f"cluster.{cluster_name('cart', 'baseline')}.upstream_rq_completed"] > 0


async def test_restarted_version_takes_its_traffic_back(
    fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # With the active check, a lane version that comes back (same address, as a redeployed pod
    # behind a stable endpoint) serves its lane again without touching Envoy; no request fails.
    endpoint = fleet.start("cart", "feature-a")
    topo = topology_from_dict(
        {
            "lanes": {"feature-a": {}},
            "services": {
                "cart": {
                    "versions": {
                        "baseline": [fleet.start("cart", "baseline")],
                        "feature-a": [endpoint],
                    }
                }
            },
        }
    )
    port = int(endpoint.rsplit(":", 1)[1])
    bootstrap = render_envoy(
        topo, listen="127.0.0.1:0", admin="127.0.0.1:0", health_check_interval=0.2
    )
    workdir = tmp_path_factory.mktemp("envoy-restart")
    answers: list[tuple[int, str]] = []
    with running_envoy(bootstrap, workdir=workdir) as proxy:
        async with aiohttp.ClientSession() as session:

            async def ask() -> str:
                headers = {"host": "cart", "x-lane": "feature-a"}
                async with session.get(proxy.url("/"), headers=headers) as resp:
                    raw = await resp.read()
                    answers.append((resp.status, raw.decode("latin-1")[:200]))
                    return json.loads(raw)["lane"] if resp.status == 200 else "error"

            assert await ask() == "feature-a"
            await fleet.astop("cart", "feature-a")
            assert await ask() == "baseline"
            await fleet.astart("cart", "feature-a", port=port)
            deadline = asyncio.get_running_loop().time() + 20
            while await ask() != "feature-a":  # poll with real requests, under a deadline
                assert asyncio.get_running_loop().time() < deadline, "never came back"
                await asyncio.sleep(0.02)
    assert all(status == 200 for status, _ in answers), answers


class _DiesMidRequest:
    """A version that reads each request whole and then dies without answering: the connection
    is closed under Envoy, as when the process is killed with the request inside it."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            self.received.append(head.split(b" ", 1)[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.mark.parametrize("method", ["GET", "PUT", "POST", "PATCH"])
async def test_a_request_inside_a_dying_version(
    fleet: Fleet, tmp_path_factory: pytest.TempPathFactory, method: str
) -> None:
    # Nothing was answered yet: an idempotent request is sent again, to the next lane of its walk;
    # a POST or PATCH may already have had its effect, so it is not replayed (RFC 9110 9.2.2):
    # the client gets Envoy's JSON 503 naming the service and decides itself.
    dying = _DiesMidRequest()
    topo = topology_from_dict(
        {
            "lanes": {"feature-a": {}},
            "services": {
                "cart": {
                    "versions": {
                        "baseline": [fleet.start("cart", "baseline")],
                        "feature-a": [await dying.start()],
                    }
                }
            },
        }
    )
    bootstrap = render_envoy(topo, listen="127.0.0.1:0", admin="127.0.0.1:0")
    workdir = tmp_path_factory.mktemp("envoy-dying")
    try:
        with running_envoy(bootstrap, workdir=workdir) as proxy:
            async with (
                aiohttp.ClientSession() as session,
                session.request(
                    method,
                    proxy.url("/orders"),
                    data=b"order=1",
                    headers={"host": "cart", "x-lane": "feature-a"},
                ) as resp,
            ):
                status, body = resp.status, json.loads(await resp.read())
            baseline_requests = proxy.stats("cluster.cart|baseline.")[
                "cluster.cart|baseline.upstream_rq_total"
            ]
    finally:
        await dying.close()
    assert dying.received[0] == method.encode()
    if method in ("GET", "PUT"):
        assert (status, body["lane"]) == (200, "baseline")
        assert baseline_requests == 1
    else:
        assert status == 503
        assert (body["service"], body["lane"]) == ("cart", "feature-a")
        assert dying.received == [method.encode()]  # sent once, never again
        assert baseline_requests == 0
