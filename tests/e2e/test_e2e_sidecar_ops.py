"""The sidecar's operations under load: reload (good and bad file) and SIGTERM drain."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import signal

import pytest

from lane_router._demo import Mesh, lane_cases, parse_prometheus, pump, shop, start_plane
from lane_router._demo._predict import entry_lane, predict_reload_paths
from lane_router._demo._proc import wait_until

REQUESTS = 2_000
CONCURRENCY = 32
CHANGE_AT = 700


async def _counter(mesh: Mesh, name: str) -> float:
    _, text = await mesh.plane.get_admin(mesh.session, "/metrics")
    return sum(v for _, v in parse_prometheus(text, name))


@pytest.mark.parametrize("change", ["grow", "shrink"])
async def test_reload_under_load_drops_nothing(change: str) -> None:
    """Mid-run, ``lanes.yaml`` is rewritten and the sidecar gets SIGHUP. ``grow``: a version
    that was running unlisted appears and a lane's fallback changes; ``shrink``: a version
    disappears and a lane becomes strict (so lanes falling back to it now miss). No request
    fails; each hop is routed by the old or the new table (a request in flight across the
    swap may mix them, but below a hop routed by the new table every hop is new), and every
    request issued after the first all-new answer of a changed lane is entirely new."""
    base = shop(lanes=20)
    if change == "grow":
        extra = ("cart", "lane-01")  # running from the start, absent from the first lanes.yaml
        assert "lane-01" not in base.deploys["cart"]
        deploys = {**base.deploys, "cart": (*base.deploys["cart"], "lane-01")}
        bp = dataclasses.replace(base, deploys=deploys)
        hidden, gone = [extra], []
        edit = ("lane-15", {"fallback": "lane-12"})
    else:
        bp, hidden, gone = base, [], [("catalog", "lane-00")]
        edit = ("lane-05", {"strict": True})
    mesh = await Mesh.start(bp, plane="sidecar", hidden=hidden)
    try:
        old = mesh.topology
        assert old is not None
        name, fields = edit
        lanes = [dataclasses.replace(x, **fields) if x.name == name else x for x in bp.lanes]
        new = mesh.build_topology(lanes=lanes, exclude=gone)
        cases = lane_cases(old)
        before = {label: mesh.predict(h, topology=old) for label, h in cases}
        after = {label: mesh.predict(h, topology=new) for label, h in cases}
        changed = {label for label in before if before[label] != after[label]}
        assert len(changed) >= 3
        entry = bp.entry
        during = {
            label: [
                list(p) for p in predict_reload_paths(old, new, bp.calls, entry, entry_lane(old, h))
            ]
            for label, h in cases
        }
        order = [cases[i % len(cases)] for i in range(REQUESTS)]
        random.Random(3).shuffle(order)
        reloads = await _counter(mesh, "lanes_reloads_total")

        switched = False
        failures: list[tuple[str, bool, object]] = []

        async def one(i: int) -> None:
            nonlocal switched
            if i == CHANGE_AT:
                mesh.write_topology(new)
                mesh.plane.child.send(signal.SIGHUP)
            label, headers = order[i]
            issued_after_switch = switched
            observed = await mesh.ask(headers)
            allowed = [after[label]] if issued_after_switch else during[label]
            if observed.hops not in allowed:
                failures.append((label, issued_after_switch, observed.hops))
            elif label in changed and observed.hops == after[label]:
                switched = True

        await pump(REQUESTS, CONCURRENCY, one)
        assert not failures, f"{len(failures)} requests failed, e.g. {failures[:3]}"
        assert switched
        assert await _counter(mesh, "lanes_reloads_total") > reloads
        mesh.topology = new
        for label, headers in cases:
            assert (await mesh.ask(headers)).hops == after[label], label
    finally:
        await mesh.stop()


async def test_bad_reload_keeps_the_old_table_under_load() -> None:
    """A broken ``lanes.yaml`` (a fallback cycle) plus SIGHUP mid-run: the sidecar keeps the
    table it had, every request is served exactly as before, and the failure is counted."""
    mesh = await Mesh.start(shop(lanes=20), plane="sidecar")
    try:
        topo = mesh.topology
        assert topo is not None
        cases = lane_cases(topo)
        expected = {label: mesh.predict(h) for label, h in cases}
        failed_before = await _counter(mesh, "lanes_reload_failures_total")
        broken = mesh.lanes_yaml.read_text(encoding="utf-8").replace(
            "  lane-00: {}", "  lane-00:\n    fallback: lane-02"
        )
        assert broken != mesh.lanes_yaml.read_text(encoding="utf-8")
        failures: list[tuple[str, object]] = []

        async def one(i: int) -> None:
            if i == CHANGE_AT:
                tmp = mesh.lanes_yaml.with_suffix(".tmp")
                tmp.write_text(broken, encoding="utf-8")
                tmp.replace(mesh.lanes_yaml)
                mesh.plane.child.send(signal.SIGHUP)
            label, headers = cases[i % len(cases)]
            observed = await mesh.ask(headers)
            if observed.hops != expected[label]:
                failures.append((label, observed.hops))

        await pump(REQUESTS // 2, CONCURRENCY, one)

        async def counted() -> bool:
            return await _counter(mesh, "lanes_reload_failures_total") > failed_before

        await wait_until(counted, what="the bad reload to be counted", timeout=10)
        assert not failures, f"{len(failures)} requests failed, e.g. {failures[:3]}"
        status, _ = await mesh.plane.get_admin(mesh.session, "/readyz")
        assert status == 200
    finally:
        await mesh.stop()


async def test_sigterm_drains_in_flight_requests() -> None:
    """SIGTERM to an ingress sidecar while 40 requests are inside the mesh behind it: all 40
    complete with their predicted paths, then the sidecar exits 0.

    The ingress is a second sidecar on the same ``lanes.yaml`` in front of the entry service;
    the apps' own calls go through the mesh's sidecar, as they would through their own pods'.
    """
    mesh = await Mesh.start(shop(lanes=20), plane="sidecar")
    try:
        topo = mesh.topology
        assert topo is not None
        ingress = await start_plane(
            "sidecar",
            topology=topo,
            lanes_yaml=mesh.lanes_yaml,
            workdir=mesh.workdir,
            session=mesh.session,
            name="ingress",
        )
        mesh.planes.append(ingress)
        entry = mesh.blueprint.entry
        cases = [(label, h) for label, h in lane_cases(topo) if mesh.predict(h)[0][1] is not None]
        batch = [cases[i % len(cases)] for i in range(40)]
        # 2.5 s inside the entry app: long enough for all 40 to be in flight together even on
        # a busy machine.
        tasks = [asyncio.ensure_future(mesh.ask(h, delay_ms=2500, plane=ingress)) for _, h in batch]
        entry_versions = [v for v in mesh.endpoints if v[0] == entry]

        async def all_inside() -> bool:
            counts = await asyncio.gather(*(mesh.inflight(v) for v in entry_versions))
            return sum(counts) == len(batch)

        await wait_until(all_inside, what="all requests inside the entry apps", timeout=10)
        ingress.child.send(signal.SIGTERM)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        bad = [
            (label, r if isinstance(r, BaseException) else r.hops)
            for (label, h), r in zip(batch, results, strict=True)
            if isinstance(r, BaseException) or r.hops != mesh.predict(h)
        ]
        assert not bad, f"{len(bad)} in-flight requests failed, e.g. {bad[:3]}"
        assert await ingress.child.wait(10) == 0, ingress.child.log_tail()
    finally:
        await mesh.stop()
