"""lane_router: one lane routing semantics for Istio, Envoy, Gateway API and the sidecar."""

from lane_router._topology import (
    Canary,
    ContentMatch,
    Endpoint,
    Lane,
    Resolution,
    Service,
    Topology,
    TopologyError,
    load_topology,
    parse_endpoint,
)

__all__ = [
    "Canary",
    "ContentMatch",
    "Endpoint",
    "Lane",
    "Resolution",
    "Service",
    "Topology",
    "TopologyError",
    "load_topology",
    "parse_endpoint",
]
