"""`lanes render --format envoy --xds-dir`: the command a user runs to step a live Envoy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from envoy_upstreams import Fleet
from envoyproc import running_envoy

from lane_router.cli import main


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    with Fleet() as fleet:
        yield fleet


def _write(path: Path, base: str, nxt: str, weight: int) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "services": {
                    "cart": {
                        "versions": {"baseline": [base], "next": [nxt]},
                        "canary": {"version": "next", "weight": weight},
                    }
                }
            }
        )
    )


async def test_rerunning_render_steps_a_running_envoy(fleet: Fleet, tmp_path: Path) -> None:
    base, nxt = fleet.start("cart", "baseline"), fleet.start("cart", "next")
    lanes, xds, boot = tmp_path / "lanes.yaml", tmp_path / "xds", tmp_path / "envoy.yaml"
    _write(lanes, base, nxt, 0)
    common = ["render", "-f", str(lanes), "--format", "envoy", "--xds-dir", str(xds)]
    addresses = ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    assert main([*common, *addresses, "-o", str(boot)]) == 0

    async def served() -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.get(proxy.url("/"), headers={"host": "cart"}) as resp,
        ):
            assert resp.status == 200
            return json.loads(await resp.read())["lane"]

    with running_envoy(boot, workdir=tmp_path / "envoy") as proxy:
        assert await served() == "baseline"
        _write(lanes, base, nxt, 100)
        assert main([*common, *addresses, "--envoy-admin", proxy.admin_url]) == 0
        assert await served() == "next"


def test_xds_options_are_envoy_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lanes = tmp_path / "lanes.yaml"
    _write(lanes, "127.0.0.1:9", "127.0.0.1:10", 0)
    assert main(["render", "-f", str(lanes), "--xds-dir", str(tmp_path / "x")]) == 2
    assert "envoy only" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    args = ["render", "-f", str(lanes), "--format", "envoy", "--envoy-admin", "http://127.0.0.1:9"]
    assert main(args) == 2
    assert "--envoy-admin needs --xds-dir" in capsys.readouterr().err
