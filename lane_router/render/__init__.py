"""Renderers: one topology in, the objects of one data plane's config out.

Each format has its own typed entry point (``render_istio``, ``render_envoy``,
``render_envoy_xds``, ``render_gateway_api``); :func:`render` dispatches by format name for
``lanes render``. :func:`dump_yaml` writes the objects as deterministic YAML. Every object is
built from :meth:`lane_router.Topology.resolve`'s table, so all formats route alike.

Modules: ``istio``, ``envoy``, ``envoy_xds``, ``gateway_api`` (one format each, public);
``envoy_edge``, ``istio_edge``, ``gateway_api_edge`` (each data plane's edge, public);
``_yaml`` (the YAML writer), ``_common`` (the managed-by label, name checks, GC pause: a leaf),
``_match`` (header regexes shared by Istio and the tests).
"""

from __future__ import annotations

from typing import Any

from lane_router._topology import Topology
from lane_router.render._common import (
    MANAGED_BY,
    MANAGED_BY_KEY,
    MANAGED_BY_SELECTOR,
    MANAGED_BY_VALUE,
)
from lane_router.render._match import VALID_LANE_REGEX, baggage_regex
from lane_router.render._yaml import dump_yaml
from lane_router.render.envoy import render_envoy
from lane_router.render.envoy_edge import add_envoy_edge, edge_filters
from lane_router.render.envoy_xds import EnvoyXds, XdsError, render_envoy_xds, write_envoy_xds
from lane_router.render.gateway_api import render_gateway_api, render_gateway_api_host
from lane_router.render.gateway_api_edge import render_gateway_api_edge
from lane_router.render.istio import (
    istio_http_routes,
    render_istio,
    render_istio_host,
    render_istio_ingress,
)
from lane_router.render.istio_edge import render_istio_edge

__all__ = [
    "FORMATS",
    "MANAGED_BY",
    "MANAGED_BY_KEY",
    "MANAGED_BY_SELECTOR",
    "MANAGED_BY_VALUE",
    "VALID_LANE_REGEX",
    "EnvoyXds",
    "XdsError",
    "add_envoy_edge",
    "baggage_regex",
    "dump_yaml",
    "edge_filters",
    "istio_http_routes",
    "render",
    "render_envoy",
    "render_envoy_xds",
    "render_gateway_api",
    "render_gateway_api_edge",
    "render_gateway_api_host",
    "render_istio",
    "render_istio_edge",
    "render_istio_host",
    "render_istio_ingress",
    "write_envoy_xds",
]

FORMATS = ("istio", "envoy", "gateway-api")


def render(topology: Topology, fmt: str, **options: Any) -> list[dict[str, Any]]:
    """The objects of one format, in apply order. Options are that format's keywords."""
    if fmt == "istio":
        return render_istio(topology, **options)
    if fmt == "gateway-api":
        return render_gateway_api(topology, **options)
    if fmt == "envoy":
        return [render_envoy(topology, **options)]
    raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
