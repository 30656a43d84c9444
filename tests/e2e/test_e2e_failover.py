"""A lane's version dies mid-run: its requests fall back along the lane's walk, with no error."""

from __future__ import annotations

import asyncio
import signal

import pytest

from lane_router._demo import Blueprint, Mesh, Version, bookinfo, lane_cases, shop
from lane_router._demo._proc import wait_until

CONCURRENCY = 24
INSIDE = 16


def _victim(bp: Blueprint) -> Version:
    """The non-baseline version of a non-strict lane that the most lanes are served by."""
    topo = bp.topology()
    best: dict[Version, int] = {}
    for service in topo.services:
        for lane in topo.lanes:
            res = topo.resolve(service, lane)
            if res is None or res.serving in (None, topo.baseline) or len(res.candidates) < 2:
                continue
            if topo.lanes[res.serving].strict:
                continue
            key = (service, res.serving)
            best[key] = best.get(key, 0) + 1
    return max(sorted(best), key=lambda v: best[v])


async def test_killed_version_falls_back_then_takes_its_lanes_back(plane: str) -> None:
    """SIGKILL one lane version while every kind of lane is under load (24 in flight), then
    start it again on the same port (a redeploy). Every lane that resolved to it is served by
    the next lane of its walk meanwhile, and returns to it once it is up; not one request
    fails at any point: neither stale pooled connections nor the discovery of the dead (or
    returning) endpoint may surface as an error. The kill happens while no request is inside
    the victim itself (that case is the next test). The data planes find a returning endpoint
    within their ejection or health-check period (5 s by default); the deadline is 30 s."""
    bp = shop(lanes=20)
    victim = _victim(bp)
    mesh = await Mesh.start(bp, plane=plane, isolate=[victim])
    try:
        topo = mesh.topology
        assert topo is not None
        cases = lane_cases(topo)
        before = {label: mesh.predict(h) for label, h in cases}
        after = {label: mesh.predict(h, down={victim}) for label, h in cases}
        affected = {label for label in before if before[label] != after[label]}
        phase = "up"  # up -> down (killed) -> back (restarted)
        seen_down: set[str] = set()
        seen_back: set[str] = set()
        failures: list[tuple[str, str, object]] = []
        done = 0
        running = True
        gate = asyncio.Event()
        gate.set()
        inside = 0

        async def traffic(k: int) -> None:
            nonlocal inside, done
            i = k
            while running:
                label, headers = cases[i % len(cases)]
                i += 7
                through_victim = label in affected
                if through_victim:
                    await gate.wait()
                    inside += 1
                issued = phase
                try:
                    observed = await mesh.ask(headers)
                finally:
                    if through_victim:
                        inside -= 1
                allowed = {
                    "up": [before[label]],
                    "down": [after[label]],
                    "back": [before[label], after[label]],
                }[issued]
                done += 1
                if observed.hops not in allowed:
                    failures.append((label, issued, observed.hops))
                elif issued == "down" and through_victim:
                    seen_down.add(label)
                elif issued == "back" and through_victim and observed.hops == before[label]:
                    seen_back.add(label)

        async def idle() -> bool:
            return inside == 0

        async def warm() -> bool:
            return done >= 100

        async def all_down() -> bool:
            return seen_down == affected or bool(failures)

        async def all_back() -> bool:
            return seen_back == affected or bool(failures)

        workers = [asyncio.ensure_future(traffic(k)) for k in range(CONCURRENCY)]
        try:
            await wait_until(warm, what="traffic before the kill", timeout=20)
            gate.clear()
            await wait_until(idle, what="no request inside the victim", timeout=10)
            child = mesh.workers[victim]
            child.send(signal.SIGKILL)
            assert await child.wait(5) is not None
            phase = "down"
            gate.set()
            await wait_until(all_down, what="every lane falling back", timeout=20)
            await mesh.restart(victim)
            phase = "back"
            await wait_until(all_back, what="every lane back on the restarted version", timeout=30)
        finally:
            running = False
            await asyncio.gather(*workers)
        assert not failures, f"{len(failures)} requests failed, e.g. {failures[:3]}"
    finally:
        await mesh.stop()


async def test_requests_inside_a_dying_version_fall_back(plane: str) -> None:
    """The harder case: the version is SIGKILLed while 16 GETs are inside it (it answers
    slowly). Nothing was answered yet, so the data plane can send each again to the next lane
    of its walk; the client sees the fallback path, not an error."""
    bp = shop(lanes=20)
    victim = _victim(bp)
    mesh = await Mesh.start(bp, plane=plane, isolate=[victim], slow={victim: 1500})
    try:
        topo = mesh.topology
        assert topo is not None
        cases = lane_cases(topo)
        hit = [
            (h, mesh.predict(h, down={victim}))
            for _, h in cases
            if any(hop[:2] == victim for hop in mesh.predict(h))
        ]
        assert hit
        batch = [hit[i % len(hit)] for i in range(INSIDE)]
        tasks = [asyncio.ensure_future(mesh.ask(h)) for h, _ in batch]

        async def all_inside() -> bool:
            return await mesh.inflight(victim) == INSIDE

        await wait_until(all_inside, what="the requests inside the victim", timeout=10)
        child = mesh.workers[victim]
        child.send(signal.SIGKILL)
        assert await child.wait(5) is not None
        results = await asyncio.gather(*tasks)
        bad = [r.hops for r, (_, exp) in zip(results, batch, strict=True) if r.hops != exp]
        assert not bad, f"{len(bad)} of {INSIDE} failed, e.g. {bad[:2]}"
    finally:
        await mesh.stop()


@pytest.mark.parametrize(
    ("plane", "body"),
    [
        ("sidecar", b"order=1"),
        ("sidecar", None),
        ("envoy", b"order=1"),
        ("envoy", None),
    ],
    ids=["sidecar-body", "sidecar-bodiless", "envoy-body", "envoy-bodiless"],
)
async def test_a_post_inside_a_dying_version_is_not_sent_twice(
    plane: str, body: bytes | None
) -> None:
    """A POST the version had accepted when it died may have had its effect: the data plane
    must not replay it on another version (RFC 9110 9.2.2); the client gets a JSON error that
    names the service, and decides itself."""
    bp = bookinfo()
    victim = ("reviews", "feature-a")
    mesh = await Mesh.start(bp, plane=plane, isolate=[victim], slow={victim: 1500})
    try:
        task = asyncio.ensure_future(
            mesh.ask({"x-lane": "feature-a"}, service="reviews", method="POST", body=body)
        )

        async def inside() -> bool:
            return await mesh.inflight(victim) == 1

        await wait_until(inside, what="the POST inside the victim", timeout=10)
        child = mesh.workers[victim]
        child.send(signal.SIGKILL)
        assert await child.wait(5) is not None
        observed = await task
        assert observed.status in (502, 503), observed
        assert "reviews" in str(observed.body)
    finally:
        await mesh.stop()
