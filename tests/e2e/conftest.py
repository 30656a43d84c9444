"""The data-plane parameter of the end-to-end tests.

The harness itself (apps, workers, data planes, predictions, lane cases, the load pump) is
``lane_router._demo``, the same code ``lanes demo`` runs.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from lane_router._demo._proc import live_children


@pytest.fixture(params=["sidecar", "envoy"])
def plane(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def no_process_left() -> Iterator[None]:
    """Every test stops what it started. If one did not (a bug, or a test cut short by its
    timeout), kill the leftovers by PID and fail the test."""
    yield
    left = live_children()
    for child in left:
        child.send(signal.SIGKILL)
    assert not left, f"processes left running: {[(c.name, c.pid) for c in left]}"
