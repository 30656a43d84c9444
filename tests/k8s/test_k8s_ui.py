"""``lanes ui --kube``: the pages read the controller's view of a namespace from the API server
(the double), by the controller's own model code; lanes with a TTL carry the controller's expiry."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from k8s_objects import NS, canary, deployment, lane, service
from kube_double import KubeDouble

from lane_router import TopologyError
from lane_router._controller import NamespaceModel, lane_expiry
from lane_router.render import MANAGED_BY
from lane_router.ui import ModelView, View


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def ui(double: KubeDouble, tmp_path: Path) -> Iterator[str]:
    """`lanes ui --kube` on the double (kubeconfig to it), figures from a dead sidecar address."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "d", "cluster": {"server": double.url}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "c", "context": {"cluster": "d", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    cmd = [sys.executable, "-m", "lane_router.cli", "ui", "--kube", "-n", NS]
    cmd += ["--kubeconfig", str(kubeconfig), "--listen", "127.0.0.1:0", "--refresh", "0.5"]
    cmd += ["--sidecar", "127.0.0.1:9"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving http://" in line, proc.stderr.read() if proc.poll() is not None else line
        yield line.split("serving ", 1)[1].split()[0].rstrip("/")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_ui_kube_shows_the_controllers_view_and_lane_expiry(double: KubeDouble, ui: str) -> None:
    status, body = _get(f"{ui}/api/map")
    assert status == 503 and "no routable service" in body["error"]  # an empty namespace
    for obj in (
        service("productpage"),
        service("reviews"),
        deployment("productpage", "baseline"),
        deployment("reviews", "baseline"),
        deployment("reviews", "feature-a"),
        deployment("reviews", "v2"),
        deployment("reviews", "not-ready", available=0),
        lane("feature-a", ttl="2h", description="new reviews"),
        lane("not-ready", strict=True),
        canary("reviews-v2", "reviews", "v2", 20),
    ):
        double.put(obj)
    # The controller's own per-lane Service (sidecar data plane) is an output, not a service.
    ours = service("reviews-feature-a")
    ours["metadata"]["labels"] = {**MANAGED_BY, "traffic-lanes.io/service": "reviews"}
    double.put(ours)

    deadline = time.monotonic() + 20
    while (status := _get(f"{ui}/api/map")[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    status, body = _get(f"{ui}/api/map")
    assert status == 200 and body["services"] == ["productpage", "reviews"]
    lanes = {x["name"]: x for x in body["lanes"]}
    assert list(lanes) == ["baseline", "feature-a", "not-ready"]
    assert body["cells"]["feature-a"]["reviews"]["serving"] == "feature-a"
    assert body["cells"]["feature-a"]["productpage"]["fallback"] is True
    assert body["cells"]["not-ready"]["reviews"]["strict_miss"] is True  # no available replica
    assert body["cells"]["baseline"]["reviews"]["canary"] == {"version": "v2", "weight": 20}
    # The expiry is the controller's: creationTimestamp + ttl.
    want = lane_expiry(double.get("TrafficLane", NS, "feature-a") or {})
    assert want is not None
    got = datetime.fromisoformat(lanes["feature-a"]["expires_at"].replace("Z", "+00:00"))
    assert got == want and 7000 < lanes["feature-a"]["expires_in"] <= 7200
    assert lanes["not-ready"]["expires_at"] is None and lanes["baseline"]["expires_in"] is None
    assert body["problems"]  # the dead sidecar address is named, the view is still served

    double.remove("TrafficLane", NS, "feature-a")
    while "feature-a" in _get(f"{ui}/api/map")[1]["cells"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "feature-a" not in _get(f"{ui}/api/map")[1]["cells"]
    status, body = _get(f"{ui}/api/graph?lane=feature-a")
    assert status == 404 and body["lanes"] == ["baseline", "not-ready"]


def test_model_view_keeps_the_last_view_and_reads_at_most_once_per_min_age(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from lane_router._controller import build_namespace

    now = datetime.now(UTC)
    model = build_namespace(
        NS,
        lanes=[{**lane("a", ttl="90m"), "metadata": {"name": "a", "creationTimestamp": "x"}}],
        deployments=[deployment("s", "baseline")],
        services=[service("s")],
        now=now,
        baseline="baseline",
        header="x-lane",
        baggage_key="lane",
    )
    answers: list[NamespaceModel | Exception] = [RuntimeError("connection refused"), model]
    answers.append(RuntimeError("403 Forbidden"))
    clock = [0.0]

    def read() -> NamespaceModel:
        got = answers.pop(0)
        if isinstance(got, Exception):
            raise got
        return got

    view = ModelView(read, where="namespace shop", min_age=1.0, clock=lambda: clock[0])
    with pytest.raises(TopologyError, match=r"cannot read namespace shop: connection refused"):
        view()
    first = view()
    assert isinstance(first, View) and list(first.topology.services) == ["s"]
    assert first.expires == {}  # a bad creationTimestamp: no expiry, as in the controller
    assert view() is first and len(answers) == 1  # cached within min_age
    clock[0] = 5.0
    assert view() is first and "403 Forbidden" in caplog.text
