"""Fixtures for the sidecar tests (helpers live in ``sidecar_helpers``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sidecar_helpers import Loop, SidecarProc, Upstream, start_sidecar


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture
def upstreams(loop: Loop) -> Iterator[Callable[..., Upstream]]:
    made: list[Upstream] = []

    def make(name: str, host: str = "127.0.0.1") -> Upstream:
        up = Upstream(name, loop, host=host).start()
        made.append(up)
        return up

    yield make
    for up in made:
        up.stop()


@pytest.fixture
def sidecars(tmp_path: Path) -> Iterator[Callable[..., SidecarProc]]:
    made: list[SidecarProc] = []

    def make(topo: dict[str, Any], *args: str, listen: str = "127.0.0.1:0") -> SidecarProc:
        sc = start_sidecar(tmp_path, topo, *args, listen=listen)
        made.append(sc)
        return sc

    yield make
    for sc in made:
        sc.stop()
