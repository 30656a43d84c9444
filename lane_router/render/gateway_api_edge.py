"""What Gateway API can do at the edge (docs/design.md, "The edge"): remove client lane headers.

Gateway API has no standard JWT verification (implementations offer it as extensions, e.g.
Envoy Gateway's ``SecurityPolicy`` with ``claimToHeaders``), and ``RequestHeaderModifier``
removes whole headers, never one ``baggage`` member. So the HTTPRoute bound to the ingress
Gateway removes ``x-lane``, the token header and the whole ``baggage`` header: every request
through it is baseline traffic, and no client can pick a lane. To let QA pick lanes with a
signed token, put the sidecar (``--edge``) or the rendered Envoy edge in front instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lane_router._edge_wire import DEFAULT_TOKEN_HEADER
from lane_router._topology import Topology
from lane_router.render._common import DNS_LABEL, DNS_NAME, MANAGED_BY
from lane_router.render.gateway_api import API_VERSION

__all__ = ["render_gateway_api_edge"]


def render_gateway_api_edge(
    topology: Topology, *, gateway: str, hosts: Sequence[str], entry_service: str
) -> dict[str, Any]:
    """An HTTPRoute on ``gateway`` ("namespace/name") for ``hosts`` to ``entry_service`` that
    strips every client lane carrier."""
    ns, sep, name = gateway.partition("/")
    if not sep or DNS_LABEL.fullmatch(ns) is None or DNS_NAME.fullmatch(name) is None:
        raise ValueError(f"gateway {gateway!r}: expected NAMESPACE/NAME")
    if entry_service not in topology.services:
        raise ValueError(f"entry service {entry_service!r} is not in the topology")
    if not hosts or any(DNS_NAME.fullmatch(h) is None for h in hosts):
        raise ValueError("--external-host: at least one, each a DNS name")
    service_ns = topology.namespace_of(entry_service)
    backend: dict[str, Any] = {"name": entry_service, "port": topology.services[entry_service].port}
    if service_ns != ns:
        backend["namespace"] = service_ns  # needs a ReferenceGrant in the service's namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {"name": f"{entry_service}-edge", "namespace": ns, "labels": dict(MANAGED_BY)},
        "spec": {
            "parentRefs": [{"name": name, "namespace": ns}],
            "hostnames": sorted(set(hosts)),
            "rules": [
                {
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {
                                "remove": [topology.header, "baggage", DEFAULT_TOKEN_HEADER]
                            },
                        }
                    ],
                    "backendRefs": [backend],
                }
            ],
        },
    }
