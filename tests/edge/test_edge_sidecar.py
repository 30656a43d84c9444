"""The real sidecar as an edge (``--edge --jwks``): client lane headers stripped, the lane from a
verified token only, every bad token baseline (never an error), the token header never
forwarded, the JWKS reloaded (rotation; a bad file keeps the old keys and is counted), and
/metrics counting outcomes. One sidecar and one pair of upstreams serve the module."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edge_tokens import Keys, attack_tokens, make_keys
from sidecar_helpers import (
    Loop,
    SidecarProc,
    Upstream,
    connect,
    read_response,
    start_sidecar,
    wait_for,
)
from sidecar_helpers import topology as make_topology
from test_edge_strip import STRIP_CASES

from lane_router._sidecar._edge import Edge
from lane_router._token import mint


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def ups(loop: Loop) -> Iterator[dict[str, Upstream]]:
    made = {name: Upstream(name, loop).start() for name in ("baseline", "feature-a")}
    yield made
    for up in made.values():
        up.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def edge(
    ups: dict[str, Upstream], keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SidecarProc]:
    topo = make_topology(
        reviews={"baseline": [ups["baseline"].endpoint], "feature-a": [ups["feature-a"].endpoint]}
    )
    work = tmp_path_factory.mktemp("edge")
    jwks = work / "jwks.json"
    jwks.write_text(json.dumps(keys.jwks))
    sc = start_sidecar(work, topo, "--edge", "--jwks", str(jwks), "--reload-interval", "0.05")
    yield sc
    sc.stop()


def ask(sc: SidecarProc, headers: list[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
    """GET with exactly these header lines (repeats kept); the upstream's echo."""
    lines = ["GET / HTTP/1.1", "Host: reviews", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    with connect(sc.proxy) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status, _, body = read_response(sock)
    seen = json.loads(body)
    if status == 200:
        seen["h"] = {}
        for k, v in seen["headers"]:
            seen["h"].setdefault(k, []).append(v)
    return status, seen


def lane_of(seen: dict[str, Any]) -> tuple[str, list[str]]:
    return seen["served"], seen["h"].get("x-lane", [])


def counters(sc: SidecarProc) -> dict[str, float]:
    out = {}
    for line in sc.metrics().splitlines():
        if line.startswith("lanes_edge_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_client_lane_headers_are_ignored_other_baggage_kept(edge: SidecarProc) -> None:
    before = counters(edge)
    status, seen = ask(edge, [("x-lane", "feature-a"), ("X-Lane", "feature-a")])
    assert (status, *lane_of(seen)) == (200, "baseline", [])
    status, seen = ask(edge, [("baggage", line.decode()) for line, _ in STRIP_CASES])
    assert (status, *lane_of(seen)) == (200, "baseline", [])
    assert seen["h"]["baggage"] == [a.decode() for _, a in STRIP_CASES if a is not None]
    after = counters(edge)
    changed = sum(1 for line, a in STRIP_CASES if a != line)
    assert after["lanes_edge_stripped_total"] - before["lanes_edge_stripped_total"] == 2 + changed
    assert after['lanes_edge_tokens_total{outcome="absent"}'] >= 2
    assert after["lanes_edge_verify_budget_exceeded_total"] == 0


@pytest.mark.parametrize("which", ["a", "b"])
def test_signed_lane_is_honoured_and_the_token_not_forwarded(
    edge: SidecarProc, keys: Keys, which: str
) -> None:
    token = mint(getattr(keys, which), "feature-a", 600)
    status, seen = ask(
        edge, [("x-lane", "hotfix"), ("baggage", "lane=hotfix,k=v"), ("x-lane-token", token)]
    )
    assert (status, *lane_of(seen)) == (200, "feature-a", ["feature-a"])
    assert seen["h"]["baggage"] == ["k=v"]
    assert "x-lane-token" not in seen["h"]


def test_cookie_carrier_and_cache(edge: SidecarProc, keys: Keys) -> None:
    token = mint(keys.a, "feature-a", 600)
    before = counters(edge)['lanes_edge_tokens_total{outcome="valid"}']
    for _ in range(3):
        status, seen = ask(edge, [("cookie", f"theme=dark; lane_token={token}")])
        assert (status, *lane_of(seen)) == (200, "feature-a", ["feature-a"])
        assert seen["h"]["cookie"] == ["theme=dark"]  # the token is a credential
    status, seen = ask(edge, [("cookie", f"a=1; lane_token = {token} ;b=2"), ("cookie", "c=3")])
    assert (status, *lane_of(seen)) == (200, "feature-a", ["feature-a"])
    assert seen["h"]["cookie"] == ["a=1;b=2", "c=3"]
    assert counters(edge)['lanes_edge_tokens_total{outcome="valid"}'] - before == 4


def test_every_attack_is_baseline_never_an_error(edge: SidecarProc, keys: Keys) -> None:
    before = counters(edge)
    attacks = attack_tokens(keys)
    for name, token in attacks.items():
        if len(token) > 60_000:  # over the header limit (64 KB): a 431 as for any request
            status, seen = ask(edge, [("x-lane-token", token)])
            assert status == 431, name
            token = token[:30_000]
        status, seen = ask(edge, [("x-lane", "feature-a"), ("x-lane-token", token)])
        assert (status, *lane_of(seen)) == (200, "baseline", []), name
        assert "x-lane-token" not in seen["h"], name
    after = counters(edge)
    grew = {k: after[k] - before.get(k, 0) for k in after if "tokens_total" in k}
    assert grew['lanes_edge_tokens_total{outcome="expired"}'] == 1
    assert grew['lanes_edge_tokens_total{outcome="invalid"}'] == len(attacks) - 1
    assert grew['lanes_edge_tokens_total{outcome="valid"}'] == 0


def test_jwks_reload_rotation_and_bad_file(edge: SidecarProc, keys: Keys) -> None:
    jwks = edge.path.parent / "jwks.json"
    old, new = mint(keys.a, "feature-a", 600), mint(keys.b, "feature-a", 600)
    failures = counters(edge)["lanes_edge_jwks_reload_failures_total"]
    _replace(jwks, "{not json")
    wait_for(
        lambda: counters(edge)["lanes_edge_jwks_reload_failures_total"] > failures,
        "a bad JWKS counted",
    )
    assert lane_of(ask(edge, [("x-lane-token", old)])[1])[0] == "feature-a"  # old keys kept
    assert "keeping the previous JWKS" in edge.logs()
    only_b = {"keys": [k for k in keys.jwks["keys"] if k["kid"] == "key-b"]}  # type: ignore[attr-defined]
    _replace(jwks, json.dumps(only_b))
    wait_for(
        lambda: lane_of(ask(edge, [("x-lane-token", old)])[1])[0] == "baseline",
        "the removed key rejected (cached verdicts dropped)",
    )
    assert lane_of(ask(edge, [("x-lane-token", new)])[1])[0] == "feature-a"
    _replace(jwks, json.dumps(keys.jwks))
    wait_for(lambda: lane_of(ask(edge, [("x-lane-token", old)])[1])[0] == "feature-a", "restored")


def test_a_bad_jwks_at_start_is_refused(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    topo = make_topology(reviews={"baseline": ["127.0.0.1:9"]})
    with pytest.raises(AssertionError, match=r"at least one key"):
        start_sidecar(tmp_path, topo, "--edge", "--jwks", str(tmp_path / "jwks.json")).stop()


def _replace(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_verification_budget_past_it_tokens_are_absent(
    keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flood of distinct tokens costs at most the budget's signature checks per second; the
    rest are baseline, counted and warned about once. A cached token is unaffected. (A test
    clock: no timing.)"""
    now = [1000.0]
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(keys.jwks))
    edge = Edge(
        jwks, issuer="traffic-lanes", audience="lanes-edge", leeway=60, verify_budget=2,
        clock=lambda: now[0],
    )  # fmt: skip
    tokens = [mint(keys.a, "feature-a", 600 + i).encode() for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="lanes.sidecar"):
        assert [edge.lane(t) for t in tokens] == ["feature-a", "feature-a", None, None, None]
    assert edge.over_budget == 3
    assert edge.tokens["absent"] == 3
    assert len([r for r in caplog.records if "--token-verify-budget" in r.message]) == 1
    assert edge.lane(tokens[0]) == "feature-a"  # verified before: no check needed
    assert "lanes_edge_verify_budget_exceeded_total 3" in edge.metrics()
    now[0] += 1  # the next second: a new budget
    assert edge.lane(tokens[3]) == "feature-a"
    unlimited = Edge(jwks, issuer="traffic-lanes", audience="lanes-edge", leeway=60,
                     verify_budget=0)  # fmt: skip
    assert all(unlimited.lane(t) == "feature-a" for t in tokens)
