"""Property: for any routing-header and baggage lines, the Lua filter in real Envoy extracts the
lane ``lanes_sdk.lane_from_headers`` extracts, and Envoy routes to the version the model names.

Generated inputs mix valid, invalid, undeclared and prefix-colliding lane names, keys that only
look like the baggage key, spaces, properties, percent-encoding and repeated field lines.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest
from envoy_upstreams import Fleet
from envoyproc import EnvoyProcess, running_envoy
from hypothesis import given, settings
from hypothesis import strategies as st

from lane_router import Topology, topology_from_dict
from lane_router.render.envoy import render_envoy
from lanes_sdk.wire import lane_from_headers

LANES = ("a", "ab", "feature-a", "feature-b")


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet() as fleet:
        yield fleet


@pytest.fixture(scope="module")
def topo(fleet: Fleet) -> Topology:
    versions = {lane: [fleet.start("echo", lane)] for lane in ("baseline", "a", "feature-a")}
    return topology_from_dict(
        {
            "lanes": {"a": {}, "ab": {"fallback": "a"}, "feature-a": {}, "feature-b": {}},
            "services": {"echo": {"versions": versions}},
        }
    )


@pytest.fixture(scope="module")
def envoy(topo: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyProcess]:
    bootstrap = render_envoy(topo, listen="127.0.0.1:0", admin="127.0.0.1:0")
    workdir = tmp_path_factory.mktemp("envoy-property")
    with running_envoy(bootstrap, workdir=workdir, validate=True) as proxy:
        yield proxy


_OWS = st.sampled_from(["", " ", "  ", "\t"])
_NAMES = st.one_of(
    st.sampled_from([*LANES, "baseline", "undeclared", "A", "a-", "-a", "a" * 63, "a" * 64, ""]),
    st.text(alphabet="abf-AZ9 _.", max_size=10),
)


@st.composite
def _value(draw: st.DrawFn) -> str:
    name = draw(_NAMES)
    if name and draw(st.booleans()) and draw(st.booleans()):
        i = draw(st.integers(0, len(name) - 1))
        name = name[:i] + "%" + format(ord(name[i]), "02X") + name[i + 1 :]
    return draw(_OWS) + name + draw(_OWS)


@st.composite
def _member(draw: st.DrawFn) -> str:
    key = draw(st.sampled_from(["lane", "lane", "lanes", "xlane", "Lane", "other"]))
    prop = draw(st.sampled_from(["", ";ttl=60", ";p", ";lane=feature-b"]))
    return f"{draw(_OWS)}{key}{draw(_OWS)}={draw(_value())}{prop}"


_BAGGAGE_LINE = st.lists(_member(), min_size=1, max_size=4).map(",".join)


def _send(envoy: EnvoyProcess, headers: list[tuple[str, str]]) -> tuple[int, dict]:
    host, port = envoy.address()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.putrequest("GET", "/p", skip_host=True)
        conn.putheader("Host", "echo")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@settings(max_examples=300, deadline=None)
@given(
    x_lanes=st.lists(_value(), max_size=2),
    baggage=st.lists(_BAGGAGE_LINE, max_size=3),
)
def test_envoy_extracts_the_sdk_lane(
    topo: Topology, envoy: EnvoyProcess, x_lanes: list[str], baggage: list[str]
) -> None:
    # Envoy trims a field's surrounding whitespace; the SDK ignores it too.
    lane = lane_from_headers(x_lanes, baggage)
    res = topo.resolve("echo", lane)
    assert res is not None
    status, body = _send(
        envoy, [("x-lane", v) for v in x_lanes] + [("baggage", b) for b in baggage]
    )
    assert status == 200, body
    assert body["x-lane"] == ([lane] if lane else [])
    assert body["lane"] == res.serving
