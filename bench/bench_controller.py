"""Controller cold start, 1,000 services x 100 lanes: cluster objects to writes; goal <= 2 s CPU.

Usage: ``.venv/bin/python bench/bench_controller.py [--services N] [--lanes N] [--repeat N]
[--double]``

The cluster is generated as the API server would list it: one TrafficLane per lane (one in four
falls back to another lane, one in ten is strict), a Service and a baseline Deployment per service,
and a Deployment for every (lane, service) pair a lane deploys (5% of the services per lane, so
about 6,000 Deployments). Timed in CPU seconds, best of ``--repeat``:

- model: TrafficLanes, Deployments and Services to a Topology (``build_namespace``);
- render: the DestinationRule and VirtualService of every host (the Istio renderer);
- plan: make-before-break plans against an empty cluster (every object is new);
- status: the status of every TrafficLane;
- steady: plans when the cluster already holds exactly the desired objects (no writes).

``--double`` also runs the real controller against the tests' Kubernetes API double (loopback
HTTP, the real kubernetes client) and reports the wall time to the last write; the double runs in
the same process, so that figure is not CPU of the controller alone.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lane_router._controller import build_namespace, desired_host, lane_status, plan_host

NS = "bench"


def cluster(n_services: int, n_lanes: int, *, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    names = [f"lane-{i:03d}" for i in range(n_lanes)]
    lanes = []
    for i, name in enumerate(names):
        spec: dict[str, Any] = {}
        if i % 10 == 9:
            spec["strict"] = True
        elif i % 4 == 3 and i >= 4:
            spec["fallback"] = names[i - 4 + (i % 2)]
        lanes.append(
            {
                "apiVersion": "lanes.traffic-lanes.io/v1alpha1",
                "kind": "TrafficLane",
                "metadata": {
                    "name": name,
                    "namespace": NS,
                    "generation": 1,
                    "creationTimestamp": "2026-11-25T00:00:00Z",
                },
                "spec": spec,
            }
        )
    services = [f"svc-{s:04d}" for s in range(n_services)]
    deps = []

    def dep(app: str, lane: str) -> dict[str, Any]:
        labels = {"app": app, "lane": lane}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"{app}-{lane}", "namespace": NS, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": app, "image": "x"}]},
                },
            },
            "status": {"replicas": 1, "availableReplicas": 1},
        }

    for s in services:
        deps.append(dep(s, "baseline"))
    per_lane = max(1, n_services * 5 // 100)
    for name in names:
        for s in rng.sample(range(n_services), per_lane):
            deps.append(dep(services[s], name))
    svcs = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": s, "namespace": NS, "labels": {"app": s}},
            "spec": {"selector": {"app": s}, "ports": [{"name": "http", "port": 8080}]},
        }
        for s in services
    ]
    return {"TrafficLane": lanes, "Deployment": deps, "Service": svcs}


def once(objs: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    t: dict[str, float] = {}
    c0 = time.process_time()
    model = build_namespace(
        NS,
        lanes=objs["TrafficLane"],
        deployments=objs["Deployment"],
        services=objs["Service"],
        now=datetime.now(UTC),
        baseline="baseline",
        header="x-lane",
        baggage_key="lane",
    )
    c1 = time.process_time()
    assert model.topology is not None
    desired = {
        h: desired_host(model.topology, h, lane_label="lane", export_to=["."])
        for h in model.topology.services
    }
    c2 = time.process_time()
    plans = [
        plan_host(NS, h, desired=d, current_dr=None, current_vs=None) for h, d in desired.items()
    ]
    c3 = time.process_time()
    for lane in objs["TrafficLane"]:
        lane_status(lane, model, conflicts={}, failed=set(), now=datetime.now(UTC))
    c4 = time.process_time()
    steady = [
        plan_host(NS, h, desired=d, current_dr=d[0], current_vs=d[1])
        for h, d in desired.items()
        if d is not None
    ]
    c5 = time.process_time()
    writes = sum(len(p.actions) for p in plans)
    assert writes == 2 * len(desired) and not any(p.actions for p in steady)
    t.update(model=c1 - c0, render=c2 - c1, plan=c3 - c2, status=c4 - c3, steady=c5 - c4)
    t["cold"] = t["model"] + t["render"] + t["plan"]
    t["writes"] = writes
    return t


def run_double(objs: dict[str, list[dict[str, Any]]]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "k8s"))
    from kube_double import KubeDouble
    from kubernetes import client

    from lane_router._controller._controller import Controller, ControllerOptions
    from lane_router._controller._kube import Kube

    double = KubeDouble(validate=False)
    double.start()
    for kind in ("TrafficLane", "Service", "Deployment"):
        for obj in objs[kind]:
            double.put(obj)
    cfg = client.Configuration()
    cfg.host = double.url
    api = client.ApiClient(cfg)
    ctl = Controller(
        Kube(api), ControllerOptions(identity="bench", namespace=NS, leader_election=False)
    )
    hosts = len(objs["Service"])
    t0 = time.perf_counter()
    ctl.start()
    double.wait_for(lambda: len(double.writes()) >= 2 * hosts, timeout=600, what="all writes")
    wall = time.perf_counter() - t0
    ctl.stop()
    api.close()
    double.stop()
    print(
        f"against the API double: {2 * hosts} server-side applies in {wall:.2f} s wall "
        "(controller and double in one process)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--lanes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--double", action="store_true")
    args = parser.parse_args()
    objs = cluster(args.services, args.lanes)
    runs = [once(objs) for _ in range(args.repeat)]
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    print(
        f"{args.services} services x {args.lanes} lanes, {len(objs['Deployment'])} Deployments, "
        f"{int(best['writes'])} objects to write; CPU seconds, best of {args.repeat}:"
    )
    for k in ("model", "render", "plan", "status", "steady"):
        print(f"  {k:<7} {best[k]:.3f}")
    verdict = "ok" if best["cold"] <= 2.0 else "OVER GOAL"
    print(f"cold start (model + render + plan): {best['cold']:.3f} s CPU (goal <= 2 s: {verdict})")
    if args.double:
        run_double(objs)


if __name__ == "__main__":
    main()
