"""``lanes demo``: bookinfo on loopback, QA requests per lane, and what served each hop."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

from lane_router._demo._blueprints import bookinfo
from lane_router._demo._mesh import Mesh
from lane_router._demo._predict import Hop

__all__ = ["EDGE_SCENARIOS", "SCENARIOS", "run_demo"]

# (what a QA engineer did, the headers sent). Each shows one rule of design.md.
SCENARIOS: tuple[tuple[str, Mapping[str, str]], ...] = (
    ("no lane header", {}),
    ("x-lane: feature-a", {"x-lane": "feature-a"}),
    ("x-lane: feature-b  (falls back to a)", {"x-lane": "feature-b"}),
    ("x-lane: hotfix  (strict)", {"x-lane": "hotfix"}),
    ("baggage: lane=feature-b only", {"baggage": "user=42,lane=feature-b;ttl=60"}),
    ("x-lane: Feature-A  (invalid)", {"x-lane": "Feature-A"}),
    ("x-lane: nosuch  (not declared)", {"x-lane": "nosuch"}),
    ("x-lane: BAD!, baggage lane=feature-a", {"x-lane": "BAD!", "baggage": "lane=feature-a"}),
)

# At an edge (docs/design.md, "The edge"): (what a client sent, the token's lane or None, its
# ttl in seconds (negative: expired), other headers). Only a token that verifies picks a lane.
EDGE_SCENARIOS: tuple[tuple[str, str | None, int, Mapping[str, str]], ...] = (
    ("edge: x-lane: feature-a, no token", None, 0, {"x-lane": "feature-a"}),
    ("edge: baggage lane=feature-b, no token", None, 0, {"baggage": "user=42,lane=feature-b"}),
    ("edge: signed token lane=feature-b", "feature-b", 600, {"x-lane": "hotfix"}),
    ("edge: expired token lane=feature-a", "feature-a", -3600, {}),
)


def _cell(hop: Hop | None) -> str:
    if hop is None:
        return "-"
    _, lane, status = hop
    if lane is not None and status == 200:
        return lane
    return f"{status} (strict miss)" if status == 503 else f"error {status}"


def _row(hops: Sequence[Hop], services: Sequence[str]) -> list[str]:
    by_service = {h[0]: h for h in hops}
    return [_cell(by_service.get(s)) for s in services]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for i, r in enumerate((header, *rows)):
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
        if i == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


async def run_demo(
    *, data_plane: str = "sidecar", serve: bool = False, repeat: int = 3, out: TextIO = sys.stdout
) -> int:
    """Run the demo; 0 when every hop of every request is what the routing core predicts.

    SIGINT/SIGTERM stop it at any point, and every process it started is stopped by its PID
    (the children run in their own sessions, so a terminal's Ctrl-C reaches only this one).
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stop = asyncio.Event()

    def on_signal() -> None:
        if serve and not stop.is_set():
            stop.set()
        elif task is not None:
            task.cancel()

    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal)
            handled.append(signum)
        except (ValueError, RuntimeError):  # not the main thread: leave signals alone
            pass
    try:
        return await _demo(data_plane, serve, repeat, out, stop)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _demo(data_plane: str, serve: bool, repeat: int, out: TextIO, stop: asyncio.Event) -> int:
    started = time.monotonic()
    bp = bookinfo()
    out.write(f"Starting bookinfo on 127.0.0.1 with the {data_plane} data plane ...\n")
    out.flush()
    # With the sidecar, each calling service gets a sidecar of its own (--service), so the
    # metrics and `lanes ui`'s call graph say who called whom.
    mesh = await Mesh.start(bp, plane=data_plane, callers=data_plane == "sidecar")
    try:
        topo = mesh.topology
        assert topo is not None
        pids = ", ".join(str(c.pid) for c in mesh.children)
        out.write(
            f"{len(mesh.endpoints)} service versions in worker pid {pids}; "
            f"{data_plane} pid {mesh.plane.child.pid} on {mesh.plane.address} "
            f"(admin {mesh.plane.admin}); ready in {time.monotonic() - started:.1f} s\n"
        )
        if mesh.callers:
            out.write(
                "Calls between services go through a sidecar per calling service (--service): "
                + ", ".join(f"{s} pid {p.child.pid}" for s, p in mesh.callers.items())
                + "\n"
            )
        out.write("\n")
        out.write("Lanes:\n")
        width = max(len(n) for n in topo.lanes)
        for name in topo.lanes:
            walk = " -> ".join(topo.chains[name])
            rule = "strict, no fallback" if topo.lanes[name].strict else f"walk {walk}"
            owned = ", ".join(s for s in topo.services if name in topo.services[s].versions)
            out.write(f"  {name.ljust(width)}  deploys {owned}; {rule}\n")
        out.write("\n")

        services = [h[0] for h in mesh.predict({})]
        rows, failures = [], 0
        for label, headers in SCENARIOS:
            expected = mesh.predict(headers)
            observed = [await mesh.ask(headers) for _ in range(repeat)]
            bad = [o for o in observed if o.hops != expected]
            failures += len(bad)
            verdict = (
                "as predicted" if not bad else f"MISMATCH, expected {_row(expected, services)}"
            )
            rows.append([label, *_row((bad or observed)[0].hops, services), verdict])
        out.write(f"Which version served each hop ({repeat} requests per row, via {data_plane}):\n")
        _table(["request", *services, "routing core"], rows, out)
        out.write("\n")
        edge_rows, edge_failures = await _edge(mesh, data_plane, services, repeat, out)
        failures += edge_failures

        counts = await _counts(mesh)
        if not counts:
            out.write(f"(the {data_plane} reported no request counts)\n")
        elif data_plane == "sidecar":
            out.write(
                "Per-lane counts from the sidecars' /metrics "
                "(lanes_requests_total; every hop counts):\n"
            )
            _table(
                ["lane -> served by", "code", "requests"],
                [(a, b, str(c)) for a, b, c in counts],
                out,
            )
        else:
            out.write("Per-cluster counts from Envoy's /stats (upstream_rq_<code>):\n")
            _table(["cluster", "code", "requests"], [(a, b, str(c)) for a, b, c in counts], out)
        out.write("\n")
        total = repeat * (len(SCENARIOS) + edge_rows)
        if failures:
            out.write(f"FAILED: {failures} of {total} requests were not routed as predicted.\n")
        else:
            out.write(f"OK: all {total} requests routed as the routing core predicts.\n")
        if serve:
            await _serve(mesh, out, stop)
        return 1 if failures else 0
    finally:
        await mesh.stop()
        out.write(f"Stopped every process ({time.monotonic() - started:.1f} s in all).\n")
        out.flush()


async def _counts(mesh: Mesh) -> list[tuple[str, str, int]]:
    """The data plane's counts, with those of the callers' own sidecars added in."""
    sums: dict[tuple[str, str], int] = {}
    for plane in (mesh.plane, *mesh.callers.values()):
        for what, code, n in await plane.lane_counts(mesh.session):
            sums[(what, code)] = sums.get((what, code), 0) + n
    return sorted((what, code, n) for (what, code), n in sums.items())


async def _edge(
    mesh: Mesh, data_plane: str, services: Sequence[str], repeat: int, out: TextIO
) -> tuple[int, int]:
    """A second plane of the same kind as a public edge (``--edge --jwks``) in front of the
    entry service: client lane headers are ignored there, a signed lane token is honoured.
    Returns (rows, mismatched requests)."""
    from lane_router._demo._planes import start_plane
    from lane_router._token import generate_key, load_signing_key, mint

    private, public = generate_key("ES256", "demo")
    key = load_signing_key(private)
    jwks = mesh.workdir / "demo-jwks.json"
    jwks.write_text(json.dumps({"keys": [public]}), encoding="utf-8")
    assert mesh.topology is not None
    edge = await start_plane(
        data_plane,
        topology=mesh.topology,
        lanes_yaml=mesh.lanes_yaml,
        workdir=mesh.workdir,
        session=mesh.session,
        name="edge",
        edge_jwks=jwks,
    )
    mesh.planes.append(edge)  # stopped with the mesh
    rows, failures = [], 0
    now = time.time()
    for label, lane, ttl, headers in EDGE_SCENARIOS:
        sent = dict(headers)
        if lane is not None:
            sent["x-lane-token"] = mint(
                key, lane, abs(ttl), now=now - (2 * abs(ttl) if ttl < 0 else 0)
            )
        expected = mesh.predict({"x-lane": lane} if lane is not None and ttl > 0 else {})
        observed = [await mesh.ask(sent, plane=edge) for _ in range(repeat)]
        bad = [o for o in observed if o.hops != expected]
        failures += len(bad)
        verdict = "as predicted" if not bad else f"MISMATCH, expected {_row(expected, services)}"
        rows.append([label, *_row((bad or observed)[0].hops, services), verdict])
    out.write(
        f"At a public edge (a second {data_plane}, pid {edge.child.pid}, with --edge --jwks): "
        "client lane headers are removed, only a signed lane token picks a lane:\n"
    )
    _table(["request", *services, "routing core"], rows, out)
    out.write("\n")
    return len(rows), failures


async def _serve(mesh: Mesh, out: TextIO, stop: asyncio.Event) -> None:
    from lane_router.ui import ScrapeSource, UiConfig, serve_ui

    addr = mesh.plane.address
    stats = "metrics" if mesh.plane.kind == "sidecar" else "stats"
    # Envoy's stats carry no lane labels: its UI shows the routing without live figures.
    admins = [p.admin for p in mesh.planes if p.kind == "sidecar"]
    ui, url = await serve_ui(UiConfig(mesh.lanes_yaml, ScrapeSource(admins)), "127.0.0.1", 0)
    try:
        await _serve_with_ui(mesh, out, stop, addr, stats, url)
    finally:
        await ui.cleanup()


async def _serve_with_ui(
    mesh: Mesh, out: TextIO, stop: asyncio.Event, addr: str, stats: str, url: str
) -> None:
    out.write(
        f"\nServing until Ctrl-C. Topology: {mesh.lanes_yaml}\n"
        f"UI (lane map, call graph, canary): {url}\nTry:\n"
        f"  curl -s -H 'Host: productpage' http://{addr}/\n"
        f"  curl -s -H 'Host: productpage' -H 'x-lane: feature-b' http://{addr}/\n"
        f"  curl -s -H 'Host: productpage' -H 'baggage: lane=feature-a' http://{addr}/\n"
        f"  curl -s -H 'Host: productpage' -H 'x-lane: hotfix' http://{addr}/\n"
        f"  curl -s -H 'Host: reviews' -H 'x-lane: hotfix' http://{addr}/   # strict miss: 503\n"
        f"  curl -s http://{mesh.plane.admin}/{stats}\n"
    )
    out.flush()
    await stop.wait()
