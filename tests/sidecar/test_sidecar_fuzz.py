"""Property: whatever bytes a client sends in a header, the sidecar never answers 500, its own
errors are JSON, and it keeps serving."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sidecar_helpers import (
    Loop,
    SidecarProc,
    Upstream,
    connect,
    read_response,
    request,
    start_sidecar,
    topology,
)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: Any) -> Iterator[SidecarProc]:
    loop = Loop()
    base, fa = Upstream("baseline", loop).start(), Upstream("feature-a", loop).start()
    sc = start_sidecar(
        tmp_path_factory.mktemp("fuzz"),
        topology(reviews={"baseline": [base.endpoint], "feature-a": [fa.endpoint]}),
        "--max-header-bytes", "4096",
    )  # fmt: skip
    try:
        yield sc
    finally:
        sc.stop()
        base.stop()
        fa.stop()
        loop.close()


def _exchange(sc: SidecarProc, raw: bytes) -> tuple[int, dict[str, str], bytes] | None:
    with connect(sc.proxy, timeout=5) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            return read_response(sock)
        except (ConnectionError, OSError):
            return None  # the peer may close on garbage; what matters is what it did answer


def _check(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status != 500
    if "x-lanes-error" in headers or status >= 400:
        assert headers.get("content-type") == "application/json", (status, headers, body)
        doc = json.loads(body)
        assert doc["status"] == status and isinstance(doc["reason"], str)
        assert {"service", "lane"} <= doc.keys()
    else:
        assert status == 200
        assert json.loads(body)["served"] in ("baseline", "feature-a")


SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
names = st.one_of(
    st.sampled_from(
        [
            b"x-lane",
            b"X-Lane",
            b"baggage",
            b"host",
            b"connection",
            b"content-length",
            b"transfer-encoding",
            b"expect",
            b"x-lanes-hops",
            b"te",
            b"upgrade",
        ]
    ),
    st.binary(min_size=0, max_size=40),
)
values = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=80).map(lambda t: t.encode("utf-8")),
    st.sampled_from(
        [
            b"feature-a",
            b" feature-a ",
            b"lane=feature-a;x=1",
            b"A" * 5000,
            b"\xff\xfe",
            b"chunked",
            b"-1",
            b"99999999999999999999",
            b"close, x-lane",
            b"\x00",
        ]
    ),
)


@SETTINGS
@given(headers=st.lists(st.tuples(names, values), max_size=5))
def test_any_header_bytes_never_500(proxy: SidecarProc, headers: list[tuple[bytes, bytes]]) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: reviews\r\n"
    raw += b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    raw += b"Connection: close\r\n\r\n"
    got = _exchange(proxy, raw)
    if got is not None:
        _check(*got)
    assert request(proxy, "/")[0] == 200  # and it still serves


@SETTINGS
@given(garbage=st.binary(max_size=600))
def test_any_request_bytes_never_500(proxy: SidecarProc, garbage: bytes) -> None:
    got = _exchange(proxy, garbage + b"\r\n\r\n")
    if got is not None:
        _check(*got)
    assert request(proxy, "/")[0] == 200


@SETTINGS
@given(lane=st.binary(max_size=100), baggage=st.binary(max_size=200))
def test_lane_header_bytes_route_or_default(
    proxy: SidecarProc, lane: bytes, baggage: bytes
) -> None:
    raw = (
        b"GET / HTTP/1.1\r\nHost: reviews\r\nx-lane: "
        + lane
        + b"\r\nbaggage: "
        + baggage
        + b"\r\nConnection: close\r\n\r\n"
    )
    got = _exchange(proxy, raw)
    if got is not None:
        _check(*got)
