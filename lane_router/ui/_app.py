"""The ``lanes ui`` web app: three pages, each rendered in the browser from its JSON endpoint.

Everything is served from the package (``static/``): no build step, no CDN, and a
Content-Security-Policy that lets the pages load nothing from anywhere else.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from lane_router import Topology, TopologyError, load_topology
from lane_router.ui._cluster import View
from lane_router.ui._figures import Figures, FigureSource
from lane_router.ui._views import canary_view, graph_view, map_view

__all__ = ["STATIC", "UiConfig", "make_app", "run_forever", "serve_ui"]

log = logging.getLogger("lanes.ui")
STATIC = Path(__file__).with_name("static")
_PAGES = {"/": "map.html", "/graph": "graph.html", "/canary": "canary.html"}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(eq=False)
class UiConfig:
    """What the app shows: a topology (a file, re-read when it changes, or a callable giving the
    current one or a :class:`View`, e.g. the controller's view: :class:`ModelView`), where the
    figures come from, how often pages refresh, and an optional tracing UI link template with
    ``{lane}``/``{service}``."""

    topology: Path | Callable[[], Topology | View]
    source: FigureSource
    refresh: float = 5.0
    tracing: str | None = None
    _cached: tuple[float, Topology] | None = field(default=None, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    def current_topology(self) -> Topology:
        """The file's topology, re-read when its mtime changes; a bad new file keeps the old one
        (with a WARNING naming the error), as the sidecar does."""
        if callable(self.topology):
            got = self.topology()
            return got.topology if isinstance(got, View) else got
        path = self.topology
        try:
            mtime = os.stat(path).st_mtime
            if self._cached is not None and self._cached[0] == mtime:
                return self._cached[1]
            topo = load_topology(path)
        except (TopologyError, OSError) as exc:
            if self._cached is None:
                raise
            log.warning("lanes ui: %s; fix the file, the previous topology stays shown", exc)
            return self._cached[1]
        self._cached = (mtime, topo)
        return topo

    async def current(self) -> View:
        """The topology (and lane expiries) now; a callable runs in a thread, since reading a
        cluster blocks."""
        if callable(self.topology):
            got = await asyncio.to_thread(self.topology)
            return got if isinstance(got, View) else View(got)
        return View(self.current_topology())

    async def figures(self) -> Figures:
        assert self._session is not None
        return await self.source.figures(self._session)


_FIGURES = web.AppKey("lanes_ui", UiConfig)


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    resp = await handler(request)
    resp.headers.setdefault("Content-Security-Policy", _CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def _page(name: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / name, headers={"Content-Type": "text/html"})

    return handler


@web.middleware
async def _topology_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """No topology to show (the file is gone or was never valid): a JSON 503 naming why."""
    try:
        return await handler(request)
    except (TopologyError, OSError) as exc:
        return web.json_response({"error": f"no topology: {exc}"}, status=503)


async def _api_map(request: web.Request) -> web.Response:
    cfg = request.app[_FIGURES]
    view = await cfg.current()
    figs = await cfg.figures()
    return web.json_response(
        map_view(
            view.topology, figs, refresh=cfg.refresh, tracing=cfg.tracing, expires=view.expires
        )
    )


async def _api_graph(request: web.Request) -> web.Response:
    cfg = request.app[_FIGURES]
    topo = (await cfg.current()).topology
    lane = request.query.get("lane", topo.baseline)
    if lane not in topo.all_lanes:
        return web.json_response(
            {"error": "no such lane", "lanes": list(topo.all_lanes)}, status=404
        )
    figs = await cfg.figures()
    return web.json_response(graph_view(topo, figs, lane, refresh=cfg.refresh, tracing=cfg.tracing))


async def _api_canary(request: web.Request) -> web.Response:
    cfg = request.app[_FIGURES]
    topo = (await cfg.current()).topology
    figs = await cfg.figures()
    return web.json_response(canary_view(topo, figs, refresh=cfg.refresh))


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(config: UiConfig) -> web.Application:
    """The aiohttp application; it owns one client session for its scrapes and queries."""
    app = web.Application(middlewares=[_headers, _topology_errors], client_max_size=4096)
    app[_FIGURES] = config

    async def session_ctx(app: web.Application) -> Any:
        config._session = aiohttp.ClientSession()
        yield
        await config._session.close()
        config._session = None

    app.cleanup_ctx.append(session_ctx)
    for path, name in _PAGES.items():
        app.router.add_get(path, _page(name))
    app.router.add_get("/api/map", _api_map)
    app.router.add_get("/api/graph", _api_graph)
    app.router.add_get("/api/canary", _api_canary)
    app.router.add_get("/healthz", _healthz)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app


async def serve_ui(config: UiConfig, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Start the app on ``host:port`` (0 picks a port); returns the runner and its base URL."""
    runner = web.AppRunner(make_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound}/"


async def run_forever(config: UiConfig, host: str, port: int) -> None:  # pragma: no cover
    runner, url = await serve_ui(config, host, port)
    print(f"lanes ui: serving {url} (figures from {config.source.origin})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
