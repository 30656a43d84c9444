"""Live figures for the UI, from the sidecars' ``/metrics`` directly or from Prometheus.

Both sources answer the same question: per (source, service, lane, served_by), how many requests
so far, how many per second, how many 5xx per second, and the p99 latency over a window. The
PromQL the Prometheus source runs is :data:`QUERIES`, the same text the recording rules in
``k8s/monitoring/`` record and the Grafana dashboard plots, so all three agree.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

__all__ = [
    "GROUP",
    "QUERIES",
    "FigureSource",
    "Figures",
    "PrometheusSource",
    "Row",
    "ScrapeSource",
    "histogram_quantile",
    "queries",
    "spread_p99",
]

log = logging.getLogger("lanes.ui")

# The labels every figure is grouped by. ``source`` is the calling service, set by a sidecar
# started with ``--service NAME``; a shared sidecar has none ("" here).
GROUP = ("source", "service", "lane", "served_by")
_BY = ", ".join(GROUP)
MAX_BODY = 8 * 1024 * 1024  # a /metrics page or a Prometheus answer larger than this is refused


def queries(window: str = "1m") -> dict[str, str]:
    """The PromQL behind every live figure, for a rate window such as ``1m``."""
    return {
        "total": f"sum by ({_BY}) (lanes_requests_total)",
        "rate": f"sum by ({_BY}) (rate(lanes_requests_total[{window}]))",
        "errors": f'sum by ({_BY}) (rate(lanes_requests_total{{code=~"5.."}}[{window}]))',
        "p99": (
            f"histogram_quantile(0.99, sum by (le, {_BY}) "
            f"(rate(lanes_request_duration_seconds_bucket[{window}])))"
        ),
    }


QUERIES = queries()


@dataclass
class Row:
    """One (source, service, lane, served_by) group. Rates are None until two samples exist."""

    source: str
    service: str
    lane: str
    served_by: str
    total: float = 0.0
    rate: float | None = None
    errors: float | None = None
    p99: float | None = None  # seconds; None without latency samples in the window


@dataclass
class Figures:
    """What a source saw: the rows, when, and what went wrong (shown on the page, never hidden)."""

    rows: list[Row] = field(default_factory=list)
    at: float = 0.0
    problems: list[str] = field(default_factory=list)
    origin: str = ""


class FigureSource(Protocol):
    """Anything that can produce :class:`Figures` on demand."""

    origin: str

    async def figures(self, session: aiohttp.ClientSession) -> Figures: ...


def _key(labels: Mapping[str, str]) -> tuple[str, str, str, str]:
    src, svc, lane, served = (labels.get(k, "") for k in GROUP)
    return (src, svc, lane, served)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus's interpolation over cumulative (upper bound, count) buckets, sorted."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound  # like Prometheus: the highest finite bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


# -- scraping the sidecars directly --------------------------------------------------------


@dataclass
class _Snapshot:
    at: float
    requests: dict[tuple[tuple[str, str, str, str], str], float]  # (group, code) -> count
    buckets: dict[tuple[tuple[str, str, str, str], float], float]  # (group, le) -> count


def _parse(text: str, source: str) -> _Snapshot:
    from prometheus_client.parser import text_string_to_metric_families

    requests: dict[tuple[tuple[str, str, str, str], str], float] = {}
    buckets: dict[tuple[tuple[str, str, str, str], float], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("lanes_requests", "lanes_request_duration_seconds"):
            continue
        for sample in family.samples:
            labels = dict(sample.labels)
            labels.setdefault("source", source)
            if sample.name == "lanes_requests_total":
                k = (_key(labels), labels.get("code", ""))
                requests[k] = requests.get(k, 0.0) + sample.value
            elif sample.name == "lanes_request_duration_seconds_bucket":
                b = (_key(labels), float(labels.get("le", "+Inf")))
                buckets[b] = buckets.get(b, 0.0) + sample.value
    return _Snapshot(time.monotonic(), requests, buckets)


def _merge(snaps: Iterable[_Snapshot], at: float) -> _Snapshot:
    out = _Snapshot(at, {}, {})
    for s in snaps:
        for k, v in s.requests.items():
            out.requests[k] = out.requests.get(k, 0.0) + v
        for b, v in s.buckets.items():
            out.buckets[b] = out.buckets.get(b, 0.0) + v
    return out


class ScrapeSource:
    """Scrapes each sidecar's admin ``/metrics`` on every call (laptop, ``lanes demo --serve``).

    Rates are the difference between this scrape and the oldest one kept within ``window``
    seconds (at least the previous one), so the first call gives totals and no rates yet.
    A sidecar's histogram has no ``served_by``/``source`` labels unless it has them itself:
    a missing label groups as "".
    """

    def __init__(self, admins: Sequence[str], *, window: float = 60.0) -> None:
        self.admins = list(admins)
        self.window = window
        self.origin = "sidecars " + ", ".join(self.admins)
        self._history: deque[_Snapshot] = deque()
        self._lock = asyncio.Lock()

    async def _scrape(
        self, session: aiohttp.ClientSession, admin: str
    ) -> tuple[_Snapshot | None, str | None]:
        url = f"http://{admin}/metrics"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status != 200:
                    return None, f"{url} answered {resp.status}"
                body = await resp.content.read(MAX_BODY + 1)
                if len(body) > MAX_BODY:
                    return None, f"{url} sent more than {MAX_BODY} bytes"
            return _parse(body.decode("utf-8", "replace"), ""), None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return None, f"{url}: {exc.__class__.__name__}: {exc}"

    async def figures(self, session: aiohttp.ClientSession) -> Figures:
        async with self._lock:
            results = await asyncio.gather(*(self._scrape(session, a) for a in self.admins))
            problems = [p for _, p in results if p]
            for p in problems:
                log.warning("lanes ui: cannot scrape %s (is the sidecar running?)", p)
            now = time.monotonic()
            cur = _merge((s for s, _ in results if s is not None), now)
            hist = self._history
            while len(hist) > 1 and now - hist[1].at >= self.window:
                hist.popleft()
            prev = hist[0] if hist else None
            hist.append(cur)
            if len(hist) > 1 and now - hist[0].at > self.window:
                hist.popleft()
            return Figures(_rows(cur, prev), time.time(), problems, self.origin)


def _rows(cur: _Snapshot, prev: _Snapshot | None) -> list[Row]:
    rows: dict[tuple[str, str, str, str], Row] = {}
    dt = cur.at - prev.at if prev is not None else 0.0
    for (group, code), count in cur.requests.items():
        row = rows.get(group)
        if row is None:
            row = rows[group] = Row(*group)
        row.total += count
        if dt > 0 and prev is not None:
            delta = max(0.0, count - prev.requests.get((group, code), 0.0)) / dt
            row.rate = (row.rate or 0.0) + delta
            bad = delta if code.startswith("5") else 0.0
            row.errors = (row.errors or 0.0) + bad
    if prev is not None and dt > 0:
        per_group: dict[tuple[str, str, str, str], list[tuple[float, float]]] = {}
        for (group, le), count in cur.buckets.items():
            delta = max(0.0, count - prev.buckets.get((group, le), 0.0))
            per_group.setdefault(group, []).append((le, delta))
        p99s = {g: histogram_quantile(0.99, sorted(pairs)) for g, pairs in per_group.items()}
        spread_p99(rows, p99s)
    return sorted(rows.values(), key=lambda r: _key(r.__dict__))


def spread_p99(
    rows: Mapping[tuple[str, str, str, str], Row],
    p99s: Mapping[tuple[str, str, str, str], float | None],
) -> None:
    """Give each row the p99 of its histogram group. A histogram without ``served_by`` or
    ``source`` labels (an older sidecar) covers several rows: each gets that group's figure."""
    for group, p99 in p99s.items():
        if p99 is None or math.isnan(p99):
            continue
        for key, row in rows.items():
            if all(g in ("", k) for g, k in zip(group, key, strict=True)):
                row.p99 = p99 if row.p99 is None else max(row.p99, p99)


# -- a Prometheus server's HTTP API ------------------------------------------------------------


class PrometheusSource:
    """Runs :func:`queries` against a Prometheus server's ``/api/v1/query`` (a cluster)."""

    def __init__(self, url: str, *, window: str = "1m") -> None:
        self.url = url.rstrip("/")
        self.window = window
        self.origin = f"Prometheus {self.url} (rate window {window})"

    async def _query(
        self, session: aiohttp.ClientSession, expr: str, at: float
    ) -> list[tuple[dict, float]]:
        url = f"{self.url}/api/v1/query"
        params = {"query": expr, "time": f"{at:.3f}"}
        async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            body = await resp.content.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise ValueError(f"{url} sent more than {MAX_BODY} bytes")
            data = json.loads(body)
            if resp.status != 200 or data.get("status") != "success":
                raise ValueError(f"{url} answered {resp.status}: {data.get('error', data)}")
        out = []
        for item in data["data"]["result"]:
            value = float(item["value"][1])
            out.append((item["metric"], value))
        return out

    async def figures(self, session: aiohttp.ClientSession) -> Figures:
        qs = queries(self.window)
        names = list(qs)
        at = time.time()  # one evaluation instant, so rates and error rates agree
        results = await asyncio.gather(
            *(self._query(session, qs[n], at) for n in names), return_exceptions=True
        )
        rows: dict[tuple[str, str, str, str], Row] = {}
        p99s: dict[tuple[str, str, str, str], float | None] = {}
        problems: list[str] = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                msg = f"{self.url}: query {name!r} failed: {result.__class__.__name__}: {result}"
                log.warning("lanes ui: %s (is Prometheus up and scraping the sidecars?)", msg)
                problems.append(msg)
                continue
            for labels, value in result:
                key = _key(labels)
                if name == "p99":
                    p99s[key] = value
                    continue
                row = rows.get(key)
                if row is None:
                    row = rows[key] = Row(*key)
                if math.isnan(value):
                    continue
                setattr(row, name, value)
        spread_p99(rows, p99s)
        return Figures(
            sorted(rows.values(), key=lambda r: _key(r.__dict__)),
            time.time(),
            problems,
            self.origin,
        )
