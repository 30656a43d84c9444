"""What the lane Lua filter costs Envoy: CPU microseconds per request, with and without it.

Usage: ``.venv/bin/python bench/bench_envoy_lua.py [--requests N] [--concurrency N]``

Two Envoys (``--concurrency 1``) from the same rendered bootstrap, one with the Lua filter
removed, proxy the same load to one loopback upstream. The figure is Envoy's own CPU time
(utime + stime from /proc) divided by the requests it served, so the Python load generator and
upstream do not count. Three request shapes: ``x-lane`` already valid (the Lua fast path: no
header change, no route-cache clear), baggage only (scan + promote + clear), and no lane.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import sys
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from envoyproc import running_envoy

from lane_router import topology_from_dict
from lane_router.render.envoy import render_envoy

SHAPES = {
    "x-lane": {"x-lane": "feature-a"},
    "baggage": {"baggage": "userid=42,session=abc,lane=feature-a;ttl=60"},
    "none": {},
}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _upstream() -> tuple[web.AppRunner, int]:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def _load(url: str, headers: dict[str, str], n: int, concurrency: int) -> None:
    async with aiohttp.ClientSession() as session:
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.get(url, headers={"host": "bench", **headers}) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    runner, port = await _upstream()
    topo = topology_from_dict(
        {
            "lanes": {"feature-a": {}},
            "services": {
                "bench": {
                    "versions": {
                        "baseline": [f"127.0.0.1:{port}"],
                        "feature-a": [f"127.0.0.1:{port}"],
                    }
                }
            },
        }
    )
    with_lua = render_envoy(topo, listen="127.0.0.1:0", admin="127.0.0.1:0")
    without_lua = copy.deepcopy(with_lua)
    hcm = without_lua["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hcm["typed_config"]["http_filters"].pop(0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, bootstrap in (("with Lua", with_lua), ("without Lua", without_lua)):
                with running_envoy(bootstrap, workdir=Path(tmp)) as proxy:
                    url = proxy.url("/")
                    await _load(url, {}, 2_000, args.concurrency)  # warm up
                    for shape, headers in SHAPES.items():
                        before = _cpu_seconds(proxy.pid)
                        await _load(url, headers, args.requests, args.concurrency)
                        used = _cpu_seconds(proxy.pid) - before
                        print(f"{name:12s} {shape:8s} {used / args.requests * 1e6:6.1f} CPU us/req")
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
