"""The one link to the Istio renderer: the objects a host should have, or None."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lane_router._topology import Topology
from lane_router.render.istio import render_istio_host

__all__ = ["desired_host"]


def desired_host(
    topology: Topology | None,
    host: str,
    *,
    lane_label: str,
    export_to: Sequence[str] | None,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(DestinationRule, VirtualService) for ``host``; None when it is not routed."""
    if topology is None or host not in topology.services:
        return None
    return render_istio_host(topology, host, lane_label=lane_label, export_to=export_to)
