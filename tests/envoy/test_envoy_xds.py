"""Filesystem xDS: a step Envoy refuses is an error, and the running config keeps serving."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator

import aiohttp
import pytest
from envoy_upstreams import Fleet
from envoyproc import running_envoy

from lane_router import Topology, topology_from_dict
from lane_router.render.envoy_xds import (
    CDS_FILE,
    RDS_FILE,
    XdsError,
    render_envoy_xds,
    write_envoy_xds,
)


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    with Fleet() as fleet:
        yield fleet


async def test_a_refused_step_raises_restores_the_file_and_keeps_serving(
    fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base, nxt = fleet.start("cart", "baseline"), fleet.start("cart", "next")

    def topology(weight: int | None) -> Topology:
        svc: dict = {"versions": {"baseline": [base]}}
        if weight is not None:
            svc = {
                "versions": {"baseline": [base], "next": [nxt]},
                "canary": {"version": "next", "weight": weight},
            }
        return topology_from_dict({"services": {"cart": svc}})

    xds_dir = tmp_path_factory.mktemp("xds")
    options = {"xds_dir": xds_dir, "listen": "127.0.0.1:0", "admin": "127.0.0.1:0"}
    first = render_envoy_xds(topology(None), **options)
    write_envoy_xds(first, xds_dir)
    before = {name: (xds_dir / name).read_text() for name in (CDS_FILE, RDS_FILE)}

    # The canary's cluster names an endpoint Envoy cannot use: the new clusters are refused.
    wanted = render_envoy_xds(topology(100), **options)
    clusters = copy.deepcopy(list(wanted.clusters))
    (bad,) = [c for c in clusters if c["name"] == "cart|next"]
    bad["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"
    ]["address"] = "not-an-ip"
    broken = type(wanted)(wanted.bootstrap, tuple(clusters), wanted.route_config)

    async def served() -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.get(proxy.url("/"), headers={"host": "cart"}) as resp,
        ):
            assert resp.status == 200
            return json.loads(await resp.read())["lane"]

    with running_envoy(first.bootstrap, workdir=tmp_path_factory.mktemp("envoy-xds")) as proxy:
        assert await served() == "baseline"
        with pytest.raises(XdsError, match="refused"):
            write_envoy_xds(broken, xds_dir, admin_url=proxy.admin_url, timeout=20)
        # The directory holds what Envoy runs again, and Envoy still routes by it.
        assert {n: (xds_dir / n).read_text() for n in before} == before
        assert await served() == "baseline"
        # The same step, corrected, goes through: weight 100 sends every request to the canary.
        write_envoy_xds(wanted, xds_dir, admin_url=proxy.admin_url)
        assert await served() == "next"
        # Writing the same config again changes no file.
        stamps = {n: (xds_dir / n).stat().st_mtime_ns for n in before}
        write_envoy_xds(wanted, xds_dir, admin_url=proxy.admin_url)
        assert {n: (xds_dir / n).stat().st_mtime_ns for n in before} == stamps


def test_envoy_not_running_is_a_clear_error(tmp_path_factory: pytest.TempPathFactory) -> None:
    topo = topology_from_dict({"services": {"cart": {"versions": {"baseline": ["127.0.0.1:9"]}}}})
    xds_dir = tmp_path_factory.mktemp("xds-nothing")
    write_envoy_xds(render_envoy_xds(topo, xds_dir=xds_dir), xds_dir)
    other = topology_from_dict({"services": {"cart": {"versions": {"baseline": ["127.0.0.1:10"]}}}})
    with pytest.raises(XdsError, match="cannot read Envoy's stats"):
        write_envoy_xds(
            render_envoy_xds(other, xds_dir=xds_dir), xds_dir, admin_url="http://127.0.0.1:9"
        )
    # Nothing was written: the files still hold the first config.
    assert "127.0.0.1" in (xds_dir / CDS_FILE).read_text()
    assert '"port_value": 10' not in (xds_dir / CDS_FILE).read_text()
