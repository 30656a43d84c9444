"""The lane across real stacks, each a 3-hop chain of real servers on loopback set up as the
README's "your stack" table says: FastAPI on uvicorn + httpx (zero-code and programmatic), Flask
on waitress + requests (programmatic and zero-code), aiohttp in the ``from aiohttp.web import``
style (programmatic; the ``web.Application`` style and zero-code are test_sdk_chain/auto), and
``grpc.aio`` unary with the OpenTelemetry gRPC instrumentation (zero-code and programmatic).

Each chain: lane by ``x-lane`` only, by baggage only (other members, properties), both
disagreeing, untagged; then 200 concurrent requests over 10 lanes with 0 bleed. The test client
(``http.client``, raw gRPC) is never instrumented: it sends exactly the headers given.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

SERVICE = Path(__file__).with_name("stack_service.py")
INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"

# (stack, programmatic?)
CHAINS = [
    ("fastapi", False),
    ("fastapi", True),
    ("flask", True),
    ("flask", False),
    ("aiohttp", True),
    ("grpc", False),
    ("grpc", True),
]


class Chain:
    def __init__(self, stack: str, programmatic: bool, targets: list[str]) -> None:
        self.stack = stack
        self.programmatic = programmatic
        self.targets = targets  # host:port of A, B, C

    def call(self, headers: dict[str, str], path: str = "/hop") -> list[dict[str, Any]]:
        """Through A -> B -> C; the three hops' reports."""
        if self.stack == "grpc":
            body = asyncio.run(self._grpc([headers]))[0]
        else:
            body = self.get(
                self.targets[0],
                path,
                headers,
                [("next", f"http://{t}/hop") for t in self.targets[1:]],
            )
        hops = []
        while body is not None:
            hops.append(body)
            body = body.get("next")
        return hops

    def get(
        self, target: str, path: str, headers: dict[str, str], query: list[tuple[str, str]]
    ) -> Any:
        host, port = target.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.request("GET", f"{path}?{urlencode(query)}", headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == 200, data
            return json.loads(data)
        finally:
            conn.close()

    async def _grpc(self, many: list[dict[str, str]]) -> list[Any]:
        import grpc

        async with grpc.aio.insecure_channel(self.targets[0]) as channel:
            method = channel.unary_unary("/hop.Hop/Call")
            body = json.dumps({"next": self.targets[1:]}).encode()
            answers = await asyncio.gather(
                *(method(body, metadata=tuple(h.items()), timeout=60) for h in many)
            )
        return [json.loads(a) for a in answers]

    def many(self, headers: list[dict[str, str]]) -> list[list[dict[str, Any]]]:
        """All at once: 200 requests in flight together."""
        if self.stack == "grpc":
            bodies = asyncio.run(self._grpc(headers))
            out = []
            for body in bodies:
                hops = []
                while body is not None:
                    hops.append(body)
                    body = body.get("next")
                out.append(hops)
            return out
        with ThreadPoolExecutor(len(headers)) as pool:
            return list(pool.map(self.call, headers))


def _start(stack: str, programmatic: bool) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANES_", "HOP_"))}
    # Zero-code as the README says; no exporter packages are installed, so none is configured.
    env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    cmd = [sys.executable, str(SERVICE), stack]
    if programmatic:
        env["HOP_PROGRAMMATIC"] = "1"
    else:
        env["OTEL_PROPAGATORS"] = "tracecontext,baggage,lane"
        cmd = [str(INSTRUMENT), *cmd]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(
    scope="module", params=CHAINS, ids=[f"{s}-{'code' if p else 'zero-code'}" for s, p in CHAINS]
)
def chain(request: pytest.FixtureRequest) -> Iterator[Chain]:
    stack, programmatic = request.param
    procs = [_start(stack, programmatic) for _ in range(3)]  # started together
    try:
        targets = []
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith(b"PORT "):
                proc.kill()
                _, err = proc.communicate(timeout=30)
                pytest.fail(
                    f"{stack} service did not start: {line!r}\n{err.decode(errors='replace')}"
                )
            targets.append(f"127.0.0.1:{int(line.split()[1])}")
        yield Chain(stack, programmatic, targets)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                _, err = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            # Set up as the README says, a service logs no lanes warning.
            assert b"lanes:" not in err, err.decode(errors="replace")


def _members(bags: list[str]) -> list[str]:
    return sorted(m.strip() for line in bags for m in line.split(","))


def _check(hops: list[dict[str, Any]], want: str | None, others: list[str]) -> None:
    assert [h["lane"] for h in hops] == [want] * 3, hops
    for h in hops[1:]:
        assert h["x_lane"] == ([] if want is None else [want]), h
        lane_members = [] if want is None else [f"lane={want}"]
        assert len(h["baggage"]) <= 1, h
        assert _members(h["baggage"]) == sorted(lane_members + others), h
        assert h["traceparent"].split("-")[1] == TRACE_ID, h  # one trace end to end


SCENARIOS = [
    ({"x-lane": "feature-a"}, "feature-a", []),
    ({"baggage": "user=42,lane=feature-b;ttl=60"}, "feature-b", ["user=42"]),
    ({"x-lane": "feature-a", "baggage": "lane=feature-b,user=42"}, "feature-a", ["user=42"]),
    ({}, None, []),
]


def test_lane_crosses_three_hops(chain: Chain) -> None:
    for headers, want, others in SCENARIOS:
        _check(chain.call({**headers, "traceparent": TRACEPARENT}), want, others)
    if chain.stack == "fastapi":
        _background(chain)


def test_200_concurrent_requests_over_10_lanes_do_not_bleed(chain: Chain) -> None:
    lanes = [f"lane-{i % 10}" for i in range(200)]
    headers = [
        {"x-lane": lane, "traceparent": TRACEPARENT}
        if i % 2
        else {"baggage": f"lane={lane}", "traceparent": TRACEPARENT}
        for i, lane in enumerate(lanes)
    ]
    results = chain.many(headers)
    bleed = [
        (lane, [h["lane"] for h in hops])
        for lane, hops in zip(lanes, results, strict=True)
        if [h["lane"] for h in hops] != [lane] * 3 or any(h["x_lane"] != [lane] for h in hops[1:])
    ]
    assert bleed == []


def _background(chain: Chain) -> None:
    key = "k1"
    got = chain.get(chain.targets[0], "/background", {"x-lane": "feature-g"}, [("key", key)])
    # create_task and to_thread copy the context; a plain executor does not (documented); the
    # README's lifespan line (LaneExecutor as default executor) fixes run_in_executor(None, ...).
    assert got["task"] == got["to_thread"] == "feature-g"
    assert got["plain_executor"] is None
    assert got["default_executor"] == ("feature-g" if chain.programmatic else None)
    later = chain.get(chain.targets[0], "/later", {}, [("key", key)])
    assert later == {"lane": "feature-g"}  # BackgroundTasks run after the response, in the lane
