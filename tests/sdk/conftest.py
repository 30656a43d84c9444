"""Fixtures for the lanes_sdk tests: one real SDK tracer provider per session, real aiohttp
servers on 127.0.0.1 with kernel-chosen ports, and the A -> B -> C chain.

OpenTelemetry's global tracer provider can be set only once per process, so it is set here once
(or, if another suite set one first, an exporter is added to it). ``instrument()`` is undone
after each test that used it, so tests never see each other's patches.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import lanes_sdk

_EXPORTER = InMemorySpanExporter()
_PROVIDER: list[TracerProvider] = []

Serve = Callable[..., Awaitable[str]]
SESSION = web.AppKey("session", aiohttp.ClientSession)
C_URL = web.AppKey("c_url", str)


def _session_provider() -> TracerProvider:
    if not _PROVIDER:
        if not isinstance(trace.get_tracer_provider(), TracerProvider):
            trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        _PROVIDER.append(provider)
    return _PROVIDER[0]


@pytest.fixture(scope="session")
def tracer_provider() -> TracerProvider:
    return _session_provider()


@pytest.fixture
def spans(tracer_provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture
def instrumented(
    tracer_provider: TracerProvider, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """``lanes_sdk.instrument()`` as a service calls it at startup, undone afterwards."""
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    lanes_sdk.instrument()
    yield
    lanes_sdk.uninstrument()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an aiohttp app on 127.0.0.1, kernel-chosen port; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, **handler_args: Any) -> str:
        runner = web.AppRunner(app, **handler_args)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


def _with_session(app: web.Application) -> None:
    """Each service owns one ClientSession, created at startup (after instrument())."""

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession()
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)


async def _report(request: web.Request) -> web.Response:
    """Service C: what arrived on the wire, and the lane its handler sees."""
    return web.json_response(
        {
            "lane": lanes_sdk.current_lane(),
            "x_lane": request.headers.getall("x-lane", []),
            "baggage": request.headers.getall("baggage", []),
        }
    )


def _forwarder(next_url: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Services A and B: call the next hop and wrap its answer. Nothing here is about lanes,
    except reading the lane for the report."""

    async def forward(request: web.Request) -> web.Response:
        async with request.app[SESSION].get(next_url) as resp:
            body = await resp.json()
        return web.json_response({"lane": lanes_sdk.current_lane(), "next": body})

    return forward


async def _fanout(request: web.Request) -> web.Response:
    """B's fan-out: gather, create_task, a LaneExecutor, a plain executor and a wrapped thread."""
    session: aiohttp.ClientSession = request.app[SESSION]
    url = request.app[C_URL]

    async def call() -> Any:
        async with session.get(url) as resp:
            return (await resp.json())["x_lane"]

    gathered = await asyncio.gather(call(), call(), call())
    task = await asyncio.create_task(call())
    loop = asyncio.get_running_loop()
    with lanes_sdk.LaneExecutor(max_workers=2) as lane_pool, ThreadPoolExecutor(1) as plain:
        in_lane_pool = await loop.run_in_executor(lane_pool, lanes_sdk.current_lane)
        in_plain_pool = await loop.run_in_executor(plain, lanes_sdk.current_lane)
    seen: list[str | None] = []
    done = asyncio.Event()

    def in_thread() -> None:
        seen.append(lanes_sdk.current_lane())
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=lanes_sdk.wrap(in_thread)).start()
    await done.wait()
    return web.json_response(
        {
            "gather": gathered,
            "task": task,
            "lane_executor": in_lane_pool,
            "plain_executor": in_plain_pool,
            "thread": seen[0],
        }
    )


Chain = dict[str, str]


@pytest.fixture
def chain(serve: Serve) -> Callable[..., Awaitable[Chain]]:
    """Build A -> B -> C; returns the entry URLs. Apps are created when called, i.e. after
    whatever instrumentation the test set up."""

    async def build(
        *,
        middlewares: Any = None,
        make_app: Callable[[], web.Application] | None = None,
        **handler_args: Any,
    ) -> Chain:
        def app() -> web.Application:
            if make_app is not None:
                return make_app()
            if middlewares is None:
                return web.Application()
            return web.Application(middlewares=middlewares)

        c = app()
        c.router.add_get("/c", _report)
        c_url = await serve(c, **handler_args)
        b = app()
        _with_session(b)
        b[C_URL] = f"{c_url}/c"
        b.router.add_get("/b", _forwarder(f"{c_url}/c"))
        b.router.add_get("/fanout", _fanout)
        b_url = await serve(b, **handler_args)
        a = app()
        _with_session(a)
        a.router.add_get("/a", _forwarder(f"{b_url}/b"))
        a_url = await serve(a, **handler_args)
        return {"a": f"{a_url}/a", "b": f"{b_url}/b", "fanout": f"{b_url}/fanout"}

    return build
