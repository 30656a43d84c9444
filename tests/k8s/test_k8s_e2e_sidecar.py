"""End to end, sidecar mode: TrafficLanes and labelled Deployments on the API double ->
``lanes controller --data-plane sidecar`` writes per-lane Services and the ConfigMap -> the
ConfigMap materialised as kubelet does (``..data`` symlink swap) -> ``lanes sidecar`` on it ->
requests routed per lane, with fallback, through the Services' DNS names.

DNS is real: a DNS server on a loopback address answers ``<name>.shop.svc`` for each Service
the double holds (NXDOMAIN once it is deleted, as CoreDNS does), each Service on its own
loopback address, like a ClusterIP. The sidecar runs in its own mount namespace (``unshare``)
whose ``/etc/resolv.conf`` names that server, so the production resolver path is the one
exercised. Needs root (mount namespaces); fails under CI=true without it.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer
from k8s_objects import NS, deployment, lane, service
from kube_double import KubeDouble
from kubelet_volume import write_configmap_volume

DOMAIN = f"{NS}.svc"


def _need_root() -> None:
    why = ""
    if os.geteuid() != 0:
        why = "needs root for a mount namespace (unshare --mount)"
    elif shutil.which("unshare") is None:
        why = "unshare (util-linux) not found"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def ip_for(name: str, salt: str) -> str:
    """A loopback address per Service name (its 'ClusterIP')."""
    d = hashlib.sha256(f"{salt}/{name}".encode()).digest()
    return f"127.{64 + d[0] % 64}.{d[1]}.{1 + d[2] % 254}"


class ClusterDNS(BaseResolver):
    """``<service>.shop.svc`` -> the Service's address while the double holds the Service."""

    def __init__(self, double: KubeDouble, salt: str) -> None:
        self.double, self.salt = double, salt
        self.queries: Counter[str] = Counter()

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        self.queries[qname] += 1
        name, _, domain = qname.partition(".")
        if domain != DOMAIN or self.double.get("Service", NS, name) is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(ip_for(name, self.salt)), ttl=1))
        return reply  # AAAA of an existing name: no answer (NODATA)


class Upstream:
    """A real HTTP server on one 'pod' address that says which version it is."""

    def __init__(self, version: str, host: str, port: int) -> None:
        served = version

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = json.dumps({"served": served}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Kubelet:
    """Materialises the ConfigMap as kubelet's AtomicWriter does: files in a timestamped
    directory, ``..data`` -> it (swapped by an atomic rename), ``lanes.yaml`` -> ``..data/``."""

    def __init__(self, double: KubeDouble, name: str, volume: Path) -> None:
        self.double, self.name, self.volume = double, name, volume
        self.paused = threading.Event()
        self.stop = threading.Event()
        self.swaps = 0
        self._seen: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sync(self) -> bool:
        cm = self.double.get("ConfigMap", NS, self.name)
        data = (cm or {}).get("data")
        if not data or data == self._seen:
            return False
        write_configmap_volume(self.volume, data)
        self._seen = data
        self.swaps += 1
        return True

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            if not self.paused.is_set():
                self.sync()


def _start_sidecar(tmp: Path, volume: Path, nameserver: str) -> tuple[subprocess.Popen, int, int]:
    resolv = tmp / "resolv.conf"
    resolv.write_text(f"nameserver {nameserver}\noptions timeout:1 attempts:2\n")
    hosts = tmp / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    cmd = [
        sys.executable, "-m", "lane_router.cli", "sidecar",
        "--file", str(volume / "lanes.yaml"),
        "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
        "--reload-interval", "0.1", "--dns-ttl", "0.5", "--log-level", "warning",
    ]  # fmt: skip
    script = (
        f"mount --bind {shlex.quote(str(resolv))} /etc/resolv.conf && "
        f"mount --bind {shlex.quote(str(hosts))} /etc/hosts && exec {shlex.join(cmd)}"
    )
    log = (tmp / "sidecar.log").open("wb")
    proc = subprocess.Popen(
        ["unshare", "--mount", "sh", "-c", script], stdout=subprocess.PIPE, stderr=log
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "ready" not in line:
        proc.kill()
        proc.wait(5)
        raise AssertionError(f"sidecar did not start: {line!r} {(tmp / 'sidecar.log').read_text()}")
    fields = dict(p.split("=", 1) for p in line.split() if "=" in p)
    proxy = int(fields["proxy"].rsplit(":", 1)[1])
    admin = int(fields["admin"].rsplit(":", 1)[1])
    return proc, proxy, admin


class Traffic:
    """Clients on keep-alive connections, one per lane, round after round; every answer kept."""

    def __init__(self, proxy: int, port: int, lanes: list[str | None]) -> None:
        self.proxy, self.port, self.lanes = proxy, port, lanes
        self.results: list[tuple[str | None, int, str]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(x,), daemon=True) for x in lanes]

    def one(self, conn: http.client.HTTPConnection, lane: str | None) -> tuple[int, str]:
        headers = {"Host": f"reviews:{self.port}"} | ({"x-lane": lane} if lane else {})
        conn.request("GET", "/", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        served = json.loads(body).get("served", "") if resp.status == 200 else body.decode()
        return resp.status, served

    def _run(self, lane: str | None) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.proxy, timeout=10)
        while not self.stop.is_set():
            try:
                status, served = self.one(conn, lane)
            except (OSError, http.client.HTTPException) as exc:
                status, served = 0, repr(exc)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.proxy, timeout=10)
            with self.lock:
                self.results.append((lane, status, served))
            time.sleep(0.005)
        conn.close()

    def served(self, lane: str | None, since: int = 0) -> Counter[str]:
        with self.lock:
            return Counter(s for x, st, s in self.results[since:] if x == lane and st == 200)

    def failures(self) -> list[tuple[str | None, int, str]]:
        with self.lock:
            return [r for r in self.results if r[1] != 200]


def _wait(cond: Any, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_cluster_sidecar_mode_end_to_end(
    double: KubeDouble, start_controller: Any, tmp_path: Path
) -> None:
    _need_root()
    salt = tmp_path.name
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]  # every 'pod' listens on its own address, on this port
    probe.close()
    pods = {
        v: Upstream(v, ip_for(f"reviews-{v}", salt), port)
        for v in ("baseline", "feature-a", "feature-b")
    }
    resolver = ClusterDNS(double, salt)
    nameserver = ip_for("dns", salt)
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    dns = DNSServer(resolver, address=nameserver, port=53, tcp=False, logger=quiet)
    dns.start_thread()
    volume = tmp_path / "volume"
    volume.mkdir()
    kubelet = Kubelet(double, "traffic-lanes", volume)
    proc = None
    traffic = None
    try:
        double.put(service("reviews", port=port))
        double.put(deployment("reviews", "baseline"))
        double.put(deployment("reviews", "feature-a"))
        double.put(lane("feature-a"))
        double.put(lane("feature-b", fallback="feature-a"))
        start_controller(data_plane="sidecar")
        _wait(kubelet.sync, "the controller's ConfigMap")
        kubelet.thread.start()
        proc, proxy, _admin = _start_sidecar(tmp_path, volume, nameserver)

        traffic = Traffic(proxy, port, [None, "feature-a", "feature-b", "nope"])
        assert traffic.one(http.client.HTTPConnection("127.0.0.1", proxy), "feature-b") == (
            200,
            "feature-a",
        )
        for t in traffic.threads:
            t.start()
        _wait(lambda: traffic.served("feature-b")["feature-a"] >= 5, "feature-b falling back")

        # A lane's version is deployed: its Service, the ConfigMap, kubelet's swap, the reload.
        mark = len(traffic.results)
        double.put(deployment("reviews", "feature-b"))
        _wait(lambda: traffic.served("feature-b", mark)["feature-b"] >= 5, "feature-b served")

        # The lane is removed while kubelet lags: the Service goes (NXDOMAIN) but the pod still
        # answers; the sidecar, on the old file, treats the name as dead and falls back.
        kubelet.paused.set()
        double.remove("TrafficLane", NS, "feature-b")
        _wait(lambda: double.get("Service", NS, "reviews-feature-b") is None, "Service deleted")
        mark = len(traffic.results)
        _wait(
            lambda: traffic.served("feature-b", mark)["feature-a"] >= 5,
            "fallback past the NXDOMAIN name",
        )
        assert resolver.queries[f"reviews-feature-b.{DOMAIN}"] >= 2
        kubelet.paused.clear()
        mark = len(traffic.results)
        _wait(lambda: traffic.served("feature-b", mark)["baseline"] >= 5, "undeclared lane")
        pods["feature-b"].stop()
        traffic.stop.set()
        for t in traffic.threads:
            t.join(15)

        assert traffic.failures() == []
        assert traffic.served(None).keys() == {"baseline"}
        assert traffic.served("nope").keys() == {"baseline"}
        assert traffic.served("feature-a").keys() == {"feature-a"}
        assert kubelet.swaps >= 3
    finally:
        if traffic is not None:
            traffic.stop.set()
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        kubelet.stop.set()
        dns.stop()
        for pod in pods.values():
            if pod.server.socket.fileno() >= 0:
                pod.stop()
