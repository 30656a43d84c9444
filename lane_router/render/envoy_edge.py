"""Envoy as an edge (``lanes render --format envoy --edge --jwks FILE``; docs/design.md, the
edge).

Three HTTP filters go in front of the lane filter, in this order:

1. a Lua filter (``lane_router/data/edge.lua``) removing every client ``x-lane`` line, the lane
   member of every ``baggage`` line and the ``lane_token`` pair of every ``cookie`` line (the
   token is a credential); without an ``x-lane-token`` header, that cookie's value becomes it;
2. Envoy's own ``jwt_authn`` with the JWKS inline: the token from the ``x-lane-token`` header
   (the cookie was moved there), ``claim_to_headers`` writing the ``lane`` claim to ``x-lane``,
   ``allow_missing_or_failed`` so a bad token is baseline traffic (never a 401), and
   ``clear_route_cache`` since the route may already have been picked without the lane;
3. ``header_mutation`` removing ``x-lane-token`` (``forward: false`` only removes a token that
   verified; a failed one would otherwise reach the upstream).

Envoy does the crypto; the lane filter after them validates whatever the claim held.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from lane_router._edge_wire import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEFAULT_LEEWAY,
    DEFAULT_TOKEN_HEADER,
)
from lane_router._topology import Topology

if TYPE_CHECKING:
    from lane_router._token import KeySet

__all__ = [
    "DROP_FILTER",
    "EDGE_LUA",
    "JWT_FILTER",
    "PROVIDER",
    "STRIP_FILTER",
    "add_envoy_edge",
    "edge_filters",
]

PROVIDER = "lanes"
# Filter names are ours (the type comes from ``@type``): unique even next to Istio's own
# jwt_authn, so Istio EnvoyFilter patches can place one after another by name.
STRIP_FILTER = "lanes.edge.strip"
JWT_FILTER = "lanes.edge.jwt_authn"
DROP_FILTER = "lanes.edge.drop_token"
_TYPE_URL = "type.googleapis.com/envoy."
EDGE_LUA: str = resources.files("lane_router").joinpath("data/edge.lua").read_text("utf-8")


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _edge_lua(topology: Topology) -> str:
    return (
        "local LANES_HEADER, LANES_BAGGAGE_KEY = "
        f"{_lua_string(topology.header)}, {_lua_string(topology.baggage_key)}\n{EDGE_LUA}"
    )


def edge_filters(
    topology: Topology,
    jwks_json: str,
    *,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    leeway: int = DEFAULT_LEEWAY,
) -> list[dict[str, Any]]:
    """The three edge filters for ``topology`` with the (already validated) JWKS text."""
    return [
        {
            "name": STRIP_FILTER,
            "typed_config": {
                "@type": _TYPE_URL + "extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": _edge_lua(topology)},
            },
        },
        {
            "name": JWT_FILTER,
            "typed_config": {
                "@type": _TYPE_URL + "extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {
                    PROVIDER: {
                        "issuer": issuer,
                        "audiences": [audience],
                        "local_jwks": {"inline_string": jwks_json},
                        "from_headers": [{"name": DEFAULT_TOKEN_HEADER}],
                        "forward": False,
                        "require_expiration": True,
                        "clock_skew_seconds": leeway,
                        "claim_to_headers": [
                            {"header_name": topology.header, "claim_name": "lane"}
                        ],
                        "clear_route_cache": True,
                        # A QA session sends one token on every request: verify it once.
                        "jwt_cache_config": {"jwt_cache_size": 1024},
                    }
                },
                "rules": [
                    {
                        "match": {"prefix": "/"},
                        "requires": {
                            "requires_any": {
                                "requirements": [
                                    {"provider_name": PROVIDER},
                                    {"allow_missing_or_failed": {}},
                                ]
                            }
                        },
                    }
                ],
            },
        },
        {
            "name": DROP_FILTER,
            "typed_config": {
                "@type": _TYPE_URL + "extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {"request_mutations": [{"remove": DEFAULT_TOKEN_HEADER}]},
            },
        },
    ]


def add_envoy_edge(
    bootstrap: dict[str, Any],
    topology: Topology,
    keyset: KeySet,
    jwks_json: str,
    **options: Any,
) -> dict[str, Any]:
    """Put the edge filters first in every HTTP connection manager of ``bootstrap``.
    ``keyset`` is the parsed ``jwks_json``: only a JWKS ``load_jwks`` accepted is rendered."""
    if not keyset.keys:
        raise ValueError("edge: the JWKS holds no key")
    filters = edge_filters(topology, jwks_json, **options)
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                hcm = network_filter["typed_config"]
                if "http_filters" in hcm:
                    hcm["http_filters"][:0] = filters
    return bootstrap
