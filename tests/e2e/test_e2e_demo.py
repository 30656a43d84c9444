"""``lanes demo`` as a user runs it: the table, the counts, the exit code, and no leftovers."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys

import aiohttp
import pytest

from lane_router._demo import EDGE_SCENARIOS, SCENARIOS, Mesh, run_demo

DEMO = [sys.executable, "-m", "lane_router.cli", "demo"]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _pids(output: str) -> list[int]:
    m = re.search(r"worker pid ([\d, ]+); \w+ pid (\d+)", output)
    assert m, output
    edge = re.search(r"a second \w+, pid (\d+)", output)
    assert edge, output
    callers = [int(p) for p in re.findall(r"\b(?:productpage|reviews) pid (\d+)", output)]
    if "sidecar data plane" in output:  # a sidecar per calling service (--service)
        assert len(callers) == 2, output
    return [int(p) for p in m.group(1).split(",")] + [int(m.group(2)), int(edge.group(1))] + callers


def test_lanes_demo_prints_the_table_and_exits_zero() -> None:
    """The default (sidecar) demo as a subprocess: every scenario row is as predicted, the
    per-lane counts come from the sidecars' /metrics, exit code 0, every child is gone."""
    done = subprocess.run(DEMO, capture_output=True, text=True, timeout=60, check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "productpage  details" in out and "routing core" in out
    for label in [s[0] for s in SCENARIOS] + [s[0] for s in EDGE_SCENARIOS]:
        row = next(line for line in out.splitlines() if line.startswith(label))
        assert row.endswith("as predicted"), row
    # At the edge an unsigned x-lane is ignored and a signed lane token is honoured.
    assert re.search(r"edge: x-lane: feature-a, no token\s+baseline\s+baseline\s+baseline\s", out)
    assert re.search(r"edge: signed token lane=feature-b\s+\S+\s+\S+\s+feature-a\s+feature-b", out)
    assert re.search(r"feature-b -> feature-a\s+200\s+\d+", out), out
    assert "OK: all" in out
    assert all(_gone(pid) for pid in _pids(out))


def test_lanes_demo_over_envoy() -> None:
    """``--data-plane envoy``: the same table through real Envoy, counts from its /stats."""
    out = io.StringIO()
    assert asyncio.run(run_demo(data_plane="envoy", repeat=1, out=out)) == 0, out.getvalue()
    text = out.getvalue()
    assert text.count("as predicted") == len(SCENARIOS) + len(EDGE_SCENARIOS)
    assert "Envoy's /stats" in text and "reviews|feature-a" in text
    assert all(_gone(pid) for pid in _pids(text))


def test_lanes_demo_fails_when_a_hop_is_not_as_predicted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The verdict is real: if the routing core predicted another version than the one that
    served (here: the core is made to expect the baseline everywhere), the row says MISMATCH
    and the exit code is 1."""
    real = Mesh.predict

    def baseline_only(self: Mesh, headers: object, **kw: object) -> object:
        return real(self, {}, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Mesh, "predict", baseline_only)
    out = io.StringIO()
    assert asyncio.run(run_demo(repeat=1, out=out)) == 1
    text = out.getvalue()
    assert "MISMATCH" in text and "FAILED" in text


async def test_lanes_demo_serve_answers_curl_and_stops_on_sigterm() -> None:
    """``--serve`` prints commands that work against the live mesh, and SIGTERM stops the demo
    and everything it started."""
    proc = await asyncio.create_subprocess_exec(
        *DEMO, "--serve", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while not any(line.startswith("Serving until") for line in lines):
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "".join(lines)
            lines.append(line.decode())
        while not lines[-1].strip().startswith("curl -s http"):
            lines.append((await asyncio.wait_for(proc.stdout.readline(), 5)).decode())
        text = "".join(lines)
        m = re.search(r"curl -s -H 'Host: productpage' -H 'x-lane: feature-b' (http://\S+)", text)
        assert m, text
        async with (
            aiohttp.ClientSession() as session,
            session.get(m.group(1), headers={"Host": "productpage", "x-lane": "feature-b"}) as r,
        ):
            hops = [(h["service"], h["lane"]) for h in (await r.json())["hops"]]
        assert ("reviews", "feature-a") in hops and ("ratings", "feature-b") in hops
        # The UI it prints draws that lane's calls: who called whom, from the sidecars' metrics.
        ui = re.search(r"UI \(lane map, call graph, canary\): (http://\S+)", text)
        assert ui, text
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{ui.group(1)}api/graph?lane=feature-b") as r,
        ):
            graph = await r.json()
        edges = {(e["from"], e["to"]) for e in graph["edges"]}
        assert {("(client)", "productpage"), ("productpage", "reviews")} <= edges, edges
        assert ("reviews", "ratings") in edges, edges
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        rest = (await proc.stdout.read()).decode()
        assert "Stopped every process" in rest
        assert all(_gone(pid) for pid in _pids(text))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
