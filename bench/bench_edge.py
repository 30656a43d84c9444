"""The sidecar as an edge (``--edge --jwks``, a valid lane token on every request) vs the plain
sidecar (``x-lane`` on every request), side by side in one run. Goal (issue 11): edge req/s
within 10% of the plain sidecar's (the verified-token cache makes a QA session cost one
signature check).

Usage::

    .venv/bin/python bench/bench_edge.py [--duration 2] [--pairs 15] [--carrier header|cookie]

``--carrier cookie`` (the browser path): the edge gets ``Cookie: theme=dark; lane_token=<token>``
(the token pair is read, then removed before the upstream), the plain sidecar
``Cookie: theme=dark`` next to its ``x-lane``.

Same setup as ``bench_proxy.py`` (its helpers are reused): each sidecar pinned to core 0 in
turn, wrk and the upstream on core 1. Runs come in back-to-back (plain, edge) pairs, in
alternating order, so both see the same background load; the figure is the median of the
per-pair ratios (req/s and the sidecar's own CPU time per request). Both sidecars route
``Host: reviews`` to the feature-a version; the edge one also strips client lane headers and
verifies the ES256 token (``x-lane-token``) through its cache.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from bench_proxy import LOAD_CORE, ROOT, _latency_us, cpu_seconds, ensure_wrk, start_sidecar

CASES = (("c32", 32), ("c1", 1))


def wrk(url: str, conns: int, duration: float, pid: int, headers: list[str]) -> dict[str, float]:
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}",
           f"-d{max(1, round(duration))}s", "--latency", "-H", "Host: reviews"]  # fmt: skip
    for h in headers:
        cmd += ["-H", h]
    before = cpu_seconds(pid)
    out = subprocess.run([*cmd, url], check=True, capture_output=True, text=True).stdout
    after = cpu_seconds(pid)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        sys.exit(f"{bad.group(1)} non-2xx answers from {url}:\n{out}")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_us": _latency_us(out, "50"),
        "cpu_us_per_req": (after - before) * 1e6 / requests if requests else float("nan"),
    }


def check(url: str, headers: dict[str, str]) -> None:
    req = urllib.request.Request(url, headers={"Host": "reviews", **headers})
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = resp.read()
    if b"feature-a" not in body:
        sys.exit(f"{url} did not route to feature-a: {body[:200]!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per wrk run")
    ap.add_argument("--pairs", type=int, default=15, help="back-to-back (plain, edge) pairs")
    ap.add_argument(
        "--carrier", choices=("header", "cookie"), default="header", help="where the token rides"
    )
    args = ap.parse_args()
    ensure_wrk()
    import yaml

    from lane_router._token import generate_key, load_signing_key, mint

    work = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    procs: list[Any] = []
    try:
        up = subprocess.Popen(
            ["taskset", "-c", LOAD_CORE, sys.executable, str(ROOT / "bench" / "bench_proxy.py"),
             "--upstream", "baseline", "feature-a"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        procs.append(up)
        assert up.stdout is not None
        base_port, fa_port = map(int, up.stdout.readline().split())
        topo = {
            "lanes": {"feature-a": {}},
            "services": {"reviews": {"port": 9080, "versions": {
                "baseline": [f"127.0.0.1:{base_port}"], "feature-a": [f"127.0.0.1:{fa_port}"]}}},
        }  # fmt: skip
        topo_path = work / "lanes.yaml"
        topo_path.write_text(yaml.safe_dump(topo))
        private, public = generate_key("ES256", "bench")
        (work / "jwks.json").write_text(json.dumps({"keys": [public]}))
        token = mint(load_signing_key(private), "feature-a", 3600)

        plain, plain_port = start_sidecar(topo_path, work / "plain.log")
        procs.append(plain)
        # bench_proxy.start_sidecar has no extra flags: the edge one is started here.
        cmd = ["taskset", "-c", "0", sys.executable, "-m", "lane_router.cli", "sidecar",
               "-f", str(topo_path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
               "--log-level", "warning", "--edge", "--jwks", str(work / "jwks.json")]  # fmt: skip
        edge = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=(work / "edge.log").open("wb"), cwd=ROOT
        )
        procs.append(edge)
        line = edge.stdout.readline().decode()  # type: ignore[union-attr]
        m = re.search(r"proxy=\S+:(\d+)", line)
        if not m:
            sys.exit(f"edge sidecar did not start: {line!r}\n{(work / 'edge.log').read_text()}")
        plain_h, edge_h = ["x-lane: feature-a"], [f"x-lane-token: {token}"]
        if args.carrier == "cookie":
            plain_h, edge_h = (
                [*plain_h, "Cookie: theme=dark"],
                [f"Cookie: theme=dark; lane_token={token}"],
            )
        targets = {
            "sidecar": (f"http://127.0.0.1:{plain_port}/", plain.pid, plain_h),
            "sidecar --edge": (f"http://127.0.0.1:{m.group(1)}/", edge.pid, edge_h),
        }
        check(targets["sidecar"][0], dict(h.split(": ", 1) for h in plain_h))
        check(targets["sidecar --edge"][0], dict(h.split(": ", 1) for h in edge_h))
        for url, pid, headers in targets.values():
            wrk(url, 8, 1, pid, headers)  # warm up
        # Paired runs: each (plain, edge) pair runs back to back, in alternating order, so both
        # see the same background load; the figure is the median of the per-pair ratios.
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        order = list(targets)
        for case, conns in CASES:
            for i in range(args.pairs):
                for name in order if i % 2 == 0 else order[::-1]:
                    url, pid, headers = targets[name]
                    res = wrk(url, conns, args.duration, pid, headers)
                    runs.setdefault((name, case), []).append(res)
            ratios = [
                e["rps"] / p["rps"]
                for e, p in zip(
                    runs[("sidecar --edge", case)], runs[("sidecar", case)], strict=True
                )
            ]
            cpu = [
                e["cpu_us_per_req"] / p["cpu_us_per_req"]
                for e, p in zip(
                    runs[("sidecar --edge", case)], runs[("sidecar", case)], strict=True
                )
            ]
            q = statistics.quantiles(ratios, n=4)
            print(
                f"{case}: edge/plain req/s median {statistics.median(ratios):.3f} "
                f"(quartiles {q[0]:.3f}-{q[2]:.3f}, {len(ratios)} pairs of {args.duration:g} s); "
                f"CPU us/req edge/plain median {statistics.median(cpu):.3f}",
                file=sys.stderr,
                flush=True,
            )
            runs[("ratio", case)] = [{"rps": r, "cpu": c} for r, c in zip(ratios, cpu, strict=True)]
        print(f"\nMedians over {args.pairs} back-to-back pairs of {args.duration:g}-s runs.\n")
        print("| sidecar | req/s c32 | CPU us/req c32 | req/s c1 | p50 c1 |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name in targets:
            c32, c1 = runs[(name, "c32")], runs[(name, "c1")]
            print(
                f"| {name} | {statistics.median(r['rps'] for r in c32):,.0f} | "
                f"{statistics.median(r['cpu_us_per_req'] for r in c32):.1f} | "
                f"{statistics.median(r['rps'] for r in c1):,.0f} | "
                f"{statistics.median(r['p50_us'] for r in c1):.0f} us |"
            )
        for case, _ in CASES:
            rows = runs[("ratio", case)]
            print(
                f"edge / plain at {case}: req/s {statistics.median(r['rps'] for r in rows):.3f}, "
                f"CPU us/req {statistics.median(r['cpu'] for r in rows):.3f} (goal: req/s >= 0.90)"
            )
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
