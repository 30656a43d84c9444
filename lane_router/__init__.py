"""lane_router: one lane routing semantics for Istio, Envoy, Gateway API and the sidecar.

The public API: the model (:class:`Topology` and its parts), the ``lanes.yaml`` loader, and the
renderers of each format (also in :mod:`lane_router.render`, with the ``render(topology, fmt)``
dispatch: ``lane_router.render`` is that package, so the dispatch is not a top-level name). The
renderers load on first use, so a data plane that only needs the model (the sidecar) never
imports them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lane_router._document import (
    canary_to_dict,
    load_topology,
    loads_topology,
    parse_canary,
    parse_endpoint,
    topology_from_dict,
    topology_to_dict,
)
from lane_router._topology import (
    Canary,
    ContentMatch,
    Endpoint,
    Lane,
    Resolution,
    Service,
    Topology,
    TopologyError,
)

if TYPE_CHECKING:
    from lane_router.render import (
        FORMATS,
        XdsError,
        dump_yaml,
        render_envoy,
        render_envoy_xds,
        render_gateway_api,
        render_istio,
        write_envoy_xds,
    )

__all__ = [
    "FORMATS",
    "Canary",
    "ContentMatch",
    "Endpoint",
    "Lane",
    "Resolution",
    "Service",
    "Topology",
    "TopologyError",
    "XdsError",
    "canary_to_dict",
    "dump_yaml",
    "load_topology",
    "loads_topology",
    "parse_canary",
    "parse_endpoint",
    "render_envoy",
    "render_envoy_xds",
    "render_gateway_api",
    "render_istio",
    "topology_from_dict",
    "topology_to_dict",
    "write_envoy_xds",
]

_FROM_RENDER = frozenset(
    {
        "FORMATS",
        "XdsError",
        "dump_yaml",
        "render_envoy",
        "render_envoy_xds",
        "render_gateway_api",
        "render_istio",
        "write_envoy_xds",
    }
)


def __getattr__(name: str) -> Any:
    """The render functions, imported on first use (PEP 562)."""
    if name in _FROM_RENDER:
        value = getattr(importlib.import_module("lane_router.render"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lane_router' has no attribute {name!r}")
