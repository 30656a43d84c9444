"""The demo mesh and the end-to-end harness: real apps, a real data plane, predicted paths.

Private: used by ``lanes demo`` and by ``tests/e2e``.
"""

from lane_router._demo._blueprints import bookinfo, shop
from lane_router._demo._cases import lane_cases, pump
from lane_router._demo._mesh import Blueprint, Mesh, Observed, Version
from lane_router._demo._planes import PLANES, Plane, parse_prometheus, start_plane
from lane_router._demo._predict import Hop, entry_lane, predict_path
from lane_router._demo._run import EDGE_SCENARIOS, SCENARIOS, run_demo

__all__ = [
    "EDGE_SCENARIOS",
    "PLANES",
    "SCENARIOS",
    "Blueprint",
    "Hop",
    "Mesh",
    "Observed",
    "Plane",
    "Version",
    "bookinfo",
    "entry_lane",
    "lane_cases",
    "parse_prometheus",
    "predict_path",
    "pump",
    "run_demo",
    "shop",
    "start_plane",
]
