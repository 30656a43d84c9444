"""Set-ups the README does not spell out: the lane holds or the service is told, never silence.

Order-proof propagation (``lane`` anywhere in ``OTEL_PROPAGATORS`` or a programmatic composite),
a WARNING naming the fix for each gap ``instrument()`` cannot close, a start-up failure for a
propagator set-up that cannot carry the lane, and ``-W error`` never breaking a service.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagate import extract, get_global_textmap, inject, set_global_textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import lanes_sdk
from lanes_sdk import LaneConfigError, LanePropagator, current_lane

INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")
_BY_NAME = {
    "tracecontext": TraceContextTextMapPropagator,
    "baggage": W3CBaggagePropagator,
    "lane": LanePropagator,
}


def _hop(headers: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    ctx = extract(headers, Context())
    out: dict[str, str] = {}
    inject(out, ctx)
    return current_lane(ctx), out


@pytest.fixture
def textmap_restored():
    before = get_global_textmap()
    yield
    lanes_sdk.uninstrument()
    set_global_textmap(before)


@pytest.mark.usefixtures("textmap_restored")
@pytest.mark.parametrize(
    "order",
    [
        "tracecontext,baggage,lane",
        "lane,tracecontext,baggage",
        "tracecontext,lane,baggage",
        "baggage,lane",
        "tracecontext,baggage",
        "lane",
    ],
)
def test_any_propagator_order_keeps_the_contract(order, monkeypatch, caplog):
    monkeypatch.setenv("OTEL_PROPAGATORS", order)
    set_global_textmap(CompositePropagator([_BY_NAME[n]() for n in order.split(",")]))
    with caplog.at_level(logging.WARNING, "lanes"):
        lanes_sdk.instrument()
    warned = [r for r in caplog.records if "OTEL_PROPAGATORS=" in r.getMessage()]
    # One logger prefix for every process (docs/design.md): the SDK logs as lanes.sdk.
    assert {r.name for r in warned} <= {"lanes.sdk"}, [r.name for r in warned]
    assert len(warned) == (0 if order.endswith(",lane") or order == "lane" else 1), caplog.text
    # A valid x-lane wins over a disagreeing baggage member, and the baggage follows it.
    lane, out = _hop({"x-lane": "feature-a", "baggage": "lane=feature-b,user=42"})
    assert lane == "feature-a" and out["x-lane"] == "feature-a"
    if "baggage" in order:
        assert out["baggage"].split(",")[0] == "lane=feature-a"
    # Baggage only, with properties: forwarded as the bare name, never percent-encoded.
    lane, out = _hop({"baggage": "user=42,lane=feature-b;ttl=60"})
    assert lane == "feature-b" and out["x-lane"] == "feature-b"
    if "baggage" in order:
        assert sorted(out["baggage"].split(",")) == ["lane=feature-b", "user=42"]
    # Two x-lane lines joined by WSGI/CGI: the first valid one.
    assert _hop({"x-lane": "Bad,feature-c, feature-d"})[0] == "feature-c"


@pytest.mark.usefixtures("textmap_restored")
def test_nested_programmatic_composite_is_reordered(monkeypatch, caplog):
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    inner = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    set_global_textmap(CompositePropagator([LanePropagator(), inner]))
    lanes_sdk.instrument()
    assert "the global propagator puts 'lane' before" in caplog.text
    assert _hop({"x-lane": "feature-a", "baggage": "lane=feature-b"})[1] == {
        "x-lane": "feature-a",
        "baggage": "lane=feature-a",
    }


class _Clobber(TextMapPropagator):
    """A propagator that rewrites the baggage header on inject: no order can fix it."""

    def extract(self, carrier, context=None, getter=None):  # type: ignore[override]
        return context if context is not None else Context()

    def inject(self, carrier, context=None, setter=None):  # type: ignore[override]
        carrier["baggage"] = "lane=elsewhere"

    @property
    def fields(self):
        return {"baggage"}


@pytest.mark.usefixtures("textmap_restored")
def test_a_setup_that_cannot_hold_fails_at_start_up(monkeypatch):
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    broken = CompositePropagator([W3CBaggagePropagator(), _Clobber(), LanePropagator()])
    set_global_textmap(broken)
    with pytest.raises(LaneConfigError, match="forwarded baggage"):
        lanes_sdk.instrument()
    assert get_global_textmap() is broken  # nothing half-done left behind


@pytest.mark.usefixtures("textmap_restored")
def test_instrument_turns_on_the_client_instrumentations_it_finds(monkeypatch):
    import httpx  # noqa: F401  imported before instrument(): covered now
    import requests  # noqa: F401
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    monkeypatch.delenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", raising=False)
    was = HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    lanes_sdk.instrument()
    assert HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    assert RequestsInstrumentor().is_instrumented_by_opentelemetry
    lanes_sdk.uninstrument()
    assert HTTPXClientInstrumentor().is_instrumented_by_opentelemetry == was


@pytest.mark.usefixtures("textmap_restored")
def test_a_disabled_or_missing_instrumentation_is_a_warning(monkeypatch, caplog):
    import httpx  # noqa: F401
    import requests  # noqa: F401

    from lanes_sdk import _stacks

    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "requests")
    # As if opentelemetry-instrumentation-httpx were not installed.
    installed = {k: v for k, v in _stacks._installed().items() if k != "httpx"}
    monkeypatch.setattr(_stacks, "_installed", lambda: installed)
    lanes_sdk.instrument()
    text = caplog.text
    assert (
        "requests client is imported but its OpenTelemetry instrumentation 'requests' is "
        "disabled" in text
    )
    assert "httpx client is imported but no OpenTelemetry instrumentation covers it" in text
    assert (
        "pip install traffic-lanes[fastapi] or opentelemetry-instrumentation-httpx==0.66b1" in text
    )


def _python(code: str, *args: str, auto: bool = False, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANES_"))}
    full.update(
        OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none"
    )
    full.update(env)
    cmd = [sys.executable, *args, "-c", code]
    if auto:
        cmd = [str(INSTRUMENT), *cmd]
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=60)


def test_instrument_under_warnings_as_errors_and_lazy_frameworks():
    code = (
        "import sys, lanes_sdk\n"
        "lanes_sdk.instrument()\n"
        "assert 'aiohttp' not in sys.modules, 'instrument() imported aiohttp'\n"
        "import flask, requests\n"
        "from opentelemetry.instrumentation.flask import FlaskInstrumentor\n"
        "assert FlaskInstrumentor().is_instrumented_by_opentelemetry\n"
        "from aiohttp.web import Application\n"  # imported after: the patched class
        "assert lanes_sdk.lane_middleware in Application().middlewares\n"
        "from fastapi import FastAPI\n"
        "assert FastAPI.__name__ == '_InstrumentedFastAPI', FastAPI\n"
        "print('ok')\n"
    )
    out = _python(code, "-W", "error")
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr
    assert "WARNING" not in out.stderr and "lanes:" not in out.stderr, out.stderr


def test_a_class_bound_before_instrument_is_a_warning():
    code = (
        "from aiohttp.web import Application\n"
        "import lanes_sdk\n"
        "lanes_sdk.instrument()\n"
        "assert lanes_sdk.lane_middleware not in Application().middlewares\n"
    )
    out = _python(code, "-W", "error")
    assert out.returncode == 0, out.stderr
    assert "module __main__ bound aiohttp.web.Application before lanes_sdk.instrument()" in (
        out.stderr
    )


def test_zero_code_lane_first_and_a_disabled_client_are_warned():
    code = (
        "import httpx\n"
        "from opentelemetry.context import Context\n"
        "from opentelemetry.propagate import extract, inject\n"
        "ctx = extract({'x-lane': 'feature-a', 'baggage': 'lane=feature-b;ttl=6'}, Context())\n"
        "out = {}\n"
        "inject(out, ctx)\n"
        "print(out['x-lane'], out['baggage'])\n"
    )
    out = _python(
        code,
        auto=True,
        OTEL_PROPAGATORS="lane,tracecontext,baggage",
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="httpx",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "feature-a lane=feature-a\n"
    assert "OTEL_PROPAGATORS=lane,tracecontext,baggage puts 'lane' before" in out.stderr
    assert (
        "httpx client is imported but its OpenTelemetry instrumentation 'httpx' is "
        "disabled" in out.stderr
    )
