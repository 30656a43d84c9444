"""Real Envoy as an edge: jwt_authn verifies tokens minted by ``lanes token``; client lane headers
never count; every bad token is baseline (200), never 401; the token header never reaches the
upstream. One Envoy and one fleet serve the module (a second Envoy checks key removal)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edge_tokens import Keys, attack_tokens, make_keys
from envoy_upstreams import Fleet
from envoyproc import EnvoyProcess, running_envoy
from hypothesis import given, settings
from hypothesis import strategies as st
from test_edge_strip import COOKIE_CASES, STRIP_CASES

from lane_router import Topology, topology_from_dict
from lane_router._sidecar._edge import strip_baggage_lane, strip_cookie
from lane_router._token import load_jwks, mint
from lane_router.render import render_envoy
from lane_router.render.envoy_edge import add_envoy_edge


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet() as fleet:
        yield fleet


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def topo(fleet: Fleet) -> Topology:
    versions = {lane: [fleet.start("web", lane)] for lane in ("baseline", "feature-a", "hotfix")}
    return topology_from_dict(
        {
            "lanes": {"feature-a": {}, "hotfix": {}},
            "services": {"web": {"port": 80, "versions": versions}},
        }
    )


def _edge_envoy(topo: Topology, jwks: dict[str, Any], workdir: Path) -> Any:
    text = json.dumps(jwks)
    bootstrap = add_envoy_edge(
        render_envoy(topo, listen="127.0.0.1:0", admin="127.0.0.1:0"), topo, load_jwks(text), text
    )
    return running_envoy(bootstrap, workdir=workdir, validate=True)


@pytest.fixture(scope="module")
def envoy(
    topo: Topology, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnvoyProcess]:
    with _edge_envoy(topo, keys.jwks, tmp_path_factory.mktemp("envoy-edge")) as proxy:
        yield proxy


def ask(proxy: EnvoyProcess, headers: list[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
    """GET through ``proxy`` with exactly these header lines (repeats kept, in order)."""
    host, port = proxy.address()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.putrequest("GET", "/", skip_host=True)
        conn.putheader("Host", "web")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, json.loads(body) if resp.status == 200 else {"raw": body}
    finally:
        conn.close()


def test_client_lane_headers_are_ignored_other_baggage_kept(envoy: EnvoyProcess) -> None:
    status, seen = ask(envoy, [("x-lane", "feature-a"), ("X-Lane", "hotfix")])
    assert (status, seen["lane"], seen["x-lane"]) == (200, "baseline", [])
    lines = [("baggage", line.decode()) for line, _ in STRIP_CASES]
    status, seen = ask(envoy, lines)
    assert (status, seen["lane"], seen["x-lane"]) == (200, "baseline", [])
    assert seen["baggage"] == [after.decode() for _, after in STRIP_CASES if after is not None]


@pytest.mark.parametrize("which", ["a", "b"])
def test_signed_lane_is_honoured_and_the_token_not_forwarded(
    envoy: EnvoyProcess, keys: Keys, which: str
) -> None:
    token = mint(getattr(keys, which), "feature-a", 600)
    status, seen = ask(
        envoy,
        [("x-lane", "hotfix"), ("baggage", "lane=hotfix,k=v"), ("x-lane-token", token)],
    )
    assert (status, seen["lane"], seen["x-lane"]) == (200, "feature-a", ["feature-a"])
    assert seen["baggage"] == ["k=v"]
    assert "x-lane-token" not in seen["lane_headers"]


def test_cookie_carrier(envoy: EnvoyProcess, keys: Keys) -> None:
    token = mint(keys.a, "feature-a", 600)
    status, seen = ask(envoy, [("cookie", f"theme=dark; lane_token={token}")])
    assert (status, seen["lane"], seen["cookie"]) == (200, "feature-a", ["theme=dark"])
    assert "x-lane-token" not in seen["lane_headers"]
    status, seen = ask(envoy, [("cookie", f'lane_token="{token}"')])  # quoted; nothing left
    assert (status, seen["lane"], seen["cookie"]) == (200, "feature-a", [])
    status, seen = ask(envoy, [("cookie", f"a=1; lane_token = {token} ;b=2")])  # trimmed
    assert (status, seen["lane"], seen["cookie"]) == (200, "feature-a", ["a=1;b=2"])
    status, seen = ask(envoy, [("x-lane-token", "bad"), ("cookie", f"lane_token={token}")])
    assert (status, seen["lane"], seen["cookie"]) == (200, "baseline", [])  # the header wins


def test_every_attack_is_baseline_never_an_error(envoy: EnvoyProcess, keys: Keys) -> None:
    for name, token in attack_tokens(keys).items():
        if len(token) > 60_000:  # over Envoy's default 60 KB header limit: refused with 431
            status, _ = ask(envoy, [("x-lane-token", token)])
            assert status == 431, name
            status, seen = ask(envoy, [("cookie", f"lane_token={token[:30_000]}")])
        else:
            status, seen = ask(envoy, [("x-lane", "feature-a"), ("x-lane-token", token)])
        assert (status, seen["lane"]) == (200, "baseline"), name
        assert "x-lane-token" not in seen["lane_headers"], name


def test_a_key_removed_from_the_jwks_no_longer_verifies(
    topo: Topology, keys: Keys, tmp_path: Path
) -> None:
    with _edge_envoy(topo, keys.jwks_a_only, tmp_path) as proxy:
        assert ask(proxy, [("x-lane-token", mint(keys.a, "feature-a", 600))])[1]["lane"] == (
            "feature-a"
        )
        assert ask(proxy, [("x-lane-token", mint(keys.b, "feature-a", 600))])[1]["lane"] == (
            "baseline"
        )


def test_cookie_cases(envoy: EnvoyProcess) -> None:
    for line, after in COOKIE_CASES:
        status, seen = ask(envoy, [("cookie", line.decode())])
        assert (status, seen["cookie"]) == (200, [] if after is None else [after.decode()]), line
        assert "x-lane-token" not in seen["lane_headers"]


_PIECES = st.sampled_from(["lane", "lanes", "k", "=", "==", ",", ";", " ", "\t", "a-1", "%41", "x"])
_COOKIE_PIECES = st.sampled_from(
    ["lane_token", "lane_tokens", "a", "=", ";", "; ", " ", "\t", '"', "x.y", ","]
)


def _http(line: str) -> str:
    return line.strip(" \t")  # the value as HTTP delivers it


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    line=st.lists(_PIECES, min_size=1, max_size=12).map("".join).map(_http),
    cookie=st.lists(_COOKIE_PIECES, min_size=1, max_size=10).map("".join).map(_http),
)
def test_envoy_strips_like_the_sidecar(envoy: EnvoyProcess, line: str, cookie: str) -> None:
    """The Lua strip step and the sidecar's ``strip_baggage_lane`` / ``strip_cookie`` agree on
    any baggage and cookie line (one request carries both)."""
    headers = [(name, value) for name, value in (("baggage", line), ("cookie", cookie)) if value]
    if not headers:
        return
    status, seen = ask(envoy, headers)
    assert status == 200
    after = strip_baggage_lane(line.encode(), b"lane") if line else None
    assert seen["baggage"] == ([] if after is None else [after.decode()])
    after = strip_cookie(cookie.encode(), b"lane_token") if cookie else None
    assert seen["cookie"] == ([] if after is None else [after.decode()])
    assert seen["lane"] == "baseline"
    assert "x-lane-token" not in seen["lane_headers"]
