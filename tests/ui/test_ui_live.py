"""``lanes ui`` against real parts: a sidecar routing bookinfo-shaped traffic, Debian's
Prometheus scraping it on loopback, and the pages rendered in headless Chromium.

One stack per module (Prometheus and Chromium start once). Tests read figures as deltas, so
they hold in any order. Screenshots land in ``test-artifacts/ui/``; with ``LANES_SCREENSHOTS``
set (``make screenshots``) the map and canary pages are also written there for the README.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from test_monitoring import dashboard_exprs, rule_groups
from ui_helpers import (
    ARTIFACTS,
    CHROMIUM_FLAGS,
    Loop,
    Proc,
    get,
    get_json,
    missing,
    need_chromium,
    send,
    start_app,
    start_prometheus,
    start_sidecar,
    wait_for,
)

from lane_router import load_topology
from lane_router.ui import PrometheusSource, ScrapeSource, UiConfig, View, serve_ui

LANES = ("baseline", "feature-a", "feature-b", "hotfix")
SERVICES = ("details", "productpage", "ratings", "reviews")
WEIGHT = 20  # the reviews canary's weight, percent


@dataclass
class Stack:
    proxy: str  # a shared sidecar: its callers are "(client)"
    pp_proxy: str  # productpage's own sidecar (--service productpage)
    admin: str
    prometheus: str
    ui: str  # the UI on Prometheus
    ui_direct: str  # the UI scraping the sidecar itself


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("ui")
    loop = Loop()
    runners: list[web.AppRunner] = []
    procs: list[Proc] = []

    def app(name: str, status: int = 200) -> list[str]:
        runner, addr = loop.run(start_app(name, status=status))
        runners.append(runner)
        return [addr]

    try:
        topology: dict[str, Any] = {
            "lanes": {
                "feature-a": {"description": "new reviews and ratings"},
                "feature-b": {"fallback": "feature-a", "description": "ratings on top of a"},
                "hotfix": {"strict": True, "description": "productpage fix only"},
            },
            "services": {
                "productpage": {"versions": {"baseline": app("pp"), "hotfix": app("pp-hf")}},
                "details": {"versions": {"baseline": app("d"), "hotfix": app("d-hf")}},
                "reviews": {
                    "versions": {
                        "baseline": app("rv"),
                        "feature-a": app("rv-a"),
                        "v2": app("rv-v2", status=500),  # a canary that fails
                    },
                    "canary": {"version": "v2", "weight": WEIGHT},
                },
                "ratings": {
                    "versions": {
                        "baseline": app("ra"),
                        "feature-a": app("ra-a"),
                        "feature-b": app("ra-b"),
                    }
                },
            },
        }
        sidecar, proxy, admin = start_sidecar(workdir, topology)
        procs.append(sidecar)
        pp_sidecar, pp_proxy, pp_admin = start_sidecar(
            workdir, topology, "--service", "productpage", name="pp-sidecar"
        )
        procs.append(pp_sidecar)
        admins = [admin, pp_admin]
        prom, prom_url = start_prometheus(workdir, admins, rule_groups=rule_groups())
        procs.append(prom)
        lanes_yaml = workdir / "lanes.yaml"
        tracing = "http://tracing.example/search?tags=lane%3D{lane}&service={service}"
        ui_runner, ui_url = loop.run(
            serve_ui(
                UiConfig(lanes_yaml, PrometheusSource(prom_url, window="30s"), 1.0, tracing),
                "127.0.0.1",
                0,
            )
        )
        runners.append(ui_runner)
        # The direct UI takes its topology from a callable giving a View (as `--kube` does),
        # with a TTL on feature-a: the map shows its expiry.
        expires = {"feature-a": datetime.now(UTC) + timedelta(hours=2)}
        direct_runner, direct_url = loop.run(
            serve_ui(
                UiConfig(
                    lambda: View(load_topology(lanes_yaml), expires),
                    ScrapeSource(admins),
                    refresh=1.0,
                ),
                "127.0.0.1",
                0,
            )
        )
        runners.append(direct_runner)
        yield Stack(proxy, pp_proxy, admin, prom_url, ui_url.rstrip("/"), direct_url.rstrip("/"))
    finally:
        for proc in procs:
            proc.stop()
        for runner in reversed(runners):
            loop.run(runner.cleanup())
        loop.close()


def _cell(view: dict[str, Any], lane: str, service: str) -> dict[str, Any]:
    return view["cells"][lane][service]


def _prom_sees(stack: Stack, lane: str, service: str, total: float) -> dict[str, Any] | None:
    view = get_json(f"{stack.ui}/api/map")
    return view if _cell(view, lane, service)["total"] >= total else None


def test_map_json_on_prometheus_matches_the_traffic(stack: Stack) -> None:
    before = get_json(f"{stack.ui_direct}/api/map")
    sent = {
        ("feature-a", "reviews"): send(stack.proxy, "reviews", 12, {"x-lane": "feature-a"}),
        ("feature-b", "reviews"): send(stack.proxy, "reviews", 7, {"x-lane": "feature-b"}),
        ("feature-b", "ratings"): send(stack.proxy, "ratings", 5, {"baggage": "lane=feature-b"}),
        ("hotfix", "productpage"): send(stack.proxy, "productpage", 4, {"x-lane": "hotfix"}),
        ("hotfix", "reviews"): send(stack.proxy, "reviews", 3, {"x-lane": "hotfix"}),
    }
    assert set(sent[("hotfix", "reviews")]) == {503}  # strict miss
    assert set(sent[("feature-a", "reviews")]) == {200}
    # The direct scrape sees the exact counts at once.
    direct = get_json(f"{stack.ui_direct}/api/map")
    for (lane, service), codes in sent.items():
        grown = _cell(direct, lane, service)["total"] - _cell(before, lane, service)["total"]
        assert grown == len(codes), (lane, service)
    # Prometheus sees them after its next scrape.
    want = _cell(direct, "hotfix", "reviews")["total"]
    view = wait_for(lambda: _prom_sees(stack, "hotfix", "reviews", want), "Prometheus to scrape")
    assert view["origin"].startswith("Prometheus")
    assert view["problems"] == []
    assert [lane["name"] for lane in view["lanes"]] == list(LANES)
    assert view["services"] == list(SERVICES)
    assert view["lanes"][0]["name"] == view["baseline"]
    fb = _cell(view, "feature-b", "reviews")
    assert (fb["serving"], fb["fallback"], fb["strict_miss"]) == ("feature-a", True, False)
    assert _cell(view, "feature-b", "ratings")["serving"] == "feature-b"
    miss = _cell(view, "hotfix", "reviews")
    assert (miss["serving"], miss["strict_miss"]) == (None, True)
    assert _cell(view, "baseline", "reviews")["canary"] == {"version": "v2", "weight": WEIGHT}
    for (lane, service), _codes in sent.items():
        assert _cell(view, lane, service)["total"] == _cell(direct, lane, service)["total"]
    assert (
        view["lanes"][2]["trace_url"]
        == "http://tracing.example/search?tags=lane%3Dfeature-b&service="
    )
    # Errors: rate() counts increases between two samples, so send more now that Prometheus
    # holds the series; the strict miss is all 5xx.
    send(stack.proxy, "reviews", 3, {"x-lane": "hotfix"})

    def miss_ratio() -> bool:
        cell = _cell(get_json(f"{stack.ui}/api/map"), "hotfix", "reviews")
        return cell["error_ratio"] == 1.0

    wait_for(miss_ratio, "the strict miss's error ratio")


def test_canary_share_reads_the_weight_on_prometheus(stack: Stack) -> None:
    # Warm up so both series exist in Prometheus before the measured burst (rate() counts only
    # increases between samples), then send the burst and wait for Prometheus to scrape it.
    send(stack.proxy, "reviews", 60)
    warm = get_json(f"{stack.ui_direct}/api/canary")["canaries"][0]
    seen = warm["baseline"]["total"] + warm["canary"]["total"]

    def prom_total(at_least: float) -> dict[str, Any] | None:
        c = get_json(f"{stack.ui}/api/canary")["canaries"][0]
        both = c["baseline"]["total"] + c["canary"]["total"]
        return c if both >= at_least and c["canary"]["total"] > 0 else None

    wait_for(lambda: prom_total(seen), "Prometheus to see the warm-up")
    codes = send(stack.proxy, "reviews", 1000)
    canary = wait_for(lambda: prom_total(seen + 1000), "Prometheus to see the burst")
    assert canary["service"] == "reviews" and canary["weight"] == WEIGHT
    assert abs(canary["share"] - WEIGHT) < 5, canary
    assert abs(100 * codes.count(500) / len(codes) - WEIGHT) < 5  # the canary answers 500
    assert canary["canary"]["error_ratio"] == pytest.approx(1.0)
    assert canary["baseline"]["error_ratio"] == 0.0
    assert canary["canary"]["p99"] is not None and canary["baseline"]["p99"] is not None
    # The sidecar's routing table, for the propagation-break alert.
    info = get_json(
        f"{stack.prometheus}/api/v1/query?query="
        + quote('lanes_route_info{service="reviews",lane="feature-b"}')
    )["data"]["result"]
    assert {r["metric"]["serving"] for r in info} == {"feature-a"}
    direct = get_json(f"{stack.ui_direct}/api/canary")["canaries"][0]
    assert abs(direct["share_total"] - WEIGHT) < 5


def test_graph_json_marks_the_lanes_versions(stack: Stack) -> None:
    send(stack.proxy, "ratings", 3, {"x-lane": "feature-b"})
    send(stack.pp_proxy, "reviews", 4, {"x-lane": "feature-b"})
    view = get_json(f"{stack.ui_direct}/api/graph?lane=feature-b")
    nodes = {n["service"]: n for n in view["nodes"]}
    assert nodes["ratings"]["own"] and not nodes["reviews"]["own"]
    assert nodes["reviews"]["fallback"] and nodes["reviews"]["serving"] == "feature-a"
    assert not nodes["productpage"]["own"] and nodes["productpage"]["serving"] == "baseline"
    # A shared sidecar has no --service: its callers show as one "(client)" node; the calls
    # through productpage's sidecar (--service productpage) come from productpage.
    edges = {(e["from"], e["to"]): e for e in view["edges"]}
    assert ("(client)", "ratings") in edges and ("productpage", "reviews") in edges
    assert edges[("productpage", "reviews")]["total"] >= 4
    assert nodes["reviews"]["layer"] > nodes["productpage"]["layer"]
    status, body = get(f"{stack.ui}/api/graph?lane=nosuch")
    assert status == 404 and b"no such lane" in body


def test_rules_and_dashboard_on_prometheus(stack: Stack) -> None:
    """The recording rules record, the canary's 5xx puts its alert in pending (it needs 5 m to
    fire), and every dashboard query runs."""
    send(stack.proxy, "reviews", 200)

    def prom(expr: str) -> list[dict[str, Any]]:
        data = get_json(f"{stack.prometheus}/api/v1/query?query={quote(expr)}")
        assert data["status"] == "success", (expr, data)
        return data["data"]["result"]

    def alert_pending() -> list[dict[str, Any]]:
        alerts = get_json(f"{stack.prometheus}/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "CanaryErrorRateAboveBaseline"]

    wait_for(lambda: prom('lanes:requests:rate1m{service="reviews"}'), "recorded rates")
    (alert,) = wait_for(alert_pending, "the canary alert")
    assert alert["state"] == "pending"
    assert alert["labels"]["service"] == "reviews" and alert["labels"]["served_by"] == "v2"
    groups = get_json(f"{stack.prometheus}/api/v1/rules")["data"]["groups"]
    assert all(r["health"] != "err" for g in groups for r in g["rules"]), groups
    for expr in dashboard_exprs():
        prom(expr.replace("$service", ".*").replace("$lane", ".*"))
    assert prom('sum by (lane) (lanes:requests:rate1m{service=~".*", lane=~".*"})')


# -- the pages in a real browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    chromium = need_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright", "pip install -e '.[test]' (make venv)")
    with (
        tempfile.TemporaryDirectory(prefix="lanes-ui-chromium-") as profile,
        sync_playwright() as pw,
    ):
        ctx = pw.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1280, "height": 760},
        )
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield pg
    pg.close()
    assert errors == [], errors  # no script error, no CSP violation, no failed load


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    readme = os.environ.get("LANES_SCREENSHOTS")
    if readme and name in ("lane-map", "canary", "call-graph"):
        Path(readme).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(readme) / f"{name}.png"), full_page=True)


def _rendered(page: Any, times: int = 1) -> None:
    page.wait_for_function(
        "n => Number(document.body.dataset.rendered || 0) >= n", arg=times, timeout=20_000
    )


def test_lane_map_page(stack: Stack, page: Any) -> None:
    send(stack.proxy, "productpage", 5)
    send(stack.proxy, "reviews", 5, {"x-lane": "feature-a"})
    page.goto(f"{stack.ui}/")
    _rendered(page)
    rows = page.eval_on_selector_all("tbody tr", "rs => rs.map(r => r.dataset.lane)")
    assert rows == list(LANES)
    cols = page.eval_on_selector_all("thead th.service", "hs => hs.map(h => h.textContent)")
    assert cols == list(SERVICES)
    cell = page.locator('td[data-lane="feature-b"][data-service="reviews"]')
    assert cell.get_attribute("data-serving") == "feature-a"
    assert "via fallback" in cell.inner_text()
    assert (
        "503 strict" in page.locator('td[data-lane="hotfix"][data-service="ratings"]').inner_text()
    )
    assert (
        f"canary v2 · {WEIGHT}%"
        in page.locator('td[data-lane="baseline"][data-service="reviews"]').inner_text()
    )
    link = page.locator('th[data-lane="feature-a"] a.trace').get_attribute("href")
    assert link == "http://tracing.example/search?tags=lane%3Dfeature-a&service="
    # Numbers move: traffic sent now shows up after the next scrape and refresh.
    sel = 'td[data-lane="feature-a"][data-service="ratings"]'
    before = float(page.locator(sel).get_attribute("data-total"))
    send(stack.proxy, "ratings", 9, {"x-lane": "feature-a"})
    page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel).dataset.total) >= n",
        arg=[sel, before + 9],
        timeout=20_000,
    )
    assert page.locator("#status .problem").count() == 0
    _shot(page, "lane-map")


def test_lane_map_shows_a_lanes_expiry(stack: Stack, page: Any) -> None:
    page.goto(f"{stack.ui_direct}/")
    _rendered(page)
    tag = page.locator('th[data-lane="feature-a"] .tag.ttl')
    assert re.fullmatch(r"expires in (1h 59m|2h)", tag.inner_text()), tag.inner_text()
    assert tag.get_attribute("data-expires-at").endswith("Z")
    assert page.locator("th.lane .tag.ttl").count() == 1  # no other lane has a TTL


def test_call_graph_page(stack: Stack, page: Any) -> None:
    send(stack.proxy, "productpage", 5, {"x-lane": "feature-a"})
    send(stack.pp_proxy, "reviews", 5, {"x-lane": "feature-a"})
    send(stack.pp_proxy, "details", 5, {"x-lane": "feature-a"})
    send(stack.proxy, "ratings", 5, {"x-lane": "feature-a"})
    page.goto(f"{stack.ui_direct}/graph?lane=feature-a")
    send(stack.pp_proxy, "reviews", 5, {"x-lane": "feature-a"})
    _rendered(page, 2)  # a second scrape: rates, error shares and p99 on the edges
    kinds = dict(
        page.eval_on_selector_all(
            "g.node", "ns => ns.map(n => [n.dataset.service, n.dataset.kind])"
        )
    )
    assert kinds["reviews"] == kinds["ratings"] == "own"
    assert kinds["productpage"] == kinds["details"] == "base"
    assert page.locator("a.lane-tab.active").inner_text() == "feature-a"
    assert page.locator('g.edge[data-from="productpage"][data-to="reviews"]').count() == 1
    _shot(page, "call-graph")
    page.goto(f"{stack.ui_direct}/graph?lane=hotfix")
    _rendered(page)
    assert page.locator('g.node[data-service="reviews"]').get_attribute("data-kind") == "miss"
    assert page.locator('g.node[data-service="details"]').get_attribute("data-kind") == "own"


def test_canary_page(stack: Stack, page: Any) -> None:
    page.goto(f"{stack.ui}/canary")
    _rendered(page)
    card = page.locator('section.card[data-service="reviews"]')
    assert card.get_attribute("data-weight") == str(WEIGHT)
    share = float(card.get_attribute("data-share"))
    assert abs(share - WEIGHT) < 5
    assert "fails more often than the baseline" in card.inner_text()
    _shot(page, "canary")
