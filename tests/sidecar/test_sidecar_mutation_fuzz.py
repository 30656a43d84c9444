"""A bounded, seeded mutation fuzz (issue 10): 3,000 hostile requests, each on its own
connection. Asserted: every request the upstream answered reached the client that sent it (no
desync, no smuggled body, no work after a close), no traceback, every error of the sidecar's
own is JSON, no ``internal`` error, and RSS growth under a fixed bound."""

from __future__ import annotations

from typing import Any

from mutation_corpus import FuzzUpstream, corpus, run_corpus
from sidecar_helpers import Loop, start_sidecar, topology

N = 3000
RSS_BOUND_KB = 40 * 1024


def test_mutation_fuzz(tmp_path: Any) -> None:
    loop = Loop()
    up = loop.run(FuzzUpstream().start())
    ep = f"127.0.0.1:{up.port}"
    sc = start_sidecar(
        tmp_path,
        topology(reviews={"baseline": [ep], "feature-a": [ep]}, ratings={"baseline": [ep]}),
        "--header-timeout", "3", "--idle-timeout", "3", "--max-header-bytes", "8192",
    )  # fmt: skip
    try:
        warm = loop.run(
            run_corpus(sc.proxy, corpus(7, 200, start=10**6), own_errors=True), timeout=120
        )
        rss0 = sc.rss_kb()
        up.answered.clear()
        tally = loop.run(run_corpus(sc.proxy, corpus(42, N), own_errors=True), timeout=300)
        rss1 = sc.rss_kb()
        metrics = sc.metrics()
    finally:
        sc.stop()
        loop.run(up.stop())
        loop.close()
    summary = tally.summary()
    assert warm.sent == 200 and tally.sent == N, summary
    orphans = up.answered - tally.received_paths
    assert not orphans, f"upstream answered what no client got: {dict(orphans)} {summary}"
    assert not tally.non_json_errors, tally.non_json_errors[:5]
    assert tally.internal == 0 and "lanes_internal_errors_total 0" in metrics, summary
    assert "Traceback" not in sc.logs()
    assert rss1 - rss0 < RSS_BOUND_KB, (rss0, rss1)
    assert (
        summary["by_class"].get("2xx", 0) > N // 10 and summary["by_class"].get("4xx", 0) > N // 10
    )
