"""One hop of a 3-hop chain in a real stack, set up as README's "your stack" table says.

``python stack_service.py STACK`` with STACK ``fastapi`` (uvicorn + httpx), ``flask`` (waitress +
requests), ``aiohttp`` (``from aiohttp.web import ...`` style) or ``grpc`` (``grpc.aio`` unary).
With ``HOP_PROGRAMMATIC=1`` the service calls ``lanes_sdk.instrument()`` first (and adds the
stack's lane middleware); without it the code knows nothing about lanes and is meant to run
under ``opentelemetry-instrument``.

HTTP: ``GET /hop?next=URL&next=URL`` calls the first URL with the rest as its ``next`` list;
gRPC: method ``/hop.Hop/Call`` with a JSON ``{"next": [...]}`` body. Each answers what it saw:
the lane, the raw ``x-lane``, ``baggage`` and ``traceparent`` values, and the next hop's answer.
FastAPI also has ``/background`` (tasks, threads, executors). Prints ``PORT <n>`` once it
listens on 127.0.0.1 (kernel-chosen port). No ``from __future__ import annotations``: FastAPI
reads the handlers' annotations, which name classes imported inside the functions.
"""

import asyncio
import json
import os
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

STACK = sys.argv[1]
PROGRAMMATIC = os.environ.get("HOP_PROGRAMMATIC") == "1"

if PROGRAMMATIC:
    import lanes_sdk

    lanes_sdk.instrument()  # first: frameworks imported below are instrumented on import

from opentelemetry import baggage  # noqa: E402


def lane() -> str | None:
    value = baggage.get_baggage("lane")
    return value if isinstance(value, str) else None


def report(x_lane: list[str], bags: list[str], traceparent: str | None) -> dict[str, Any]:
    return {"lane": lane(), "x_lane": x_lane, "baggage": bags, "traceparent": traceparent}


def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    return sock


def run_fastapi() -> None:
    from contextlib import asynccontextmanager

    import httpx
    import uvicorn
    from fastapi import BackgroundTasks, FastAPI, Request

    clients: dict[str, httpx.AsyncClient] = {}
    later: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        if PROGRAMMATIC:  # README: run_in_executor(None, ...) keeps the lane
            asyncio.get_running_loop().set_default_executor(lanes_sdk.LaneExecutor())
        clients["c"] = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=400))
        yield
        await clients["c"].aclose()

    app = FastAPI(lifespan=lifespan)
    if PROGRAMMATIC:
        app.add_middleware(lanes_sdk.LaneASGIMiddleware)

    @app.get("/hop")
    async def hop(request: Request) -> dict[str, Any]:
        nexts = request.query_params.getlist("next")
        seen = report(
            request.headers.getlist("x-lane"),
            request.headers.getlist("baggage"),
            request.headers.get("traceparent"),
        )
        if nexts:
            params = [("next", url) for url in nexts[1:]]
            resp = await clients["c"].get(nexts[0], params=params)
            seen["next"] = resp.json()
        return seen

    @app.get("/background")
    async def background(tasks: BackgroundTasks, key: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()

        async def in_task() -> str | None:
            return lane()

        done = later.setdefault(key, asyncio.Event())

        async def in_background() -> None:  # runs after the response is sent
            later[key + ".lane"] = lane()
            done.set()

        tasks.add_task(in_background)
        with ThreadPoolExecutor(1) as plain:
            return {
                "task": await asyncio.create_task(in_task()),
                "to_thread": await asyncio.to_thread(lane),
                "default_executor": await loop.run_in_executor(None, lane),
                "plain_executor": await loop.run_in_executor(plain, lane),
            }

    @app.get("/later")
    async def get_later(key: str) -> dict[str, Any]:
        await asyncio.wait_for(later.setdefault(key, asyncio.Event()).wait(), 30)
        return {"lane": later[key + ".lane"]}

    sock = listening()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    asyncio.run(server.serve(sockets=[sock]))


def run_flask() -> None:
    import flask
    import requests
    from waitress import create_server

    app = flask.Flask("hop")
    if PROGRAMMATIC:
        app.wsgi_app = lanes_sdk.LaneWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    local = threading.local()

    @app.get("/hop")
    def hop() -> dict[str, Any]:
        req = flask.request
        nexts = req.args.getlist("next")
        seen = report(
            [req.headers["x-lane"]] if "x-lane" in req.headers else [],
            [req.headers["baggage"]] if "baggage" in req.headers else [],
            req.headers.get("traceparent"),
        )
        if nexts:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            params = [("next", url) for url in nexts[1:]]
            seen["next"] = local.session.get(nexts[0], params=params, timeout=30).json()
        return seen

    server = create_server(app, sockets=[listening()], threads=32, connection_limit=1000)
    server.run()


def run_aiohttp() -> None:
    from aiohttp import ClientSession
    from aiohttp.web import Application, AppRunner, Request, Response, SockSite, json_response

    sessions: dict[str, ClientSession] = {}

    async def hop(request: Request) -> Response:
        nexts = request.query.getall("next", [])
        seen = report(
            request.headers.getall("x-lane", []),
            request.headers.getall("baggage", []),
            request.headers.get("traceparent"),
        )
        if nexts:
            params = [("next", url) for url in nexts[1:]]
            async with sessions["c"].get(nexts[0], params=params) as resp:
                seen["next"] = await resp.json()
        return json_response(seen)

    async def main() -> None:
        sessions["c"] = ClientSession()
        app = Application()
        app.router.add_get("/hop", hop)
        runner = AppRunner(app)
        await runner.setup()
        await SockSite(runner, listening()).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def run_grpc() -> None:
    import grpc

    channels: dict[str, grpc.aio.Channel] = {}

    async def call(body: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        metadata = list(context.invocation_metadata() or ())
        values = {
            name: [str(v) for k, v in metadata if k == name]
            for name in ("x-lane", "baggage", "traceparent")
        }
        seen = report(values["x-lane"], values["baggage"], next(iter(values["traceparent"]), None))
        nexts = json.loads(body)["next"]
        if nexts:
            if nexts[0] not in channels:
                channels[nexts[0]] = grpc.aio.insecure_channel(nexts[0])
            method = channels[nexts[0]].unary_unary("/hop.Hop/Call")
            seen["next"] = json.loads(await method(json.dumps({"next": nexts[1:]}).encode()))
        return json.dumps(seen).encode()

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(call)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("hop.Hop", {"Call": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"PORT {port}", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


if __name__ == "__main__":
    {"fastapi": run_fastapi, "flask": run_flask, "aiohttp": run_aiohttp, "grpc": run_grpc}[STACK]()
