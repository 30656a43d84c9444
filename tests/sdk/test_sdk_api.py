"""The public API as application code uses it: use_lane, current_lane, the span processor,
thread helpers, the ASGI middleware, message headers, instrument() and the propagator's knobs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.propagate import get_global_textmap, inject
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import lanes_sdk
from lanes_sdk import (
    LaneASGIMiddleware,
    LaneExecutor,
    LanePropagator,
    current_lane,
    extract_lane,
    inject_lane,
    use_lane,
    wrap,
)


def test_use_lane_sets_and_restores():
    assert current_lane() is None
    with use_lane("feature-a") as lane:
        assert lane == current_lane() == "feature-a"
        with use_lane("feature-b"):
            assert current_lane() == "feature-b"
        with use_lane(None):
            assert current_lane() is None
        assert current_lane() == "feature-a"
    assert current_lane() is None


@pytest.mark.parametrize("bad", ["Feature", "a b", "", "-a", "a" * 64, "é", "a\r\nx: y", b"a"])
def test_use_lane_rejects_invalid_names_at_the_call_site(bad):
    with pytest.raises(ValueError, match="invalid lane name"):
        use_lane(bad)


async def test_use_lane_async_and_tasks():
    async def read() -> str | None:
        await asyncio.sleep(0)
        return current_lane()

    async with use_lane("feature-a"):
        task = asyncio.create_task(read())
        gathered = await asyncio.gather(read(), read())
        assert await asyncio.to_thread(current_lane) == "feature-a"
    assert await task == "feature-a"
    assert gathered == ["feature-a", "feature-a"]
    assert current_lane() is None


def test_current_lane_ignores_invalid_baggage_and_strips_properties():
    assert current_lane(baggage.set_baggage("lane", "Feature", Context())) is None
    assert current_lane(baggage.set_baggage("lane", "feature-b;ttl=60", Context())) == "feature-b"
    assert current_lane(baggage.set_baggage("lane", 42, Context())) is None


@pytest.mark.usefixtures("instrumented")
def test_span_processor_tags_spans_started_in_a_lane(spans: InMemorySpanExporter):
    tracer = trace.get_tracer("test")
    with (
        use_lane("feature-s"),
        tracer.start_as_current_span("in-lane"),
        tracer.start_as_current_span("child"),
    ):
        pass
    with tracer.start_as_current_span("no-lane"):
        pass
    tagged = {s.name: s.attributes.get("lane") for s in spans.get_finished_spans()}
    assert tagged == {"in-lane": "feature-s", "child": "feature-s", "no-lane": None}


def test_lane_executor_and_wrap_carry_the_lane_into_threads():
    seen: list[str | None] = []
    with use_lane("feature-t"):
        with LaneExecutor(max_workers=4) as pool:
            assert list(pool.map(lambda _: current_lane(), range(8))) == ["feature-t"] * 8
        worker = threading.Thread(target=wrap(lambda: seen.append(current_lane())))
    worker.start()  # started outside the lane: the wrapper carries the one it was made in
    worker.join()
    assert seen == ["feature-t"]


async def test_lane_executor_as_the_loop_default():
    loop = asyncio.get_running_loop()
    loop.set_default_executor(LaneExecutor(max_workers=2))
    async with use_lane("feature-d"):
        assert await loop.run_in_executor(None, current_lane) == "feature-d"


async def _asgi(app, headers: list[tuple[bytes, bytes]], kind: str = "http") -> None:
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        return None

    scope = {"type": kind, "method": "GET", "path": "/", "headers": headers}
    await app(scope, receive, send)


async def test_asgi_middleware_attaches_the_lane_and_baggage():
    seen: list[tuple[str | None, dict[str, str]]] = []

    async def app(scope, receive, send):
        outbound: dict[str, str] = {}
        LanePropagator().inject(outbound)
        seen.append((current_lane(), dict(baggage.get_all())))

    wrapped = LaneASGIMiddleware(app)
    await _asgi(wrapped, [(b"baggage", b"user=1,lane=feature-b;ttl=60")])
    await _asgi(wrapped, [(b"x-lane", b"feature-x"), (b"baggage", b"lane=feature-y")])
    await _asgi(wrapped, [(b"x-lane", b"BAD\xff")])
    await _asgi(wrapped, [(b"x-lane", b"feature-l")], kind="lifespan")
    assert seen == [
        ("feature-b", {"lane": "feature-b", "user": "1"}),
        ("feature-x", {"lane": "feature-x"}),
        (None, {}),
        (None, {}),  # lifespan: not a request, nothing attached
    ]
    assert current_lane() is None


async def test_asgi_middleware_custom_header():
    seen: list[str | None] = []

    async def app(scope, receive, send):
        seen.append(current_lane())

    await _asgi(LaneASGIMiddleware(app, header="X-Env"), [(b"x-env", b"feature-e")])
    assert seen == ["feature-e"]


def test_message_headers_kafka_and_amqp_shapes():
    kafka = [("trace", b"1")]
    with use_lane("feature-k"):
        assert inject_lane(kafka) is kafka
        amqp = inject_lane({"X-Lane": "old"})
    assert kafka == [("trace", b"1"), ("x-lane", b"feature-k")]
    assert amqp == {"x-lane": "feature-k"}
    assert extract_lane(kafka) == extract_lane(amqp) == "feature-k"
    assert extract_lane([(b"baggage", b"a=1, lane=feature-q;p")]) == "feature-q"
    assert extract_lane([("x-lane", None), ("x-lane", b"\xff"), ("baggage", "lane=ok")]) == "ok"
    assert extract_lane({"x-lane": "UPPER"}) is None
    assert inject_lane([("k", b"v")]) == [("k", b"v")]  # no lane: untouched
    with pytest.raises(ValueError):
        inject_lane({}, "Not Valid")


def test_instrument_is_idempotent(tracer_provider, monkeypatch):
    from aiohttp import web

    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    before = tracer_provider._active_span_processor._span_processors
    lanes_sdk.instrument()
    try:
        lanes_sdk.instrument()
        app = web.Application()
        assert list(app.middlewares).count(lanes_sdk.lane_middleware) == 1
        processors = tracer_provider._active_span_processor._span_processors
        assert sum(isinstance(p, lanes_sdk.LaneSpanProcessor) for p in processors) == 1
        assert len(processors) - len(before) <= 1
        with use_lane("feature-i"):
            out: dict[str, str] = {}
            inject(out)
        assert out["x-lane"] == "feature-i" and out["baggage"] == "lane=feature-i"
    finally:
        lanes_sdk.uninstrument()
    assert lanes_sdk.lane_middleware not in web.Application().middlewares
    with use_lane("feature-i"):
        out = {}
        inject(out)
    assert "x-lane" not in out  # the default textmap is back


def test_instrument_adds_lane_to_a_chosen_otel_propagators_and_says_so(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext")
    textmap = get_global_textmap()
    lanes_sdk.instrument()
    try:
        assert get_global_textmap() is not textmap
        assert "has no 'lane'" in caplog.text and "tracecontext,baggage,lane" in caplog.text
    finally:
        lanes_sdk.uninstrument()
    assert get_global_textmap() is textmap


def test_propagator_settings(monkeypatch):
    assert LanePropagator().fields == {"x-lane"}
    monkeypatch.setenv("LANES_HEADER", "X-Team-Lane")
    monkeypatch.setenv("LANES_BAGGAGE_KEY", "team.lane")
    prop = LanePropagator()
    assert prop.fields == {"x-team-lane"}
    ctx = prop.extract({"baggage": "lane=no,team.lane=feature-z"}, Context())
    assert baggage.get_all(ctx) == {"team.lane": "feature-z"}
    out: dict[str, str] = {}
    prop.inject(out, ctx)
    assert out == {"x-team-lane": "feature-z"}
    assert LanePropagator(header="x-a", baggage_key="k").fields == {"x-a"}
    for bad in ({"header": "x lane"}, {"header": ""}, {"baggage_key": "a,b"}):
        with pytest.raises(ValueError):
            LanePropagator(**bad)


def test_extract_survives_a_broken_getter():
    class Broken:
        def get(self, carrier, key):
            raise RuntimeError("boom")

        def keys(self, carrier):
            return []

    ctx = baggage.set_baggage("lane", "Bad Value", Context())
    out = LanePropagator().extract({}, ctx, getter=Broken())
    assert baggage.get_all(out) == {}  # invalid held value dropped, nothing raised


def test_inject_checks_every_value_but_the_one_extract_checked():
    """inject() skips the check only for the very str object extract() left as the lane."""
    prop = LanePropagator()
    ctx = prop.extract({"x-lane": "feature-a", "baggage": "lane=feature-a"}, Context())
    out: dict[str, str] = {}
    prop.inject(out, ctx)
    assert out == {"x-lane": "feature-a"}

    class Liar(str):  # equal to every lane: must never be trusted as one
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    for held, alone in (("Bad Value", {}), (Liar("a b"), {}), ("b;ttl=5", {"x-lane": "b"})):
        ctx = baggage.set_baggage("lane", held, Context())
        out = {}
        prop.inject(out, prop.extract({"x-lane": "feature-a"}, ctx))
        assert out == {"x-lane": "feature-a"}, held
        out = {}
        prop.inject(out, ctx)  # not from extract: checked, properties stripped
        assert out == alone, held
    out = {}
    prop.inject(out, Context())
    assert out == {}


def test_otel_propagators_entry_point_loads():
    code = (
        "from opentelemetry.propagate import get_global_textmap as g\n"
        "print(','.join(type(p).__name__ for p in g()._propagators))"
    )
    env = {"OTEL_PROPAGATORS": "tracecontext,baggage,lane", "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "TraceContextTextMapPropagator,W3CBaggagePropagator,LanePropagator"
    )
