"""The chain under ``opentelemetry-instrument``, three real processes whose code knows nothing
about lanes: ``OTEL_PROPAGATORS=tracecontext,baggage,lane`` loads the ``lane`` propagator entry
point, and the ``lanes`` instrumentor entry point installs the lane middleware."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

SERVICE = Path(__file__).with_name("hop_service.py")
INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def _start(log: Path) -> tuple[asyncio.subprocess.Process, str]:
    env = {
        **os.environ,
        "OTEL_PROPAGATORS": "tracecontext,baggage,lane",
        # No exporter packages are installed: without these an SDK distro fails to initialise
        # and nothing gets instrumented.
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    env.pop("LANES_HEADER", None)
    env.pop("LANES_BAGGAGE_KEY", None)
    env.pop("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", None)
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            str(INSTRUMENT),
            sys.executable,
            str(SERVICE),
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env=env,
        )
    return proc, log.name


async def _port(proc: asyncio.subprocess.Process, log: Path) -> int:
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    except TimeoutError:
        line = b""
    if not line.startswith(b"PORT "):
        pytest.fail(f"service did not start: {line!r}\n{log.read_text(errors='replace')}")
    return int(line.split()[1])


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[list[str]]:
    logs = [tmp_path / f"{name}.log" for name in "abc"]
    procs: list[asyncio.subprocess.Process] = []
    try:
        for log in logs:  # started together: the hops are wired per request, not at startup
            procs.append((await _start(log))[0])
        ports = [await _port(proc, log) for proc, log in zip(procs, logs, strict=True)]
        yield [f"http://127.0.0.1:{port}/hop" for port in ports]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _through(urls: list[str], headers: dict[str, str]) -> list[dict]:
    params = [("next", url) for url in urls[1:]]
    async with (
        aiohttp.ClientSession() as caller,
        caller.get(urls[0], params=params, headers=headers) as resp,
    ):
        assert resp.status == 200
        body = await resp.json()
    hops = []
    while body is not None:
        hops.append(body)
        body = body.get("next")
    return hops


async def test_lane_crosses_auto_instrumented_services(services: list[str]):
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    # Baggage only, with properties: B must write x-lane itself and forward the bare name.
    hops = await _through(
        services, {"baggage": "user=42,lane=feature-b;ttl=60", "traceparent": traceparent}
    )
    assert [h["baggage_lane"] for h in hops] == ["feature-b"] * 3
    assert [h["x_lane"] for h in hops[1:]] == [["feature-b"]] * 2
    for h in hops[1:]:
        assert len(h["baggage"]) == 1
        members = sorted(m.strip() for m in h["baggage"][0].split(","))
        assert members == ["lane=feature-b", "user=42"]
        assert h["traceparent"].split("-")[1] == TRACE_ID  # one trace end to end

    # A valid x-lane decides over the baggage member, and the baggage follows it.
    hops = await _through(services, {"x-lane": "feature-a", "baggage": "lane=feature-b"})
    assert [h["baggage_lane"] for h in hops] == ["feature-a"] * 3
    assert hops[2]["x_lane"] == ["feature-a"]
    assert hops[2]["baggage"] == ["lane=feature-a"]

    # Untagged stays untagged.
    hops = await _through(services, {})
    assert [(h["baggage_lane"], h["x_lane"]) for h in hops] == [(None, [])] * 3
