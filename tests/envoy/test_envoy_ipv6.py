"""IPv6 on both sides of real Envoy, with a custom routing header and baggage key.

The listener and admin bind ``[::1]``; feature-a's version listens on ``[::1]`` too, the baseline
on 127.0.0.1. The topology renames the carriers (``x-team-lane``, baggage ``team.lane``): the
Lua filter must follow the topology, and the default ``x-lane`` means nothing here.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import aiohttp
import pytest
from envoy_upstreams import Fleet
from envoyproc import EnvoyProcess, running_envoy

from lane_router import topology_from_dict
from lane_router.render.envoy import render_envoy


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet() as fleet:
        yield fleet


@pytest.fixture(scope="module")
def envoy(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyProcess]:
    topo = topology_from_dict(
        {
            "header": "x-team-lane",
            "baggageKey": "team.lane",
            "lanes": {"feature-a": {}},
            "services": {
                "search": {
                    "port": 8080,
                    "versions": {
                        "baseline": [fleet.start("search", "baseline")],
                        "feature-a": [fleet.start("search", "feature-a", host="::1")],
                    },
                }
            },
        }
    )
    assert topo.services["search"].versions["feature-a"][0].is_ipv6
    bootstrap = render_envoy(topo, listen="[::1]:0", admin="[::1]:0")
    workdir = tmp_path_factory.mktemp("envoy-ipv6")
    with running_envoy(bootstrap, workdir=workdir, validate=True) as proxy:
        yield proxy


async def _get(url: str, headers: dict[str, str]) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, json.loads(await resp.read())


async def test_listener_is_ipv6(envoy: EnvoyProcess) -> None:
    host, _ = envoy.address()
    assert host == "::1"
    assert envoy.url().startswith("http://[::1]:")


@pytest.mark.parametrize(
    ("headers", "lane", "forwarded"),
    [
        ({"x-team-lane": "feature-a"}, "feature-a", ["feature-a"]),
        ({"baggage": "user=1,team.lane=feature-a;ttl=5"}, "feature-a", ["feature-a"]),
        ({"x-lane": "feature-a"}, "baseline", []),  # not this topology's header
        ({"baggage": "lane=feature-a"}, "baseline", []),  # not this topology's key
        ({}, "baseline", []),
    ],
)
async def test_custom_carriers_route_to_the_ipv6_version(
    envoy: EnvoyProcess, headers: dict[str, str], lane: str, forwarded: list[str]
) -> None:
    status, body = await _get(envoy.url("/q"), {"host": "search:8080", **headers})
    assert status == 200
    assert body["lane"] == lane
    assert body["lane_headers"].get("x-team-lane", []) == forwarded
    # The default header is not this topology's: passed through untouched, never rewritten.
    assert body["x-lane"] == ([headers["x-lane"]] if "x-lane" in headers else [])


async def test_stopped_ipv6_version_falls_back(envoy: EnvoyProcess, fleet: Fleet) -> None:
    await fleet.astop("search", "feature-a")
    answers = [
        await _get(envoy.url("/q"), {"host": "search", "x-team-lane": "feature-a"})
        for _ in range(20)
    ]
    assert [(s, b["lane"]) for s, b in answers] == [(200, "baseline")] * 20
