"""Canary regexes: the sidecar gives Envoy's answers (RE2, full match) on a corpus of patterns
and values, in linear time. ``(a+)+b`` against ``a...ac`` is exponential in Python's ``re``
(the sidecar's matcher before issue 10); ``\\w``/``\\d`` are ASCII in RE2, Unicode in ``re``;
``\\pL``, ``[[:alpha:]]`` and ``\\Q...\\E`` are RE2 syntax ``re`` does not have."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoyproc import EnvoyProcess, running_envoy
from sidecar_helpers import SidecarProc, connect, read_response, start_sidecar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envoy"))
from envoy_upstreams import Fleet

from lane_router import Topology, topology_from_dict, topology_to_dict
from lane_router.render.envoy import render_envoy

PATTERNS = [
    "(a+)+b",
    r"\w+",
    r"\d+",
    r"[[:alpha:]]+",
    r"\pL+",
    "(?i)abc",
    ".",
    "..",
    "a.c",
    "alice|bob",
    "x*",
    "[^,]*",
    "a{2,3}",
    r"\bfoo\b.*",
    r"\QA+B\E",
]
VALUES = [
    "a" * 40 + "c",
    "aab",
    "ab",
    "abc",
    "ABC",
    "é",
    "héllo",
    "١٢٣",
    "123",
    "foo bar",
    "foobar",
    "a,b",
    "aa",
    "aaaa",
    "A+B",
    "x",
    "xxx",
    "aéc",
    "alice",
    "alicebob",
    "a\tc",
]


@pytest.fixture(scope="module")
def planes(tmp_path_factory: Any) -> Iterator[tuple[Topology, SidecarProc, EnvoyProcess]]:
    with Fleet() as fleet:
        base, nxt = fleet.start("any", "baseline"), fleet.start("any", "next")
        services = {
            f"p{i}": {
                "port": 9080,
                "versions": {"baseline": [base], "next": [nxt]},
                "canary": {
                    "version": "next",
                    "weight": 0,
                    "match": [{"headers": {"x-v": {"regex": pattern}}}],
                },
            }
            for i, pattern in enumerate(PATTERNS)
        }
        topo = topology_from_dict({"namespace": "shop", "services": services})
        work = tmp_path_factory.mktemp("regex")
        bootstrap = render_envoy(topo, listen="127.0.0.1:0", admin="127.0.0.1:0")
        sc = start_sidecar(work, topology_to_dict(topo))
        try:
            with running_envoy(bootstrap, workdir=work, validate=True) as envoy:
                yield topo, sc, envoy
        finally:
            sc.stop()


def _served(sock: socket.socket, host: str, value: str) -> str:
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nx-v: ".encode() + value.encode() + b"\r\n\r\n")
    status, _, body = read_response(sock)
    assert status == 200, (host, value, status, body)
    return str(json.loads(body)["lane"])


def test_same_answers_as_envoy_and_the_semantics(planes: Any) -> None:
    topo, sc, envoy = planes
    wrong = []
    with connect(sc.proxy) as via_sidecar, connect(envoy.address()) as via_envoy:
        for i, pattern in enumerate(PATTERNS):
            canary = topo.services[f"p{i}"].canary
            assert canary is not None
            for value in VALUES:
                want = "next" if canary.takes(lambda n, v=value: [v], "/", 0.5) else "baseline"
                got = (_served(via_sidecar, f"p{i}", value), _served(via_envoy, f"p{i}", value))
                if got != (want, want):
                    wrong.append(f"{pattern!r} ~ {value!r}: semantics {want}, sidecar/envoy {got}")
    assert not wrong, "\n".join(wrong)


def test_a_pathological_regex_costs_linear_time(planes: Any) -> None:
    _, sc, _ = planes
    value = "a" * 4000 + "c"  # with Python's re: 2**4000 steps
    t0 = time.monotonic()
    with connect(sc.proxy) as sock:
        for _ in range(20):
            assert _served(sock, "p0", value) == "baseline"
    assert time.monotonic() - t0 < 10  # generous on a loaded machine; re never returns
