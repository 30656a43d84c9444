"""Render 1,000 services x 100 lanes to Istio YAML; goal <= 1 s.

Usage: ``.venv/bin/python bench/bench_render.py [--services N] [--lanes N] [--repeat N]
[--format istio|gateway-api] [--canary]``

The topology is generated: every lane deploys 5% of the services (a deterministic spread), one
lane in four falls back to another lane (chains up to three hops) and one in ten is strict, so the
renderer sees own versions, fallbacks, strict misses and lanes served by the baseline. With
``--canary`` every service also has a canary (a header match and 10%), the worst case for Istio:
every lane then needs routes of its own, those served by the baseline too. Timed:
the renderer + ``dump_yaml`` (what ``lanes render`` does after loading the file), best of
``--repeat`` runs, plus the topology build for reference. The goal is set for Istio.
"""

from __future__ import annotations

import argparse
import random
import time

from lane_router import Canary, ContentMatch, Lane, Service, Topology, dump_yaml
from lane_router.render import render


def build(n_services: int, n_lanes: int, *, seed: int = 7, canary: bool = False) -> Topology:
    rng = random.Random(seed)
    names = [f"lane-{i:03d}" for i in range(n_lanes)]
    lanes = []
    for i, name in enumerate(names):
        if i % 10 == 9:
            lanes.append(Lane(name, strict=True))
        elif i % 4 == 3 and i >= 4:
            lanes.append(Lane(name, fallback=names[i - 4 + (i % 2)]))
        else:
            lanes.append(Lane(name))
    services = []
    per_lane = max(1, n_services * 5 // 100)
    deployed: dict[int, list[str]] = {s: [] for s in range(n_services)}
    for name in names:
        for s in rng.sample(range(n_services), per_lane):
            deployed[s].append(name)
    for s in range(n_services):
        versions = {lane: () for lane in ("baseline", *deployed[s])}
        spec = None
        if canary:
            versions["v2"] = ()
            match = ContentMatch(headers=(("x-canary", "exact", "1"),))
            spec = Canary("v2", weight=10, matches=(match,))
        services.append(Service(f"svc-{s:04d}", versions, port=8080, canary=spec))
    return Topology.build(lanes=lanes, services=services, namespace="bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--lanes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--format", choices=("istio", "gateway-api"), default="istio")
    parser.add_argument("--canary", action="store_true", help="a canary on every service")
    args = parser.parse_args()

    t0 = time.perf_counter()
    topo = build(args.services, args.lanes, canary=args.canary)
    t_build = time.perf_counter() - t0

    best_render = best_dump = best_cpu = float("inf")
    text = ""
    for _ in range(args.repeat):
        c0 = time.process_time()
        t0 = time.perf_counter()
        objects = render(topo, args.format)
        t1 = time.perf_counter()
        text = dump_yaml(objects)
        t2 = time.perf_counter()
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_render = min(best_render, t1 - t0)
        best_dump = min(best_dump, t2 - t1)
    routes = sum(
        len(o["spec"].get("http") or o["spec"].get("rules") or ())
        for o in objects
        if o["kind"] in ("VirtualService", "HTTPRoute")
    )
    total = best_render + best_dump
    print(
        f"{args.format}: {args.services} services x {args.lanes} lanes"
        f"{' with a canary on every service' if args.canary else ''}: {len(objects)} objects, "
        f"{routes} routes/rules, "
        f"{len(text) / 1e6:.1f} MB YAML"
    )
    print(
        f"topology build {t_build * 1e3:.0f} ms (includes the {args.services}x{args.lanes + 1} "
        "route table)"
    )
    print(
        f"render {best_render * 1e3:.0f} ms + dump_yaml {best_dump * 1e3:.0f} ms = "
        f"{total * 1e3:.0f} ms wall, {best_cpu * 1e3:.0f} ms CPU (best of {args.repeat}; "
        f"goal <= 1000 ms) {'OK' if total <= 1.0 else 'OVER'}"
    )


if __name__ == "__main__":
    main()
