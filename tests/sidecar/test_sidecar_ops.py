"""Operating the sidecar: passive health and fallback, reload, drain on SIGTERM, admin, IPv6."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest
import yaml
from sidecar_helpers import connect, free_port, http_get, read_response, request, topology, wait_for

from lane_router import topology_from_dict


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_refused_lane_falls_back_without_errors(upstreams: Any, sidecars: Any) -> None:
    base = upstreams("baseline")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: connections are refused
    sc = sidecars(
        topology(reviews={"baseline": [base.endpoint], "feature-a": [dead], "hotfix": [dead]})
    )
    for _ in range(20):
        status, _, body = request(sc, "/", headers={"x-lane": "feature-b"})
        assert (status, body["served"]) == (200, "baseline")
    ep = sc.routes()["services"]["reviews"]["versions"]["feature-a"][0]
    assert ep["endpoint"] == dead and ep["healthy"] is False
    # Ejected once, then skipped: one refusal for 20 requests, no error window.
    assert _metric(sc.metrics(), f'lanes_upstream_ejections_total{{endpoint="{dead}"}}') == 1
    assert 'lane="feature-b",served_by="baseline",code="200"} 20' in sc.metrics()
    # A strict lane has nowhere to go.
    status, _, body = request(sc, "/", headers={"x-lane": "hotfix"})
    assert status == 503
    assert (body["reason"], body["service"], body["lane"]) == (
        "no healthy endpoint",
        "reviews",
        "hotfix",
    )
    assert "refused" in body["detail"].lower()


def test_lane_killed_mid_run_falls_back_with_zero_errors(upstreams: Any, sidecars: Any) -> None:
    base, fa = upstreams("baseline"), upstreams("feature-a")
    sc = sidecars(topology(reviews={"baseline": [base.endpoint], "feature-a": [fa.endpoint]}))
    served = []
    with connect(sc.proxy) as sock:
        for i in range(60):
            if i == 20:
                fa.stop()  # its pooled connections close under the sidecar
            sock.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\nx-lane: feature-a\r\n\r\n")
            status, _, raw = read_response(sock)
            assert status == 200, raw
            served.append(json.loads(raw)["served"])
    assert served[:20] == ["feature-a"] * 20
    assert served[20:] == ["baseline"] * 40


class ResetServer:
    """Accepts, reads the request, then resets the connection: a version dying mid-request."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.endpoint = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
            conn.close()  # RST, no response

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def resetter() -> Any:
    server = ResetServer()
    yield server
    server.close()


def test_upstream_reset_is_json_502_or_retried(sidecars: Any, resetter: ResetServer) -> None:
    sc = sidecars(topology(reviews={"baseline": [resetter.endpoint]}))
    # A request with a body cannot be sent again: 502.
    with connect(sc.proxy) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: reviews\r\nx-lane: feature-a\r\nContent-Length: 2\r\n\r\nhi"
        )
        status, _, raw = read_response(sock)
    body = json.loads(raw)
    assert status == 502
    assert (body["reason"], body["service"], body["lane"]) == (
        "upstream reset",
        "reviews",
        "feature-a",
    )
    # Nor is a POST without one (not idempotent: RFC 9110 9.2.2).
    status, _, body = request(sc, "/", method="POST", headers={"Content-Length": "0"})
    assert (status, body["reason"]) == (502, "upstream reset")
    # A GET is re-sent (nothing was answered); with no other endpoint left: 503.
    status, _, body = request(sc, "/", headers={"x-lane": "feature-a"})
    assert (status, body["reason"]) == (503, "no healthy endpoint")
    assert "reset" in body["detail"].lower() or "closed" in body["detail"].lower()
    assert sc.alive()


def test_request_reset_inside_a_lane_goes_to_the_next_lane(
    upstreams: Any, sidecars: Any, resetter: ResetServer
) -> None:
    base = upstreams("baseline")
    sc = sidecars(topology(reviews={"baseline": [base.endpoint], "feature-a": [resetter.endpoint]}))
    for _ in range(5):
        status, _, body = request(sc, "/", headers={"x-lane": "feature-b"})
        assert (status, body["served"]) == (200, "baseline")
    assert 'lane="feature-b",served_by="baseline",code="200"} 5' in sc.metrics()


def test_reload_on_file_change_and_bad_file_keeps_table(upstreams: Any, sidecars: Any) -> None:
    base, fa = upstreams("baseline"), upstreams("feature-a")
    sc = sidecars(topology(reviews={"baseline": [base.endpoint]}), "--reload-interval", "0.1")
    assert request(sc, "/", headers={"x-lane": "feature-a"})[2]["served"] == "baseline"
    sc.write(topology(reviews={"baseline": [base.endpoint], "feature-a": [fa.endpoint]}))
    wait_for(lambda: sc.generation() == 2, "generation 2")
    assert request(sc, "/", headers={"x-lane": "feature-a"})[2]["served"] == "feature-a"
    bad = topology(reviews={"baseline": [base.endpoint]})
    bad["lanes"]["feature-b"]["fallback"] = "nowhere"
    sc.write(bad)
    wait_for(lambda: _metric(sc.metrics(), "lanes_reload_failures_total") == 1, "a failure")
    assert sc.generation() == 2
    assert request(sc, "/", headers={"x-lane": "feature-a"})[2]["served"] == "feature-a"
    log = sc.logs()
    assert "lanes.feature-b.fallback (line" in log and "unknown lane 'nowhere'" in log
    assert "keeping table generation 2" in log


def test_reload_on_sighup(upstreams: Any, sidecars: Any) -> None:
    base, fa = upstreams("baseline"), upstreams("feature-a")
    sc = sidecars(topology(reviews={"baseline": [base.endpoint]}), "--reload-interval", "0")
    sc.write(topology(reviews={"baseline": [base.endpoint], "feature-a": [fa.endpoint]}))
    assert request(sc, "/", headers={"x-lane": "feature-a"})[2]["served"] == "baseline"
    os.kill(sc.pid, signal.SIGHUP)
    wait_for(lambda: sc.generation() == 2, "generation 2 after SIGHUP")
    assert request(sc, "/", headers={"x-lane": "feature-a"})[2]["served"] == "feature-a"


def test_sigterm_drains_in_flight_requests(upstreams: Any, sidecars: Any) -> None:
    base = upstreams("baseline")
    sc = sidecars(topology(reviews={"baseline": [base.endpoint]}))
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(request(sc, "/sleep?s=1"))) for _ in range(5)
    ]
    for t in threads:
        t.start()
    wait_for(lambda: base.requests == 5, "5 requests in flight")
    os.kill(sc.pid, signal.SIGTERM)
    wait_for(lambda: http_get(sc.admin, "/readyz")[0] == 503, "not ready while draining")
    for t in threads:
        t.join(10)
    assert [r[0] for r in results] == [200] * 5
    assert sc.proc.wait(10) == 0
    with pytest.raises(OSError):
        connect(sc.proxy)


def test_admin_endpoints(upstreams: Any, sidecars: Any) -> None:
    base, fa = upstreams("baseline"), upstreams("feature-a")
    topo = topology(
        reviews={"baseline": [base.endpoint], "feature-a": [fa.endpoint]},
        ratings={"baseline": [base.endpoint]},
    )
    sc = sidecars(topo)
    for lane in ("feature-b", "feature-b", "hotfix"):
        request(sc, "/", headers={"x-lane": lane})
    status, _, raw = http_get(sc.admin, "/healthz")
    assert (status, json.loads(raw)) == (200, {"status": "ok"})
    status, _, raw = http_get(sc.admin, "/readyz")
    ready = json.loads(raw)
    assert status == 200 and ready["ready"] is True
    assert ready["listen"] == [f"{sc.proxy[0]}:{sc.proxy[1]}"]
    text = sc.metrics()
    fb = 'service="reviews",lane="feature-b"'
    assert f'lanes_requests_total{{{fb},served_by="feature-a",code="200"}} 2' in text
    assert (
        'lanes_requests_total{service="reviews",lane="hotfix",served_by="-",code="503"} 1' in text
    )
    assert f'lanes_request_duration_seconds_bucket{{{fb},served_by="feature-a",le="+Inf"}} 2' in (
        text
    )
    for name in ("lanes_reload_failures_total 0", "lanes_open_connections ", "lanes_ready 1"):
        assert name in text
    routes = sc.routes()
    expected = topology_from_dict(topo).routes
    for svc, per_lane in expected.items():
        for lane, res in per_lane.items():
            assert routes["services"][svc]["lanes"][lane]["candidates"] == list(res.candidates)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
def test_ipv6_listener_and_upstream(upstreams: Any, sidecars: Any) -> None:
    base = upstreams("baseline", host="::1")
    sc = sidecars(topology(reviews={"baseline": [base.endpoint]}), listen="[::1]:0")
    assert sc.proxy[0] == "::1"
    status, _, body = request(sc, "/", headers={"x-lane": "feature-a"})
    assert (status, body["served"]) == (200, "baseline")
    assert ["x-forwarded-for", "::1"] in body["headers"]


@pytest.mark.parametrize("server", ["builtin", "aiohttp"])
def test_admin_servers_answer_alike(upstreams: Any, sidecars: Any, server: str) -> None:
    base = upstreams("baseline")
    sc = sidecars(topology(reviews={"baseline": [base.endpoint]}), "--admin-server", server)
    assert request(sc, "/")[0] == 200
    status, headers, raw = http_get(sc.admin, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'lanes_requests_total{service="reviews",lane="baseline"' in raw.decode()
    status, _, raw = http_get(sc.admin, "/nope")
    assert status == 404 and json.loads(raw)["reason"] == "not found"
    status, _, raw = http_get(sc.admin, "/healthz", method="POST")
    assert status == 405
    assert json.loads(http_get(sc.admin, "/routes")[2])["generation"] == 1


def test_response_transfer_coding_other_than_chunked_is_502(sidecars: Any) -> None:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = lsock.accept()
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
            )
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        sc = sidecars(topology(reviews={"baseline": [f"127.0.0.1:{lsock.getsockname()[1]}"]}))
        status, _, body = request(sc, "/")
        assert (status, body["reason"]) == (502, "bad response")
    finally:
        lsock.close()


def test_invalid_topology_at_start_exits_2_naming_the_key(tmp_path: Any) -> None:
    path = tmp_path / "lanes.yaml"
    path.write_text("lanes:\n  feature-a: {fallback: nowhere}\nservices: {}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lane_router.cli", "sidecar", "-f", str(path),
         "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "lanes.feature-a.fallback (line 2)" in proc.stderr


def test_busy_port_exits_1(tmp_path: Any, upstreams: Any) -> None:
    base = upstreams("baseline")
    path = tmp_path / "lanes.yaml"
    path.write_text(yaml.safe_dump(topology(reviews={"baseline": [base.endpoint]})))
    proc = subprocess.run(
        [sys.executable, "-m", "lane_router.cli", "sidecar", "-f", str(path),
         "--listen", base.endpoint, "--admin", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr
