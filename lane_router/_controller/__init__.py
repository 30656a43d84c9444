"""The Kubernetes controller: TrafficLanes and Deployment labels in, Istio routes out.

Needs the ``controller`` extra (the ``kubernetes`` client). Pure parts (model, plan, status) do
not import it, so they are usable, and benchmarkable, without a cluster.
"""

from __future__ import annotations

from lane_router._controller._canary import CanaryInfo, pick_canaries
from lane_router._controller._desired import desired_host
from lane_router._controller._model import (
    LaneInfo,
    NamespaceModel,
    build_namespace,
    lane_expiry,
    namespace_model,
    parse_ttl,
)
from lane_router._controller._plan import Action, HostPlan, host_keys, is_ours, plan_host
from lane_router._controller._status import canary_status, lane_status, status_patch

__all__ = [
    "Action",
    "CanaryInfo",
    "HostPlan",
    "LaneInfo",
    "NamespaceModel",
    "build_namespace",
    "canary_status",
    "desired_host",
    "host_keys",
    "is_ours",
    "lane_expiry",
    "lane_status",
    "namespace_model",
    "parse_ttl",
    "pick_canaries",
    "plan_host",
    "status_patch",
]
