"""The sidecar as ``HTTP_PROXY``, the way ``lanes inject`` wires app containers: one real client
of each kind sends ``http://reviews:9080/`` (a name that resolves nowhere here) with a lane
header, and the sidecar routes it by the absolute-form target. requests, httpx and urllib read
the proxy from the environment; aiohttp only with ``ClientSession(trust_env=True)``."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
import pytest
import requests
from sidecar_helpers import Loop, SidecarProc, Upstream

URL = "http://reviews:9080/who"


def _requests(headers: dict[str, str]) -> dict[str, Any]:
    with requests.Session() as s:
        return s.get(URL, headers=headers, timeout=10).json()


def _httpx(headers: dict[str, str]) -> dict[str, Any]:
    with httpx.Client(timeout=10) as c:
        return c.get(URL, headers=headers).json()


def _urllib(headers: dict[str, str]) -> dict[str, Any]:
    # urlopen() reads the proxy variables once, when it builds its global opener on first use
    # (in this process, an earlier test): an opener built now reads them now.
    opener = urllib.request.build_opener()
    with opener.open(urllib.request.Request(URL, headers=headers), timeout=10) as r:
        return json.loads(r.read())


async def _aiohttp(headers: dict[str, str]) -> dict[str, Any]:
    async with aiohttp.ClientSession(trust_env=True) as s, s.get(URL, headers=headers) as r:
        return await r.json()


@pytest.mark.parametrize("client", ["requests", "httpx", "urllib", "aiohttp"])
def test_clients_reach_lanes_through_http_proxy(
    client: str,
    monkeypatch: pytest.MonkeyPatch,
    loop: Loop,
    upstreams: Callable[..., Upstream],
    sidecars: Callable[..., SidecarProc],
) -> None:
    base, lane_a = upstreams("baseline"), upstreams("feature-a")
    sc = sidecars(
        {
            "lanes": {"feature-a": {}},
            "services": {
                "reviews": {
                    "port": 9080,
                    "versions": {"baseline": [base.endpoint], "feature-a": [lane_a.endpoint]},
                }
            },
        }
    )
    monkeypatch.setenv("HTTP_PROXY", f"http://{sc.proxy[0]}:{sc.proxy[1]}")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")  # what inject sets; reviews not in it
    for var in ("http_proxy", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    for lane, served in ((None, "baseline"), ("feature-a", "feature-a"), ("nope", "baseline")):
        headers = {"x-lane": lane} if lane else {}
        if client == "aiohttp":
            got = loop.run(_aiohttp(headers))
        else:
            got = {"requests": _requests, "httpx": _httpx, "urllib": _urllib}[client](headers)
        assert got["served"] == served, (client, lane)
