"""A lane's version dies mid-run: its requests fall back along the lane's walk, with no error."""

from __future__ import annotations

import asyncio
import random
import signal

import pytest

from lane_router._demo import Blueprint, Mesh, Version, bookinfo, lane_cases, pump, shop
from lane_router._demo._proc import wait_until

REQUESTS = 2_000
CONCURRENCY = 32
KILL_AT = 700


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


async def test_killed_version_falls_back_without_errors(plane: str) -> None:
    """SIGKILL the process of one lane version while every lane is under load. Requests that
    resolved to it are served by the next lane of their walk from then on, and not one
    request fails: neither the stale pooled connections nor the discovery of the dead endpoint
    may surface as an error. The kill happens while no request is inside the victim itself (a
    request a process is handling when it dies is lost with it, whatever the data plane)."""
    bp = shop(lanes=20)
    victim = _victim(bp)
    mesh = await Mesh.start(bp, plane=plane, isolate=[victim])
    try:
        topo = mesh.topology
        assert topo is not None
        cases = lane_cases(topo)
        order = [cases[i % len(cases)] for i in range(REQUESTS)]
        random.Random(2).shuffle(order)
        before = {label: mesh.predict(h) for label, h in cases}
        after = {label: mesh.predict(h, down={victim}) for label, h in cases}
        affected = {label for label in before if before[label] != after[label]}
        assert len(affected) >= 3, "the victim must matter to several lanes"

        gate = asyncio.Event()
        gate.set()
        killed = False
        inside = 0  # requests on their way through the victim
        failures: list[tuple[str, bool, object]] = []
        served_after: set[str] = set()

        async def one(i: int) -> None:
            nonlocal inside
            label, headers = order[i]
            through_victim = label in affected
            if through_victim:
                await gate.wait()
                inside += 1
            was_killed = killed
            try:
                observed = await mesh.ask(headers)
            finally:
                if through_victim:
                    inside -= 1
            expected = after[label] if was_killed else before[label]
            if observed.hops != expected:
                failures.append((label, was_killed, observed.hops))
            elif was_killed and through_victim:
                served_after.add(label)
            if i == KILL_AT:
                asyncio.get_running_loop().create_task(kill())

        async def idle() -> bool:
            return inside == 0

        async def kill() -> None:
            nonlocal killed
            gate.clear()
            await wait_until(idle, what="no request inside the victim", timeout=10)
            child = mesh.workers[victim]
            child.send(signal.SIGKILL)
            assert await child.wait(5) is not None
            killed = True
            gate.set()

        await pump(REQUESTS, CONCURRENCY, one)
        assert killed
        assert not failures, f"{len(failures)} requests failed, e.g. {failures[:3]}"
        assert served_after == affected  # every affected lane was seen falling back
    finally:
        await mesh.stop()


INSIDE = 16


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
