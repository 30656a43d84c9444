"""The long mutation fuzz (issue 10): the sidecar and Envoy side by side on the same corpus.

```sh
.venv/bin/python bench/fuzz_proxy.py --requests 1000000 --minutes 6 [--json out.json]
```

The corpus is ``tests/sidecar/mutation_corpus.py`` (the in-suite fuzz uses its first few
thousand): hostile request shapes with seeded mutations, one connection each, then EOF. Both
proxies route the same topology to one real aiohttp upstream that records what it *answered*.
Blocks of 2,000 requests alternate between the proxies until ``--requests`` are sent or
``--minutes`` are up, so both see the same load. Reported per proxy: statuses by class,
connections with no answer, upstream answers no client received ("orphans": a desync, a
smuggled body, work after a close), RSS growth; for the sidecar also tracebacks in its log,
``lanes_internal_errors_total`` and its own errors that are not JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "sidecar"))

BLOCK = 2000


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000, help="per proxy, at most")
    ap.add_argument("--minutes", type=float, default=6.0, help="stop after this (both proxies)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--parallel", type=int, default=128)
    ap.add_argument(
        "--half-close",
        action="store_true",
        help="EOF after each request (Envoy then closes without answering); default: read "
        "until 0.5 s of silence",
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from envoyproc import running_envoy
    from mutation_corpus import FuzzUpstream, Tally, corpus, run_corpus
    from sidecar_helpers import Loop, start_sidecar, topology

    from lane_router import topology_from_dict
    from lane_router.render.envoy import render_envoy

    work = Path(tempfile.mkdtemp(prefix="fuzz-proxy-"))
    loop = Loop()
    up = loop.run(FuzzUpstream().start())
    ep = f"127.0.0.1:{up.port}"
    topo_doc = topology(reviews={"baseline": [ep], "feature-a": [ep]}, ratings={"baseline": [ep]})
    sc = start_sidecar(work, topo_doc, "--header-timeout", "3", "--idle-timeout", "3")
    bootstrap = render_envoy(
        topology_from_dict(topo_doc), listen="127.0.0.1:0", admin="127.0.0.1:0"
    )
    totals: dict[str, dict[str, Any]] = {}
    try:
        with running_envoy(bootstrap, workdir=work, validate=True) as envoy:
            targets = {"sidecar": (sc.proxy, sc.pid), "envoy": (envoy.address(), envoy.pid)}
            tallies = {name: Tally() for name in targets}
            answered = {name: Counter[str]() for name in targets}
            rss0 = {name: rss_kb(pid) for name, (_, pid) in targets.items()}
            end = time.monotonic() + args.minutes * 60
            start = 0
            t0 = time.monotonic()
            while start < args.requests and time.monotonic() < end:
                block = corpus(args.seed, min(BLOCK, args.requests - start), start)
                for name, (addr, _) in targets.items():
                    up.answered.clear()
                    t = loop.run(
                        run_corpus(
                            addr,
                            block,
                            own_errors=name == "sidecar",
                            parallel=args.parallel,
                            half_close=args.half_close,
                        ),
                        timeout=600,
                    )
                    answered[name] += up.answered
                    agg = tallies[name]
                    agg.sent += t.sent
                    agg.statuses += t.statuses
                    agg.received_paths += t.received_paths
                    agg.non_json_errors += t.non_json_errors[:10]
                    agg.internal += t.internal
                    agg.no_answer += t.no_answer
                start += len(block)
                print(f"{start} requests per proxy, {time.monotonic() - t0:.0f}s", flush=True)
            for name, (_, pid) in targets.items():
                tally = tallies[name]
                orphans = answered[name] - tally.received_paths
                totals[name] = {
                    **tally.summary(),
                    "orphans": sum(orphans.values()),
                    "orphan_examples": sorted(orphans)[:5],
                    "rss_growth_kb": rss_kb(pid) - rss0[name],
                }
            metrics = sc.metrics()
            totals["sidecar"]["tracebacks"] = sc.logs().count("Traceback")
            totals["sidecar"]["internal_errors_total"] = next(
                (line.split()[-1] for line in metrics.splitlines()
                 if line.startswith("lanes_internal_errors_total")), "?"
            )  # fmt: skip
            totals["wall_s"] = round(time.monotonic() - t0)
    finally:
        sc.stop()
        loop.run(up.stop())
        loop.close()
    print(json.dumps(totals, indent=1))
    if args.json:
        args.json.write_text(json.dumps(totals, indent=1))
    bad = totals["sidecar"]
    return (
        1 if bad["orphans"] or bad["tracebacks"] or bad["non_json_errors"] or bad["internal"] else 0
    )


if __name__ == "__main__":
    raise SystemExit(main())
