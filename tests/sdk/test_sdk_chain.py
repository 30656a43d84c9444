"""A -> B -> C over real aiohttp servers: the lane set by the caller reaches C, whose callers do
nothing about lanes, and the trace stays one tree."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import lanes_sdk


async def _get(url: str, headers: dict[str, str] | None = None) -> dict:
    """One request from a plain caller (QA's curl): the lane is only what the headers say."""
    async with aiohttp.ClientSession() as caller, caller.get(url, headers=headers) as resp:
        assert resp.status == 200
        return await resp.json()


def _hops(body: dict) -> tuple[object, object, dict]:
    """(lane at A, lane at B, C's report) from A's answer."""
    return body["lane"], body["next"]["lane"], body["next"]["next"]


def _bare_lane_members(baggage_lines: list[str]) -> list[str]:
    members = [m.strip() for line in baggage_lines for m in line.split(",")]
    return [m for m in members if m.split("=", 1)[0].strip() == "lane"]


def _lane_outside_otel(provider):
    """An application with the lane middleware *outside* OpenTelemetry's server middleware
    (the order an auto-instrumented app can get), built from aiohttp's own class."""
    from aiohttp import web_app
    from opentelemetry.instrumentation.aiohttp_server import create_aiohttp_middleware

    otel = create_aiohttp_middleware(tracer_provider=provider)
    return lambda: web_app.Application(middlewares=[lanes_sdk.lane_middleware, otel])


@pytest.mark.parametrize("position", ["inside-otel", "outside-otel"])
@pytest.mark.usefixtures("instrumented")
async def test_lane_from_header_reaches_c_with_one_trace(
    chain, spans: InMemorySpanExporter, tracer_provider, position
):
    make_app = _lane_outside_otel(tracer_provider) if position == "outside-otel" else None
    urls = await chain(make_app=make_app)
    body = await _get(urls["a"], {"x-lane": "feature-a"})
    at_a, at_b, c = _hops(body)
    assert (at_a, at_b, c["lane"]) == ("feature-a", "feature-a", "feature-a")
    assert c["x_lane"] == ["feature-a"]
    assert _bare_lane_members(c["baggage"]) == ["lane=feature-a"]

    finished = {s.context.span_id: s for s in spans.get_finished_spans()}
    servers = {s.name: s for s in finished.values() if s.kind is SpanKind.SERVER}
    assert {"GET /a", "GET /b", "GET /c"} <= set(servers)
    # Walk up from C's server span: B's client span, B's server span, A's client, A's server.
    lineage = []
    span = servers["GET /c"]
    while span is not None:
        lineage.append((span.kind, span.name))
        span = finished.get(span.parent.span_id) if span.parent else None
    kinds = [k for k, _ in lineage]
    assert kinds[:5] == [
        SpanKind.SERVER,
        SpanKind.CLIENT,
        SpanKind.SERVER,
        SpanKind.CLIENT,
        SpanKind.SERVER,
    ]
    assert [n for k, n in lineage if k is SpanKind.SERVER][:3] == ["GET /c", "GET /b", "GET /a"]
    assert len({s.context.trace_id for s in finished.values()}) == 1
    # LaneSpanProcessor: every span started inside the lane is tagged, servers and clients
    # alike; only the test's own request span (set by header, outside any lane) is not.
    root = span_of_caller = [s for s in finished.values() if s.parent is None]
    assert len(root) == 1 and span_of_caller[0].kind is SpanKind.CLIENT
    inside = [s for s in finished.values() if s.parent is not None]
    assert len(inside) >= 5
    assert {s.attributes.get("lane") for s in inside} == {"feature-a"}


@pytest.mark.usefixtures("instrumented")
async def test_baggage_only_lane_is_kept_bare_and_other_members_survive(chain):
    urls = await chain()
    body = await _get(urls["a"], {"baggage": "user=42, lane=feature-b;ttl=60"})
    at_a, at_b, c = _hops(body)
    assert (at_a, at_b, c["lane"]) == ("feature-b", "feature-b", "feature-b")
    assert c["x_lane"] == ["feature-b"]
    assert _bare_lane_members(c["baggage"]) == ["lane=feature-b"]
    assert "user=42" in c["baggage"][0]


@pytest.mark.usefixtures("instrumented")
async def test_untagged_request_stays_untagged(chain, spans: InMemorySpanExporter):
    urls = await chain()
    body = await _get(urls["a"])
    at_a, at_b, c = _hops(body)
    assert (at_a, at_b, c["lane"], c["x_lane"]) == (None, None, None, [])
    assert all(not _bare_lane_members([line]) for line in c["baggage"])
    assert all("lane" not in s.attributes for s in spans.get_finished_spans())


@pytest.mark.usefixtures("instrumented")
async def test_tuple_middlewares_and_explicit_lane_middleware_under_instrument(chain):
    """A tuple raises under bare OTel instrumentation; instrument() copies it, and an explicit
    lane_middleware is not installed twice."""
    calls: list[str] = []

    from aiohttp import web

    @web.middleware
    async def seen(request, handler):
        calls.append(str(lanes_sdk.current_lane()))
        return await handler(request)

    urls = await chain(middlewares=(lanes_sdk.lane_middleware, seen))
    body = await _get(urls["a"], {"x-lane": "feature-t"})
    assert _hops(body)[2]["lane"] == "feature-t"
    # The user's middleware runs inside the lane middleware: it sees the lane at every hop.
    assert calls == ["feature-t"] * 3


async def test_lane_middleware_without_server_instrumentation(chain, tracer_provider, monkeypatch):
    """Only the client is instrumented (no server spans at all); the middleware alone attaches
    the lane, and the global default propagator (tracecontext,baggage) carries it on."""
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    client = AioHttpClientInstrumentor()
    client.instrument()
    try:
        urls = await chain(middlewares=[lanes_sdk.lane_middleware])
        body = await _get(urls["a"], {"baggage": "lane=feature-m"})
    finally:
        client.uninstrument()
    at_a, at_b, c = _hops(body)
    assert (at_a, at_b, c["lane"]) == ("feature-m", "feature-m", "feature-m")
    assert _bare_lane_members(c["baggage"]) == ["lane=feature-m"]


@pytest.mark.usefixtures("instrumented")
async def test_fanout_tasks_and_threads_keep_the_lane(chain):
    urls = await chain()
    body = await _get(urls["fanout"], {"x-lane": "feature-f"})
    assert body["gather"] == [["feature-f"]] * 3
    assert body["task"] == ["feature-f"]
    assert body["lane_executor"] == "feature-f"
    assert body["thread"] == "feature-f"
    # Why the helpers exist: a plain executor starts with an empty context.
    assert body["plain_executor"] is None


@pytest.mark.usefixtures("instrumented")
async def test_thousand_concurrent_requests_over_twenty_lanes_never_cross(
    chain, spans: InMemorySpanExporter
):
    urls = await chain()
    lanes = [f"lane-{i:02d}" for i in range(20)]
    rng = random.Random(7)
    plan = [rng.choice([*lanes, None]) for _ in range(1000)]

    async def one(caller: aiohttp.ClientSession, i: int, lane: str | None):
        if lane is None:
            headers = {}
        elif i % 2:
            headers = {"x-lane": lane}
        else:
            headers = {"baggage": f"req={i},lane={lane}"}
        async with caller.get(urls["a"], headers=headers) as resp:
            assert resp.status == 200
            return lane, await resp.json()

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as caller:
        results = await asyncio.gather(*(one(caller, i, lane) for i, lane in enumerate(plan)))
    spans.clear()

    leaks = []
    for lane, body in results:
        at_a, at_b, c = _hops(body)
        seen = (at_a, at_b, c["lane"], c["x_lane"], _bare_lane_members(c["baggage"]))
        want = (lane, lane, lane, [lane] if lane else [], [f"lane={lane}"] if lane else [])
        if seen != want:
            leaks.append((lane, seen))
    assert leaks == []
    assert len({lane for lane in plan}) == 21
