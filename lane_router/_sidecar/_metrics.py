"""Counters kept as plain dicts on the hot path, rendered as Prometheus text on scrape."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

__all__ = ["BUCKETS", "Metrics"]

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_NB = len(BUCKETS)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Label values are the topology's names or fixed tokens, never raw request bytes."""

    def __init__(self, source: str = "") -> None:
        """``source``: the service this sidecar's callers belong to (``--service``), a
        per-process constant added as a ``source`` label at scrape time, never per request."""
        self.source = source
        self.requests: dict[tuple[str, str, str, int], int] = {}
        # (service, lane, served_by) -> [bucket counts..., +Inf count, sum of seconds]
        self.latency: dict[tuple[str, str, str], list[float]] = {}
        self.reloads = 0
        self.reload_failures = 0
        self.internal_errors = 0
        self.rejected_connections = 0
        self.upstream_resets = 0
        self.ejections: dict[str, int] = {}
        self.accepted_connections = 0

    def observe(self, service: str, lane: str, served_by: str, code: int, seconds: float) -> None:
        key = (service, lane, served_by, code)
        req = self.requests
        req[key] = req.get(key, 0) + 1
        lkey = (service, lane, served_by)
        hist = self.latency.get(lkey)
        if hist is None:
            hist = self.latency[lkey] = [0.0] * (_NB + 2)
        hist[bisect_left(BUCKETS, seconds)] += 1
        hist[-1] += seconds

    def ejected(self, endpoint: str) -> None:
        self.ejections[endpoint] = self.ejections.get(endpoint, 0) + 1

    def render(
        self,
        *,
        open_connections: int,
        generation: int,
        ready: bool,
        routes: Iterable[tuple[str, str, str]] = (),
    ) -> str:
        """Prometheus text. ``routes``: (service, lane, serving lane or "") of the live table."""
        src = f',source="{_esc(self.source)}"' if self.source else ""
        out: list[str] = [
            "# HELP lanes_requests_total Requests by service, lane, serving lane and status.",
            "# TYPE lanes_requests_total counter",
        ]
        for (svc, lane, served, code), n in sorted(self.requests.items()):
            out.append(
                f'lanes_requests_total{{service="{_esc(svc)}",lane="{_esc(lane)}",'
                f'served_by="{_esc(served)}",code="{code}"{src}}} {n}'
            )
        out += [
            "# HELP lanes_request_duration_seconds Time from request head to last response byte.",
            "# TYPE lanes_request_duration_seconds histogram",
        ]
        for (svc, lane, served), hist in sorted(self.latency.items()):
            labels = f'service="{_esc(svc)}",lane="{_esc(lane)}",served_by="{_esc(served)}"{src}'
            acc = 0.0
            for i, bound in enumerate(BUCKETS):
                acc += hist[i]
                out.append(
                    f'lanes_request_duration_seconds_bucket{{{labels},le="{bound}"}} {int(acc)}'
                )
            acc += hist[_NB]
            out.append(f'lanes_request_duration_seconds_bucket{{{labels},le="+Inf"}} {int(acc)}')
            out.append(f"lanes_request_duration_seconds_sum{{{labels}}} {hist[-1]:.6f}")
            out.append(f"lanes_request_duration_seconds_count{{{labels}}} {int(acc)}")
        out += [
            "# HELP lanes_route_info The live routing table: 1 per service and lane, "
            'serving = the lane whose version serves it ("" = strict 503).',
            "# TYPE lanes_route_info gauge",
        ]
        for svc, lane, serving in routes:
            out.append(
                f'lanes_route_info{{service="{_esc(svc)}",lane="{_esc(lane)}",'
                f'serving="{_esc(serving)}"}} 1'
            )
        out += [
            "# HELP lanes_upstream_ejections_total Endpoints ejected (refused or reset).",
            "# TYPE lanes_upstream_ejections_total counter",
        ]
        for ep, n in sorted(self.ejections.items()):
            out.append(f'lanes_upstream_ejections_total{{endpoint="{_esc(ep)}"}} {n}')
        for name, kind, help_, value in (
            ("lanes_open_connections", "gauge", "Client connections open now.", open_connections),
            (
                "lanes_accepted_connections_total",
                "counter",
                "Client connections accepted.",
                self.accepted_connections,
            ),
            (
                "lanes_rejected_connections_total",
                "counter",
                "Connections refused over the cap.",
                self.rejected_connections,
            ),
            (
                "lanes_upstream_resets_total",
                "counter",
                "Upstream connections lost mid-exchange.",
                self.upstream_resets,
            ),
            (
                "lanes_internal_errors_total",
                "counter",
                "Requests answered 502 'internal' (a bug).",
                self.internal_errors,
            ),
            ("lanes_reloads_total", "counter", "Topology loads that succeeded.", self.reloads),
            (
                "lanes_reload_failures_total",
                "counter",
                "Topology loads refused (old table kept).",
                self.reload_failures,
            ),
            (
                "lanes_table_generation",
                "gauge",
                "Generation of the live routing table.",
                generation,
            ),
            ("lanes_ready", "gauge", "1 when serving and not draining.", int(ready)),
        ):
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(out) + "\n"
