"""The Istio ingress gateway as an edge (``lanes render --format istio --gateway NS/NAME
--jwks FILE``): docs/design.md, "The edge".

Two ways, both rendered on the gateway workload only (``workloadSelector`` / ``selector``):

* ``envoy-filter`` (default): one EnvoyFilter (context ``GATEWAY``) inserting, first in the
  chain and in this order, the three filters of ``lanes render --format envoy --edge``: strip
  client lane headers, Envoy's ``jwt_authn`` with the JWKS inline and
  ``allow_missing_or_failed``, drop the token header. The same filters are tested on a real
  Envoy; the contract holds exactly (a bad token is baseline, never a 401).
* ``request-authentication``: Istio's own ``RequestAuthentication`` (``jwtRules`` with the JWKS
  inline, ``fromHeaders``/``fromCookies``, ``outputClaimToHeaders`` -> ``x-lane``) plus an
  EnvoyFilter that strips client lane headers before it. Istio answers **401** to a request
  whose token is present but invalid (only a missing token passes), so a stale QA cookie breaks
  the page: use it only where every token holder is a tester.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from lane_router._edge_wire import (
    DEFAULT_AUDIENCE,
    DEFAULT_COOKIE,
    DEFAULT_ISSUER,
    DEFAULT_TOKEN_HEADER,
)
from lane_router._topology import Topology
from lane_router.render._common import MANAGED_BY
from lane_router.render.envoy_edge import STRIP_FILTER, edge_filters

__all__ = ["MODES", "render_istio_edge"]

MODES = ("envoy-filter", "request-authentication")
_HCM = "envoy.filters.network.http_connection_manager"


def _patch(value: dict[str, Any], operation: str, after: str | None = None) -> dict[str, Any]:
    listener: dict[str, Any] = {"filterChain": {"filter": {"name": _HCM}}}
    if after is not None:
        listener["filterChain"]["filter"]["subFilter"] = {"name": after}
    return {
        "applyTo": "HTTP_FILTER",
        "match": {"context": "GATEWAY", "listener": listener},
        "patch": {"operation": operation, "value": value},
    }


def _chain(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Patches putting ``filters`` first, in order: the first INSERT_FIRST, each next one
    INSERT_AFTER the previous (by its unique name)."""
    patches = [_patch(filters[0], "INSERT_FIRST")]
    for prev, cur in itertools.pairwise(filters):
        patches.append(_patch(cur, "INSERT_AFTER", after=prev["name"]))
    return patches


def render_istio_edge(
    topology: Topology,
    *,
    namespace: str,
    selector: dict[str, str],
    jwks_json: str,
    mode: str = "envoy-filter",
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
) -> list[dict[str, Any]]:
    """The gateway edge objects (in ``namespace``, selecting the gateway pods by ``selector``)."""
    if mode not in MODES:
        raise ValueError(f"edge mode {mode!r}: use one of {', '.join(MODES)}")
    metadata = {"name": "traffic-lanes-edge", "namespace": namespace, "labels": dict(MANAGED_BY)}
    filters = edge_filters(topology, jwks_json, issuer=issuer, audience=audience)
    if mode == "request-authentication":
        filters = [f for f in filters if f["name"] == STRIP_FILTER]
    envoy_filter = {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata,
        "spec": {"workloadSelector": {"labels": dict(selector)}, "configPatches": _chain(filters)},
    }
    if mode == "envoy-filter":
        return [envoy_filter]
    authn = {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": dict(metadata),
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            "jwtRules": [
                {
                    "issuer": issuer,
                    "audiences": [audience],
                    "jwks": json.dumps(json.loads(jwks_json), sort_keys=True),
                    "fromHeaders": [{"name": DEFAULT_TOKEN_HEADER}],
                    "fromCookies": [DEFAULT_COOKIE],
                    "outputClaimToHeaders": [{"header": topology.header, "claim": "lane"}],
                    "forwardOriginalToken": False,
                }
            ],
        },
    }
    return [envoy_filter, authn]
