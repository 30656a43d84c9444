"""The data-plane parameter of the end-to-end tests.

The harness itself (apps, workers, data planes, predictions, lane cases, the load pump) is
``lane_router._demo``, the same code ``lanes demo`` runs.
"""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sidecar", "envoy"])
def plane(request: pytest.FixtureRequest) -> str:
    return str(request.param)
