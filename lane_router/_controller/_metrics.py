"""Counters and gauges in Prometheus text format, and the /healthz and /metrics endpoint."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Metrics", "MetricsServer"]

_HELP = {
    "lanes_controller_reconciles_total": ("counter", "Host reconciles by result."),
    "lanes_controller_writes_total": ("counter", "API writes by verb and kind."),
    "lanes_controller_watch_restarts_total": ("counter", "Watch restarts by resource and reason."),
    "lanes_controller_conflicts": ("gauge", "Hosts left alone because another owner routes them."),
    "lanes_controller_leader": ("gauge", "1 while this replica holds the lease."),
    "lanes_controller_hosts": ("gauge", "Hosts routed by the controller."),
    "lanes_controller_reconcile_seconds_total": ("counter", "Time spent reconciling."),
}


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return "{" + inner + "}"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], float] = {}

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, _labels(labels))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[(name, _labels(labels))] = value

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get((name, _labels(labels)), 0.0)

    def render(self) -> str:
        with self._lock:
            items = sorted(self._values.items())
        out: list[str] = []
        seen: set[str] = set()
        for (name, labels), value in items:
            if name not in seen:
                seen.add(name)
                kind, text = _HELP.get(name, ("untyped", name))
                out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")
            out.append(f"{name}{labels} {value:g}\n")
        return "".join(out)


class MetricsServer:
    """``/healthz`` (200 while ``healthy()``), ``/metrics``; a daemon thread."""

    def __init__(self, host: str, port: int, metrics: Metrics, healthy: Callable[[], bool]):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    ok = outer.healthy()
                    self._send(200 if ok else 503, "ok\n" if ok else "unhealthy\n", "text/plain")
                elif self.path == "/metrics":
                    self._send(200, outer.metrics.render(), "text/plain; version=0.0.4")
                else:
                    self._send(404, '{"error":"not found"}\n', "application/json")

            def _send(self, status: int, body: str, ctype: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.metrics, self.healthy = metrics, healthy
        family = ThreadingHTTPServer
        if ":" in host:
            import socket

            class V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            family = V6
        self.server = family((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
