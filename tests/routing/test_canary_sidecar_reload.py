"""``lanes canary`` against a running ``lanes sidecar`` that watches the file: every step is a
clean reload (never a half-written file), and stepping, aborting, removing, re-declaring and
promoting under load fails no request. The canary's share on the sidecar is the sidecar's own
test; here baseline answers may come from either version until the promote, and only from the
promoted one after it."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sidecar"))
from sidecar_helpers import Loop, Upstream, request, start_sidecar, topology, wait_for

from lane_router.cli import main


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name}")


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


def test_steps_and_promote_under_load_fail_no_request(loop: Loop, tmp_path: Path) -> None:
    ups = {name: Upstream(name, loop).start() for name in ("v1", "v2", "feature-a")}
    sc = None
    try:
        topo = topology(
            reviews={
                "baseline": [ups["v1"].endpoint],
                "feature-a": [ups["feature-a"].endpoint],
                "v2": [ups["v2"].endpoint],
            }
        )
        topo["services"]["reviews"]["canary"] = {"version": "v2", "weight": 0}
        sc = start_sidecar(tmp_path, topo, "--reload-interval", "0.02")
        served: Counter[tuple[str, str]] = Counter()
        failures: list[str] = []
        stop = threading.Event()

        def load(headers: dict[str, str], kind: str) -> None:
            while not stop.is_set():
                try:
                    status, _, body = request(sc, "/", headers=headers)
                except OSError as exc:
                    failures.append(f"{kind}: {exc!r}")
                    continue
                if status != 200:
                    failures.append(f"{kind}: {status} {body}")
                else:
                    served[(kind, body["served"])] += 1

        workers = [
            threading.Thread(target=load, args=({}, "baseline")),
            threading.Thread(target=load, args=({"x-lane": "feature-a"}, "lane")),
        ]
        for w in workers:
            w.start()
        try:
            generation = sc.generation()
            steps = [["--weight", "1"], ["--weight", "100"], ["--abort"], ["--remove"]]
            steps += [["--version", "v2", "--endpoint", ups["v2"].endpoint, "--weight", "10"]]
            steps += [["--weight", "50"]]
            for step in steps:
                assert main(["canary", "reviews", "-f", str(sc.path), *step]) == 0
                generation += 1
                wait_for(lambda g=generation: sc.generation() >= g, f"generation {generation}")
            assert main(["canary", "reviews", "-f", str(sc.path), "--promote"]) == 0
            wait_for(lambda: sc.generation() >= generation + 1, "the promote's reload")
            after = served[("baseline", "v2")]
            wait_for(lambda: served[("baseline", "v2")] > after + 20, "baseline on the new version")
            v1_before = served[("baseline", "v1")]
            wait_for(lambda: served[("baseline", "v2")] > after + 60, "more baseline traffic")
            assert served[("baseline", "v1")] == v1_before  # promoted: v1 takes nothing now
        finally:
            stop.set()
            for w in workers:
                w.join(10)
        assert not failures, failures[:5]
        assert set(served) <= {("baseline", "v1"), ("baseline", "v2"), ("lane", "feature-a")}
        assert served[("lane", "feature-a")] > 0
        metrics = sc.metrics()
        assert _metric(metrics, "lanes_reload_failures_total") == 0
        assert _metric(metrics, "lanes_reloads_total") >= 8
        assert sc.routes()  # the live table is still served
    finally:
        if sc is not None:
            assert sc.stop() == 0
        for up in ups.values():
            up.stop()
