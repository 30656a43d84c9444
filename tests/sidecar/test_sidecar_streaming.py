"""Bodies stream through the sidecar in both directions with bounded memory (backpressure)."""

from __future__ import annotations

import json
import socket
import struct
import threading
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
    start_sidecar,
    topology,
    wait_for,
)

SIZE = 200 * 1024 * 1024  # large next to any buffer, small enough for a quick test
BOUND_KB = 16 * 1024  # allowed RSS growth while 200 MB goes through (measured: < 1 MB)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: Any) -> Iterator[tuple[SidecarProc, Upstream]]:
    loop = Loop()
    up = Upstream("baseline", loop).start()
    sc = start_sidecar(
        tmp_path_factory.mktemp("stream"), topology(reviews={"baseline": [up.endpoint]})
    )
    try:
        yield sc, up
    finally:
        sc.stop()
        up.stop()
        loop.close()


class PeakRss:
    """Samples the sidecar's RSS on a thread while a transfer runs."""

    def __init__(self, sc: SidecarProc) -> None:
        self.sc = sc
        self.start_kb = sc.rss_kb()
        self.peak_kb = self.start_kb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self.sc.rss_kb())
            self._stop.wait(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_kb(self) -> int:
        return self.peak_kb - self.start_kb


def _warm(sc: SidecarProc) -> None:
    with connect(sc.proxy) as sock:  # pools, parsers and buffers exist before the baseline
        sock.sendall(
            b"GET /stream?n=4000000 HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n"
        )
        assert read_response(sock)[0] == 200


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_download_streams_with_flat_memory(proxy: Any, framing: str) -> None:
    sc, up = proxy
    _warm(sc)
    cl = "1" if framing == "content-length" else "0"
    before = up.sent
    with PeakRss(sc) as rss, connect(sc.proxy, timeout=60) as sock:
        sock.sendall(f"GET /stream?n={SIZE}&cl={cl} HTTP/1.1\r\nHost: reviews\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        head, _, first = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert (b"transfer-encoding: chunked" in head.lower()) == (framing == "chunked")
        # Stall: an unbuffered proxy would now soak up the upstream's whole body.
        time.sleep(0.5)
        sent_during_stall = up.sent - before
        got = len(first)
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
            if framing == "content-length" and got >= SIZE:
                break
            if framing == "chunked" and chunk.endswith(b"0\r\n\r\n"):
                break
    assert sent_during_stall < SIZE / 4  # the upstream was held back, not drained into us
    if framing == "content-length":
        assert got == SIZE
    else:
        assert got > SIZE  # payload plus chunk framing
    assert rss.growth_kb < BOUND_KB, f"RSS grew {rss.growth_kb} KB"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_upload_streams_with_flat_memory(proxy: Any, framing: str) -> None:
    sc, _ = proxy
    _warm(sc)
    block = b"y" * (1 << 20)
    with PeakRss(sc) as rss, connect(sc.proxy, timeout=60) as sock:
        if framing == "content-length":
            sock.sendall(
                b"POST /upload?stall=0.5 HTTP/1.1\r\nHost: reviews\r\nContent-Length: %d\r\n\r\n"
                % SIZE
            )
            for _ in range(SIZE // len(block)):
                sock.sendall(block)
        else:
            sock.sendall(
                b"POST /upload?stall=0.5 HTTP/1.1\r\nHost: reviews\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            piece = b"%x\r\n%s\r\n" % (len(block), block)
            for _ in range(SIZE // len(block)):
                sock.sendall(piece)
            sock.sendall(b"0\r\n\r\n")
        status, _, raw = read_response(sock)
    assert status == 200
    assert json.loads(raw)["received"] == SIZE
    assert rss.growth_kb < BOUND_KB, f"RSS grew {rss.growth_kb} KB"


def test_large_bodies_then_small_requests_reuse_one_upstream_connection(proxy: Any) -> None:
    """A large Content-Length body bypasses the parser; the connection stays usable after."""
    sc, up = proxy
    peers_before = set(up.peers)
    with connect(sc.proxy) as sock:
        for n in (3_000_000, 65537, 1_000_000):
            sock.sendall(b"GET /stream?n=%d&cl=1 HTTP/1.1\r\nHost: reviews\r\n\r\n" % n)
            status, headers, body = read_response(sock)
            assert (status, int(headers["content-length"]), body) == (200, n, b"x" * n)
            sock.sendall(b"GET /small HTTP/1.1\r\nHost: reviews\r\n\r\n")
            status, _, raw = read_response(sock)
            assert status == 200 and json.loads(raw)["path"] == "/small"
    assert len(up.peers - peers_before) <= 1  # one upstream connection, reused throughout


def _reset(sock: Any) -> None:
    """Close with a reset (linger on, time 0), even with bytes still unsent."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_clients_vanishing_mid_body_leave_no_errors(proxy: Any) -> None:
    sc, _ = proxy
    for _ in range(3):
        sock = connect(sc.proxy)
        sock.sendall(b"GET /stream?n=50000000&cl=1 HTTP/1.1\r\nHost: reviews\r\n\r\n")
        got = 0
        while got < 2_000_000:
            got += len(sock.recv(1 << 20))
        _reset(sock)  # mid-download
        sock = connect(sc.proxy)
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: reviews\r\nContent-Length: 50000000\r\n\r\n")
        sock.sendall(b"z" * 3_000_000)
        _reset(sock)  # mid-upload
    wait_for(lambda: "lanes_open_connections 0" in sc.metrics(), "connections to close")
    assert "lanes_internal_errors_total 0" in sc.metrics()
    with connect(sc.proxy) as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: reviews\r\n\r\n")
        assert read_response(sock)[0] == 200
    log = sc.logs()
    assert "Traceback" not in log and "Fatal error" not in log, log[-2000:]


def test_client_resetting_while_its_reading_is_paused_is_noticed(proxy: Any) -> None:
    """The upstream reads nothing for 60 s, so the sidecar stops reading the client's body
    (backpressure). A client that resets then must still be seen gone, long before the
    upstream wakes up: an event loop does not watch a socket it is not reading from."""
    sc, _ = proxy
    sock = connect(sc.proxy)
    sock.sendall(
        b"POST /upload?stall=60 HTTP/1.1\r\nHost: reviews\r\nContent-Length: 999999999\r\n\r\n"
    )
    sock.settimeout(2.0)
    piece = b"z" * 65536
    sent = 0
    try:
        while sent < 900_000_000:  # until every buffer on the way is full and nothing moves
            sock.sendall(piece)
            sent += len(piece)
    except TimeoutError:
        pass
    _reset(sock)
    wait_for(lambda: "lanes_open_connections 0" in sc.metrics(), "the reset client to be seen")
    assert 'code="499"' in sc.metrics()
    assert "lanes_internal_errors_total 0" in sc.metrics()
