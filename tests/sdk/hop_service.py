"""A plain aiohttp service with no lane code at all, run by test_sdk_auto.py under
``opentelemetry-instrument``. ``GET /hop?next=URL&next=URL`` calls the first URL with the rest
as its ``next`` list, and answers what it saw: the raw headers and OpenTelemetry baggage.

Prints ``PORT <n>`` once it listens on 127.0.0.1 (kernel-chosen port); stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from opentelemetry import baggage

SESSION = web.AppKey("session", aiohttp.ClientSession)


async def hop(request: web.Request) -> web.Response:
    nexts = request.query.getall("next", [])
    seen: dict[str, object] = {
        "baggage_lane": baggage.get_baggage("lane"),
        "x_lane": request.headers.getall("x-lane", []),
        "baggage": request.headers.getall("baggage", []),
        "traceparent": request.headers.get("traceparent"),
    }
    if nexts:
        params = [("next", url) for url in nexts[1:]]
        async with request.app[SESSION].get(nexts[0], params=params) as resp:
            seen["next"] = await resp.json()
    return web.json_response(seen)


async def session(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = aiohttp.ClientSession()
    yield
    await app[SESSION].close()


async def main() -> None:
    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_get("/hop", hop)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
