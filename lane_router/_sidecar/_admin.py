"""The admin server (aiohttp, its own port): health, readiness, metrics and the live table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from lane_router._sidecar._config import format_hostport

if TYPE_CHECKING:
    from lane_router._sidecar._server import Sidecar

__all__ = ["start_admin"]


async def start_admin(sidecar: Sidecar, host: str, port: int) -> tuple[Any, str]:
    """Start the admin app; returns (runner, "host:port" actually bound)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready = sidecar.ready
        body = {
            "ready": ready,
            "draining": sidecar.draining,
            "listen": sidecar.listen_addrs,
            "admin": sidecar.admin_addr,
            "generation": sidecar.table.generation,
        }
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        text = sidecar.metrics.render(
            open_connections=len(sidecar.connections),
            generation=sidecar.table.generation,
            ready=sidecar.ready,
        )
        return web.Response(
            text=text,
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Prometheus-Format": "0.0.4"},
        )

    async def routes(_: web.Request) -> web.Response:
        return web.json_response(sidecar.table.to_json(sidecar.loop.time()))

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/routes", routes)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    addr = runner.addresses[0] if runner.addresses else (host, port)
    return runner, format_hostport(addr[0], addr[1])
