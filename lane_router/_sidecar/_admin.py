"""The admin port: /healthz, /readyz, /metrics (Prometheus text) and /routes (the live table).

Two servers answer the same :func:`admin_response`: a small one on the sidecar's own
httptools machinery (the default: importing aiohttp alone costs a sidecar ~10 MB of private
memory, more than half of Envoy's whole footprint), and an aiohttp one (``--admin-server
aiohttp``). Admin answers are small and rare, so each connection is closed after its answer.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from httptools import HttpParserError, HttpRequestParser

from lane_router._sidecar._config import format_hostport
from lane_router._sidecar._http import reason_phrase
from lane_router._sidecar._ports import AdminView

__all__ = ["admin_response", "start_admin"]

_JSON = "application/json"
_PROM = "text/plain; version=0.0.4; charset=utf-8"
_MAX_HEAD = 16384
_TIMEOUT = 10.0


def _json(status: int, doc: Any) -> tuple[int, str, bytes]:
    return status, _JSON, json.dumps(doc, indent=1, sort_keys=False).encode() + b"\n"


def admin_response(sidecar: AdminView, method: str, path: str) -> tuple[int, str, bytes]:
    """(status, content type, body) for one admin request."""
    path = path.split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return _json(405, {"status": 405, "reason": "method not allowed"})
    if path == "/healthz":
        return _json(200, {"status": "ok"})
    if path == "/readyz":
        ready = sidecar.ready
        return _json(
            200 if ready else 503,
            {
                "ready": ready,
                "draining": sidecar.draining,
                "listen": sidecar.listen_addrs,
                "admin": sidecar.admin_addr,
                "generation": sidecar.table.generation,
            },
        )
    if path == "/metrics":
        text = sidecar.metrics.render(
            open_connections=len(sidecar.connections),
            generation=sidecar.table.generation,
            ready=sidecar.ready,
            routes=sidecar.table.route_info(),
        )
        if sidecar.edge is not None:
            text += sidecar.edge.metrics()
        return 200, _PROM, text.encode()
    if path == "/routes":
        return _json(200, sidecar.table.to_json(sidecar.loop.time()))
    return _json(
        404,
        {
            "status": 404,
            "reason": "not found",
            "paths": ["/healthz", "/readyz", "/metrics", "/routes"],
        },
    )


def _encode(status: int, ctype: str, body: bytes, head_only: bool) -> bytes:
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (
            status,
            reason_phrase(status),
            ctype.encode(),
            len(body),
        )
    )
    return head if head_only else head + body


class _AdminConnection(asyncio.Protocol):
    def __init__(self, sidecar: AdminView) -> None:
        self.sidecar = sidecar
        self.parser = HttpRequestParser(self)
        self.transport: Any = None
        self.timer: Any = None
        self.url = b""
        self.seen = 0
        self.done = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # A client that never finishes its request is cut (the data path has its own sweep).
        self.timer = self.sidecar.loop.call_later(_TIMEOUT, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.seen += len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserError:
            self._answer(*_json(400, {"status": 400, "reason": "bad request"}), False)
            return
        if not self.done and self.seen > _MAX_HEAD:
            self._answer(*_json(431, {"status": 431, "reason": "header too large"}), False)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        if self.done:
            return
        method = self.parser.get_method().decode("ascii", "replace")
        try:
            answer = admin_response(self.sidecar, method, self.url.decode("latin-1"))
        except Exception:
            self.sidecar.metrics.internal_errors += 1
            answer = _json(502, {"status": 502, "reason": "internal"})
        self._answer(*answer, method == "HEAD")

    def _answer(self, status: int, ctype: str, body: bytes, head_only: bool) -> None:
        self.done = True
        self.transport.write(_encode(status, ctype, body, head_only))
        self.transport.close()


class _BuiltinAdmin:
    def __init__(self, server: asyncio.AbstractServer) -> None:
        self.server = server

    async def cleanup(self) -> None:
        self.server.close()


async def start_admin(
    sidecar: AdminView, host: str, port: int, *, server: str = "builtin"
) -> tuple[Any, str]:
    """Start the admin server; returns (an object with ``cleanup()``, "host:port" bound)."""
    if server == "aiohttp":
        return await _start_aiohttp(sidecar, host, port)
    srv = await sidecar.loop.create_server(
        lambda: _AdminConnection(sidecar), host, port, reuse_address=True
    )
    addr = srv.sockets[0].getsockname()
    return _BuiltinAdmin(srv), format_hostport(addr[0], addr[1])


async def _start_aiohttp(sidecar: AdminView, host: str, port: int) -> tuple[Any, str]:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        status, ctype, body = admin_response(sidecar, request.method, request.path_qs)
        return web.Response(status=status, body=body, headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    addr = runner.addresses[0] if runner.addresses else (host, port)
    return runner, format_hostport(addr[0], addr[1])
