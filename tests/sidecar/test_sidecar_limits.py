"""HTTP/1.1 semantics, limits and timeouts of the sidecar process; every error is JSON."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sidecar_helpers import (
    Loop,
    SidecarProc,
    Upstream,
    connect,
    read_response,
    request,
    start_sidecar,
    topology,
    wait_for,
)

TIGHT = (
    "--idle-timeout", "0.5",
    "--header-timeout", "0.5",
    "--keepalive-timeout", "1",
    "--connect-timeout", "0.5",
    "--max-header-bytes", "8192",
    "--max-connections", "16",
)  # fmt: skip


@pytest.fixture(scope="module")
def tight(tmp_path_factory: Any) -> Iterator[tuple[SidecarProc, Upstream, socket.socket]]:
    loop = Loop()
    up = Upstream("baseline", loop).start()
    # A listener whose accept queue is full: SYNs to it are dropped, so connect() hangs.
    black = socket.socket()
    black.bind(("127.0.0.1", 0))
    black.listen(0)
    fillers = []
    for _ in range(5):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(black.getsockname())
        fillers.append(c)
    topo = topology(
        reviews={"baseline": [up.endpoint]},
        blackhole={"baseline": [f"127.0.0.1:{black.getsockname()[1]}"]},
    )
    sc = start_sidecar(tmp_path_factory.mktemp("tight"), topo, *TIGHT)
    try:
        yield sc, up, black
    finally:
        sc.stop()
        up.stop()
        loop.close()
        for c in fillers:
            c.close()
        black.close()


def _raw(sc: SidecarProc, data: bytes, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    with connect(sc.proxy) as sock:
        sock.sendall(data)
        return read_response(sock, **kw)


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _json_error(status: int, headers: dict[str, str], raw: bytes, want: int, reason: str) -> Any:
    assert status == want
    assert headers["content-type"] == "application/json"
    body = json.loads(raw)
    assert body["status"] == want
    assert body["reason"] == reason
    assert {"service", "lane"} <= body.keys()
    return body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GARBAGE\r\n\r\n", "parse"),
        (b"GET / HTTP/1.1\r\n\r\n", "no Host header"),
        (b"GET / HTTP/1.1\r\nHost: reviews\r\nHost: ratings\r\n\r\n", "more than one Host"),
        (
            b"GET / HTTP/1.1\r\nHost: reviews\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "Content-Length",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: reviews\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding",
        ),
        (b"GET / HTTP/1.1\r\nHost: reviews\r\nBad Header: x\r\n\r\n", "header"),
    ],
)
def test_bad_requests_are_400_json_and_close(tight: Any, data: bytes, reason: str) -> None:
    sc, _, _ = tight
    with connect(sc.proxy) as sock:
        sock.sendall(data)
        status, headers, raw = read_response(sock)
        body = _json_error(status, headers, raw, 400, "bad request")
        if reason != "parse":
            assert reason.lower() in body["detail"].lower()
        assert headers["connection"] == "close"
        assert _closed(sock)


def test_connect_is_405(tight: Any) -> None:
    sc, _, _ = tight
    status, headers, raw = _raw(sc, b"CONNECT reviews:443 HTTP/1.1\r\nHost: reviews:443\r\n\r\n")
    _json_error(status, headers, raw, 405, "method not allowed")


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: reviews\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: reviews\r\n" + (b"X-Many: " + b"a" * 92 + b"\r\n") * 90 + b"\r\n",
        b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\nHost: reviews\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: reviews\r\nX-Endless: " + b"a" * 100_000,  # never ends
    ],
)
def test_oversized_head_is_431(tight: Any, data: bytes) -> None:
    sc, _, _ = tight
    status, headers, raw = _raw(sc, data)
    _json_error(status, headers, raw, 431, "header too large")


def test_slow_header_gets_408(tight: Any) -> None:
    """A client that trickles its head (slowloris) is cut at the header deadline."""
    sc, _, _ = tight
    with connect(sc.proxy, timeout=0.1) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\n")
        got = b""
        end = time.monotonic() + 10
        while b"\r\n\r\n" not in got and time.monotonic() < end:
            with contextlib.suppress(OSError):
                sock.sendall(b"X")  # one byte of a header name, every 0.1 s
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            got += chunk
        assert got.startswith(b"HTTP/1.1 408 "), got
        assert json.loads(got.split(b"\r\n\r\n", 1)[1])["reason"] == "header timeout"


def test_idle_keepalive_connection_is_closed(tight: Any) -> None:
    sc, _, _ = tight
    with connect(sc.proxy) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
        assert read_response(sock)[0] == 200
        assert _closed(sock)  # after --keepalive-timeout, with no response owed


def test_silent_upstream_is_504_idle(tight: Any) -> None:
    sc, _, _ = tight
    status, _, body = request(sc, "/sleep?s=5", headers={"x-lane": "feature-a"})
    assert status == 504
    assert body["reason"] == "idle timeout"
    assert (body["service"], body["lane"]) == ("reviews", "feature-a")


def test_unreachable_upstream_is_504_connect(tight: Any) -> None:
    sc, _, _ = tight
    status, _, body = request(sc, "/", host="blackhole")
    assert status == 504
    assert body["reason"] == "connect timeout"
    assert body["service"] == "blackhole"


def test_connection_cap(tight: Any) -> None:
    sc, _, _ = tight
    held = []
    try:
        for _ in range(16):
            held.append(connect(sc.proxy))
        wait_for(lambda: "lanes_open_connections 16" in sc.metrics(), "16 open connections")
        status, headers, raw = _raw(sc, b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
        _json_error(status, headers, raw, 503, "connection limit")
    finally:
        for s in held:
            s.close()
    wait_for(lambda: request(sc, "/")[0] == 200, "a free slot again")


def test_http10_close_and_keepalive(tight: Any) -> None:
    sc, _, _ = tight
    with connect(sc.proxy) as sock:
        sock.sendall(b"GET /a HTTP/1.0\r\nHost: reviews\r\n\r\n")
        status, headers, raw = read_response(sock)
        assert status == 200 and json.loads(raw)["version"] == "1.1"
        assert headers["connection"] == "close"
        assert _closed(sock)
    with connect(sc.proxy) as sock:
        for path in (b"/1", b"/2"):
            sock.sendall(
                b"GET %s HTTP/1.0\r\nHost: reviews\r\nConnection: keep-alive\r\n\r\n" % path
            )
            status, headers, raw = read_response(sock)
            assert status == 200 and headers["connection"] == "keep-alive"
            assert json.loads(raw)["path"] == path.decode()


def test_http10_gets_chunked_upstream_close_delimited(tight: Any) -> None:
    sc, _, _ = tight
    with connect(sc.proxy) as sock:
        sock.sendall(
            b"GET /stream?n=300000 HTTP/1.0\r\nHost: reviews\r\nConnection: keep-alive\r\n\r\n"
        )
        status, headers, body = read_response(sock)
    assert status == 200
    assert "transfer-encoding" not in headers and headers["connection"] == "close"
    assert body == b"x" * 300000


def test_chunked_both_ways_and_pipelining(tight: Any) -> None:
    sc, _, _ = tight
    with connect(sc.proxy) as sock:
        sock.sendall(
            b"POST /up HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            b"GET /second HTTP/1.1\r\nHost: reviews\r\n\r\n"
            b"GET /stream?n=70000 HTTP/1.1\r\nHost: reviews\r\n\r\n"
        )
        first = read_response(sock)
        second = read_response(sock)
        third = read_response(sock)
    assert json.loads(first[2])["body_len"] == 11
    assert json.loads(second[2])["path"] == "/second"
    assert third[1]["transfer-encoding"] == "chunked" and third[2] == b"x" * 70000


def test_expect_100_continue(tight: Any) -> None:
    sc, _, _ = tight
    with connect(sc.proxy) as sock:
        sock.sendall(
            b"POST /e HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = read_response(sock)
        assert interim[0] == 100
        sock.sendall(b"hello")
        status, _, raw = read_response(sock)
    body = json.loads(raw)
    assert status == 200 and body["body_len"] == 5
    assert "expect" not in dict(body["headers"])


def test_expect_100_continue_to_unknown_service_gets_final_status(tight: Any) -> None:
    sc, _, _ = tight
    status, headers, raw = _raw(
        sc, b"POST / HTTP/1.1\r\nHost: nope\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    _json_error(status, headers, raw, 404, "unknown service")


def test_head_then_get_on_one_connection(tight: Any) -> None:
    sc, _, _ = tight
    with connect(sc.proxy) as sock:
        sock.sendall(b"HEAD /stream?n=1000&cl=1 HTTP/1.1\r\nHost: reviews\r\n\r\n")
        status, headers, _ = read_response(sock, head=True)
        assert status == 200 and headers["content-length"] == "1000"
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: reviews\r\n\r\n")
        status, _, raw = read_response(sock)
        assert status == 200 and json.loads(raw)["path"] == "/after"


def test_whole_request_timeout(tmp_path: Any, upstreams: Any, sidecars: Any) -> None:
    up = upstreams("baseline")
    sc = sidecars(
        topology(reviews={"baseline": [up.endpoint]}),
        "--request-timeout",
        "0.6",
        "--idle-timeout",
        "10",
    )
    status, _, body = request(sc, "/sleep?s=5")
    assert (status, body["reason"]) == (504, "request timeout")
    # Mid-response, the only honest signal is to cut the connection (no complete body).
    with connect(sc.proxy) as sock:
        sock.sendall(b"GET /drip?n=100&every=0.05 HTTP/1.1\r\nHost: reviews\r\n\r\n")
        with pytest.raises((ValueError, ConnectionError, OSError)):
            read_response(sock)
    assert 'code="504"' in sc.metrics()


def test_request_transfer_coding_other_than_chunked_is_501(tight: Any) -> None:
    sc, _, _ = tight
    status, headers, raw = _raw(
        sc,
        b"POST / HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n",
    )
    _json_error(status, headers, raw, 501, "unsupported transfer-encoding")


def test_keepalive_after_an_error_closes_quietly(tight: Any) -> None:
    """An answered request leaves the connection idle: no 408 for a head never started."""
    sc, _, _ = tight
    with connect(sc.proxy) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: nope\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 404 and "connection" not in headers
        assert sock.recv(65536) == b""  # closed at --keepalive-timeout, nothing sent


def test_chunked_request_trailers_are_not_forwarded(tight: Any) -> None:
    sc, _, _ = tight
    status, _, raw = _raw(
        sc,
        b"POST /t HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        b"\r\n3\r\nabc\r\n0\r\nX-Trailer: secret\r\n\r\n",
    )
    body = json.loads(raw)
    assert status == 200 and body["body_len"] == 3
    assert "x-trailer" not in dict(body["headers"])


def test_head_to_an_unknown_service_gets_no_body(tight: Any) -> None:
    sc, _, _ = tight
    with connect(sc.proxy) as sock:
        sock.sendall(
            b"HEAD / HTTP/1.1\r\nHost: nope\r\n\r\nGET / HTTP/1.1\r\nHost: reviews\r\n\r\n"
        )
        status, headers, _ = read_response(sock, head=True)
        assert status == 404 and int(headers["content-length"]) > 0
        status, _, raw = read_response(sock)  # the next response starts right after the head
        assert status == 200 and json.loads(raw)["served"] == "baseline"
