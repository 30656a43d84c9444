"""Every kind of lane, over both data planes: the served path is what the routing core says."""

from __future__ import annotations

import json

import pytest

from lane_router._demo import Mesh, bookinfo, lane_cases, shop


@pytest.mark.parametrize("mode", ["host", "fqdn", "proxy"])
async def test_every_lane_is_served_as_predicted(plane: str, mode: str) -> None:
    """Apps call services by name through the data plane (``Host: <service>``, the full
    cluster name with the port, or the plane as an HTTP proxy); every hop of every lane
    matches ``Topology.resolve``."""
    mesh = await Mesh.start(shop(), plane=plane, mode=mode)
    try:
        topo = mesh.topology
        assert topo is not None
        wrong = []
        for label, headers in lane_cases(topo):
            expected = mesh.predict(headers)
            observed = await mesh.ask(headers)
            if observed.hops != expected:
                wrong.append((label, expected, observed.hops, observed.body))
        assert not wrong, "\n".join(map(str, wrong))
    finally:
        await mesh.stop()


async def test_fallback_and_strict_are_exercised() -> None:
    """Guard for the test above: the topology really has deep walks and strict misses at the
    entry and mid-path, so a data plane cannot pass by routing everything to the baseline."""
    bp = shop()
    lanes = {x.name: x for x in bp.lanes}
    assert any(x.fallback and lanes[x.fallback].fallback for x in bp.lanes)  # >= 3 lanes deep
    assert any(x.strict and x.name not in bp.deploys[bp.entry] for x in bp.lanes)
    assert any(x.strict and x.name in bp.deploys[bp.entry] for x in bp.lanes)


async def test_strict_miss_answers_json_naming_lane_and_service(plane: str) -> None:
    """A strict lane's miss is a 503 whose JSON body names the lane and the service, at the
    entry and at an inner hop."""
    mesh = await Mesh.start(bookinfo(), plane=plane)
    try:
        # Inner hop: hotfix deploys productpage but not reviews.
        observed = await mesh.ask({"x-lane": "hotfix"})
        assert observed.hops == mesh.predict({"x-lane": "hotfix"})
        (miss,) = [h for h in observed.body["hops"] if h["status"] == 503]
        body = json.loads(miss["error"])
        assert "hotfix" in json.dumps(body) and "reviews" in json.dumps(body)
        # Entry: ask reviews directly with the strict lane.
        async with mesh.session.get(
            f"http://{mesh.plane.address}/", headers={"Host": "reviews", "x-lane": "hotfix"}
        ) as resp:
            assert resp.status == 503
            assert resp.content_type == "application/json"
            text = json.dumps(await resp.json())
        assert "hotfix" in text and "reviews" in text
    finally:
        await mesh.stop()


async def test_ipv6_mesh_is_served_as_predicted(plane: str) -> None:
    """The whole mesh on ``::1``: apps, endpoints written as ``[::1]:port`` in lanes.yaml, and
    the data plane listening on ``[::1]``."""
    mesh = await Mesh.start(bookinfo(), plane=plane, host="::1")
    try:
        assert mesh.plane.address.startswith("[::1]:")
        assert "'[::1]:" in mesh.lanes_yaml.read_text(encoding="utf-8")
        topo = mesh.topology
        assert topo is not None
        for label, headers in lane_cases(topo):
            assert (await mesh.ask(headers)).hops == mesh.predict(headers), label
    finally:
        await mesh.stop()
