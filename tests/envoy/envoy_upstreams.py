"""Real aiohttp upstreams on loopback that say which (service, lane) version answered.

The fleet runs its servers on its own event loop in a background thread, so a module-scoped
fixture can own it while each test uses its own loop, and a test can stop one version (close its
server: listening socket and keep-alive connections) while load is running.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

__all__ = ["Fleet"]


class Fleet:
    """Upstream servers, one per (service, lane, index). Close with :meth:`close`, or use
    ``with Fleet() as fleet:``."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runners: dict[tuple[str, str, int], web.AppRunner] = {}

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(
        self, service: str, lane: str, *, index: int = 0, host: str = "127.0.0.1", port: int = 0
    ) -> str:
        """Start one version's server (port 0: ephemeral); returns its ``host:port`` endpoint."""
        return self._run(self._start(service, lane, index, host, port))

    async def astart(
        self, service: str, lane: str, *, index: int = 0, host: str = "127.0.0.1", port: int = 0
    ) -> str:
        """:meth:`start` for a caller running its own event loop."""
        fut = asyncio.run_coroutine_threadsafe(
            self._start(service, lane, index, host, port), self._loop
        )
        return await asyncio.wrap_future(fut)

    async def _start(self, service: str, lane: str, index: int, host: str, port: int) -> str:
        async def answer(request: web.Request) -> web.Response:
            body = await request.read()
            return web.json_response(
                {
                    "service": service,
                    "lane": lane,
                    "index": index,
                    "method": request.method,
                    "path": request.path_qs,
                    "version": f"{request.version.major}.{request.version.minor}",
                    "x-lane": request.headers.getall("x-lane", []),
                    "lane_headers": {
                        k.lower(): request.headers.getall(k)
                        for k in sorted(set(request.headers))
                        if "lane" in k.lower()
                    },
                    "baggage": request.headers.getall("baggage", []),
                    "cookie": request.headers.getall("cookie", []),
                    "body_bytes": len(body),
                }
            )

        async def websocket(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:  # echo each text message, tagged with this version
                await ws.send_str(f"{service}/{lane}: {message.data}")
            return ws

        app = web.Application()
        app.router.add_get("/ws", websocket)
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=5,
            # Envoy forwards headers up to 60 KB; aiohttp's own limit is 8 KB per field.
            max_field_size=65536,
            max_line_size=65536,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        port = runner.addresses[0][1]
        self._runners[(service, lane, index)] = runner
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def stop(self, service: str, lane: str, *, index: int = 0) -> None:
        """Stop one version's server: it refuses new connections and closes idle ones."""
        runner = self._runners.pop((service, lane, index))
        self._run(runner.cleanup())

    async def astop(self, service: str, lane: str, *, index: int = 0) -> None:
        """:meth:`stop` for a caller running its own event loop (keeps that loop serving)."""
        runner = self._runners.pop((service, lane, index))
        fut = asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop)
        await asyncio.wrap_future(fut)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for key in list(self._runners):
            self.stop(*key[:2], index=key[2])
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
