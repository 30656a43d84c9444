"""The UI's pure parts: the p99 interpolation, link templates, and a topology file that goes
bad or away while the UI runs (the last good one stays shown; never one before: 503 JSON)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lane_router.ui import Figures, UiConfig, histogram_quantile, make_app, trace_link

GOOD = """\
lanes:
  feature-a: {}
services:
  reviews:
    versions:
      baseline: ['127.0.0.1:9']
"""


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    # 50 requests at most 10 ms, 10 more at most 100 ms: rank 59.4 lies in the second bucket.
    assert histogram_quantile(0.99, [(0.01, 50), (0.1, 60), (float("inf"), 60)]) == (
        pytest.approx(0.01 + 0.09 * (59.4 - 50) / 10)
    )
    assert histogram_quantile(0.99, [(0.01, 0), (float("inf"), 0)]) is None
    assert histogram_quantile(0.5, [(0.5, 0), (float("inf"), 4)]) == 0.5  # top finite bound


def test_trace_link_quotes_its_values() -> None:
    tmpl = "http://jaeger/search?tags=lane%3D{lane}&service={service}"
    assert (
        trace_link(tmpl, "a b&c", "x/y")
        == "http://jaeger/search?tags=lane%3Da%20b%26c&service=x%2Fy"
    )
    assert trace_link(None, "a") is None


class _NoFigures:
    origin = "none"

    async def figures(self, session: object) -> Figures:
        return Figures(origin=self.origin)


async def test_a_bad_or_missing_file_keeps_the_last_good_topology(tmp_path: Path) -> None:
    path = tmp_path / "lanes.yaml"
    cfg = UiConfig(path, _NoFigures())
    async with TestClient(TestServer(make_app(cfg))) as client:
        resp = await client.get("/api/map")
        assert resp.status == 503 and "no topology" in (await resp.json())["error"]
        path.write_text(GOOD)
        view = await (await client.get("/api/map")).json()
        assert [lane["name"] for lane in view["lanes"]] == ["baseline", "feature-a"]
        path.write_text("lanes: {feature-a: {fallback: nosuch}}\nservices: {}\n")
        assert (await client.get("/api/map")).status == 200  # the last good one, a WARNING
        path.unlink()
        assert (await client.get("/api/map")).status == 200
        resp = await client.get("/api/graph?lane=nosuch")
        assert resp.status == 404 and (await resp.json())["lanes"] == ["baseline", "feature-a"]
        page = await client.get("/")
        assert (
            page.status == 200 and "default-src 'none'" in page.headers["Content-Security-Policy"]
        )
