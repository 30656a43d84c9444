"""A mesh worker: a child process hosting some (service, version) apps on loopback.

Run as ``python -m lane_router._demo._worker``. It reads one JSON line from stdin::

    {"dataplane": "127.0.0.1:15001", "mode": "host", "host": "127.0.0.1",
     "versions": [{"service": "reviews", "version": "feature-a", "calls": [["ratings"]],
                   "dataplane": "127.0.0.1:15002"}]}

(a version's own ``dataplane``, when given, is where its calls go: its service's sidecar)

instruments itself with lanes_sdk, starts every app on an ephemeral port, prints one JSON line
``{"ports": [["reviews", "feature-a", 41234], ...]}`` and serves until SIGTERM, SIGINT or the
end of stdin (so it never outlives the harness). Apps live in a child process so that the
harness's own process is never instrumented, and so a version can be killed for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

__all__ = ["main"]


async def _serve(spec: dict[str, Any]) -> None:
    import aiohttp
    from aiohttp import web

    import lanes_sdk
    from lane_router._demo._app import Downstream, version_app

    if spec.get("tracing", True):
        # A real SDK tracer provider (no exporter): spans are recorded and tagged with the lane,
        # as in a traced service, so the harness pays what a user pays.
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        trace.set_tracer_provider(TracerProvider())
    lanes_sdk.instrument()
    middlewares = [lanes_sdk.lane_middleware]  # instrument() adds it too; it is never doubled
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def on_stdin() -> None:
        try:
            data = sys.stdin.buffer.raw.read(4096)  # type: ignore[union-attr]
        except OSError:
            data = b""
        if not data:
            stop.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)

    # One client session shared by every app: it holds no lane, the request context does.
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=30),
    )
    downstreams: dict[str, Downstream] = {}

    def downstream(address: str) -> Downstream:
        """One per data plane address (a version may have a sidecar of its service's own)."""
        if address not in downstreams:
            downstreams[address] = Downstream(
                session,
                address=address,
                mode=spec.get("mode", "host"),
                namespace=spec.get("namespace", "default"),
                port=int(spec.get("port", 80)),
            )
        return downstreams[address]

    runners: list[web.AppRunner] = []
    ports: list[list[Any]] = []
    try:
        for v in spec["versions"]:
            app = version_app(
                service=v["service"],
                version=v["version"],
                calls=v.get("calls", ()),
                downstream=downstream(v.get("dataplane") or spec["dataplane"]),
                latency_ms=float(v.get("latency_ms", 0.0)),
                middlewares=middlewares,
            )
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
            await runner.setup()
            runners.append(runner)
            host = spec.get("host", "127.0.0.1")
            site = web.TCPSite(runner, host, int(v.get("listen_port", 0)), backlog=1024)
            await site.start()
            port = runner.addresses[0][1]
            ports.append([v["service"], v["version"], port])
        sys.stdout.write(json.dumps({"ports": ports}) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        for runner in runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        await session.close()


def main() -> int:
    line = sys.stdin.buffer.readline()
    if not line:
        return 2
    spec = json.loads(line)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(_serve(spec))
    else:
        uvloop.run(_serve(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
