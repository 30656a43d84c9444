"""One version of one service: an ordinary aiohttp app that knows nothing about lanes.

It calls its downstream services through the data plane (by service name only) and answers
with the hops that served the request: its own and whatever its downstream calls returned.
Whether the lane survives every hop is entirely the SDK's and the data plane's job, which is
exactly what the harness checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web

__all__ = ["Downstream", "version_app"]

_MAX_DELAY_MS = 5_000.0


class Downstream:
    """How apps reach other services: the data plane, addressed by service name.

    ``mode="host"`` sends origin-form requests to the data plane with ``Host: <service>``;
    ``mode="fqdn"`` the same with Kubernetes' full name and the service port
    (``Host: reviews.shop.svc.cluster.local:9080``); ``mode="proxy"`` uses the data plane as
    an HTTP proxy (absolute-form targets).
    """

    MODES = ("host", "fqdn", "proxy")

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        address: str,
        mode: str = "host",
        namespace: str = "default",
        port: int = 80,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.session = session
        self.address = address
        self.mode = mode
        self.suffix = f".{namespace}.svc.cluster.local:{port}"

    async def call(self, service: str) -> list[dict[str, Any]]:
        """The hops behind ``service``; a failed call is one hop with no lane and its status."""
        kwargs: dict[str, Any]
        if self.mode == "proxy":
            url, kwargs = f"http://{service}/", {"proxy": f"http://{self.address}"}
        else:
            host = service if self.mode == "host" else service + self.suffix
            url, kwargs = f"http://{self.address}/", {"headers": {"Host": host}}
        try:
            async with self.session.get(url, **kwargs) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return [{"service": service, "lane": None, "status": 0, "error": repr(exc)}]
        if status == 200:
            try:
                hops = json.loads(body)["hops"]
            except (ValueError, KeyError, TypeError):
                hops = None
            if isinstance(hops, list):
                return hops
        error = body[:300].decode("utf-8", "replace")
        return [{"service": service, "lane": None, "status": status, "error": error}]


def version_app(
    *,
    service: str,
    version: str,
    calls: Sequence[Sequence[str]],
    downstream: Downstream,
    latency_ms: float = 0.0,
    middlewares: Sequence[Any] = (),
) -> web.Application:
    """The app for ``service`` deployed as ``version`` (a deployment label, like a pod's).

    ``calls`` are stages run in order; the services of one stage are called concurrently
    (``asyncio.gather``), so a request exercises both a chain and a fan-out. ``latency_ms``
    makes every answer of this version slow (a request is then reliably inside it); a
    ``?delay=<ms>`` query does the same for one request at the entry.
    """
    inflight = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal inflight
        inflight += 1
        try:
            ms = latency_ms
            delay = request.query.get("delay")
            if delay:
                with contextlib.suppress(ValueError):
                    ms += min(max(float(delay), 0.0), _MAX_DELAY_MS)
            if ms > 0:
                await asyncio.sleep(ms / 1000)
            hops: list[dict[str, Any]] = [{"service": service, "lane": version, "status": 200}]
            for stage in calls:
                for result in await asyncio.gather(*(downstream.call(s) for s in stage)):
                    hops.extend(result)
            return web.json_response({"service": service, "version": version, "hops": hops})
        finally:
            inflight -= 1

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"service": service, "version": version, "inflight": inflight})

    # A list, not a tuple: OTel's server instrumentation inserts its middleware into it.
    app = web.Application(middlewares=list(middlewares))
    app.router.add_get("/_stats", stats)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
