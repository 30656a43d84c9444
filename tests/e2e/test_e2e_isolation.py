"""Isolation under concurrency: 10,000 interleaved requests over 20 lanes and 6 services."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from lane_router._demo import Mesh, entry_lane, lane_cases, parse_prometheus, pump, shop

REQUESTS = 10_000
CONCURRENCY = 48


# ~20 s per data plane on an idle 2-core box (60,000 app hops); the margin is for a busy one.
@pytest.mark.timeout(300)
async def test_ten_thousand_interleaved_requests_never_leak(plane: str) -> None:
    """Every request of every lane kind, shuffled and 48 in flight at once through one data
    plane: no hop of any request is served by a version its lane does not resolve to (a
    leak), and no request fails. Over the sidecar, its ``lanes_requests_total`` agrees with
    the apps' reports hop for hop."""
    bp = shop(lanes=20)
    assert len(bp.lanes) == 20 and len(bp.deploys) == 6
    # No tracer provider here (spans are no-ops; the propagation path is the same): recording
    # 120,000 spans would add ~40% to the run. The other e2e tests run with a real one.
    mesh = await Mesh.start(bp, plane=plane, tracing=False)
    try:
        topo = mesh.topology
        assert topo is not None
        cases = lane_cases(topo)
        order = [cases[i % len(cases)] for i in range(REQUESTS)]
        random.Random(1).shuffle(order)
        expected = {label: mesh.predict(headers) for label, headers in cases}
        effective = {label: topo.effective_lane(entry_lane(topo, h)) for label, h in cases}
        leaks: list[tuple[str, object]] = []
        served: Counter[tuple[str, str | None]] = Counter()
        hops: Counter[tuple[str, str, str, str]] = Counter()  # as lanes_requests_total counts

        async def one(i: int) -> None:
            label, headers = order[i]
            observed = await mesh.ask(headers)
            if observed.hops != expected[label]:
                leaks.append((label, observed.hops))
            served.update((h[0], h[1]) for h in observed.hops)
            hops.update(
                (svc, effective[label], lane or "-", str(code)) for svc, lane, code in observed.hops
            )

        await pump(REQUESTS, CONCURRENCY, one)
        assert not leaks, f"{len(leaks)} of {REQUESTS} requests leaked, e.g. {leaks[:3]}"
        # Every version that any lane reaches from the entry took part (strict lanes that do not
        # deploy the entry reach nothing), and they are most of the mesh.
        reachable = {(h[0], h[1]) for path in expected.values() for h in path if h[1]}
        assert {v for v in served if v[1] is not None} == reachable
        assert len(reachable) >= 0.75 * len(mesh.endpoints)
        if plane == "sidecar":
            # The sidecar's own count of every hop, by service, lane, served-by lane and code,
            # is exactly what the apps report (the demo prints these counts).
            _, text = await mesh.plane.get_admin(mesh.session, "/metrics")
            counted = {
                (x["service"], x["lane"], x["served_by"], x["code"]): int(v)
                for x, v in parse_prometheus(text, "lanes_requests_total")
            }
            assert counted == dict(hops)
    finally:
        await mesh.stop()
