"""A topology with canaries of every shape, and a request corpus (headers x paths) over it.

The prediction is the product contract: extract the lane (design.md order), resolve it, and for
a baseline request to a service with a canary apply ``Canary.takes`` (content matches first,
then the weight). A prediction is either one version, or ``None`` for "split by the weight".
"""

from __future__ import annotations

from routing_corpus import requests as lane_requests

from lane_router import Topology, loads_topology
from lanes_sdk.wire import lane_from_headers

__all__ = ["CANARY_YAML", "PATHS", "canary_requests", "predict", "topology"]

# reviews: weighted canary with three content matches (a header, a URI prefix, and header AND
# exact URI); feature-c and idle do not deploy reviews (served by the baseline), hotfix is strict
# and does not deploy it (503). details: weight 0, no match (the canary gets nothing).
# ratings: weight 100 (everything baseline goes to v9), a regex header match.
# productpage: no canary.
CANARY_YAML = """\
namespace: shop
lanes:
  feature-a: {}
  feature-b: {fallback: feature-a}
  feature-c: {}
  hotfix: {strict: true}
  idle: {}
services:
  productpage:
    port: 9080
    versions:
      baseline: ["127.0.0.1:9081"]
      feature-c: ["127.0.0.1:9082"]
  reviews:
    port: 9080
    versions:
      baseline: ["127.0.0.1:9083"]
      feature-a: ["127.0.0.1:9084"]
      v2: ["127.0.0.1:9085"]
    canary:
      version: v2
      weight: 10
      match:
        - headers: {x-canary: {exact: "1"}}
        - uri: {prefix: /beta/}
        - headers: {x-user: {regex: "(alice|bob)-[0-9]+"}, x-tenant: {prefix: acme}}
          uri: {exact: /cart}
  details:
    port: 9080
    versions:
      baseline: ["127.0.0.1:9087"]
      feature-b: ["127.0.0.1:9088"]
      hotfix: ["127.0.0.1:9089"]
      v3: ["127.0.0.1:9090"]
    canary: {version: v3, weight: 0}
  ratings:
    port: 8080
    namespace: data
    versions:
      baseline: ["[::1]:9091"]
      v9: ["[::1]:9092"]
    canary:
      version: v9
      weight: 100
      match: [{headers: {x-canary: {regex: "[0-9]+"}}}]
"""

PATHS = ["/", "/beta/", "/beta/x?y=1", "/beta", "/betax/", "/cart", "/cart?id=1", "/cart/1"]
CANARY_HEADERS: list[tuple[str, list[tuple[str, str]]]] = [
    ("none", []),
    ("x-canary 1", [("x-canary", "1")]),
    ("x-canary 1 OWS", [("X-Canary", " 1 ")]),
    ("x-canary 2", [("x-canary", "2")]),
    ("x-canary 1 in second line", [("x-canary", "0"), ("x-canary", "1")]),
    ("alice acme", [("x-user", "alice-7"), ("x-tenant", "acme-eu")]),
    ("alice no tenant", [("x-user", "alice-7")]),
    ("alice partial", [("x-user", "alice-7x"), ("x-tenant", "acme")]),
    ("bob acme", [("x-user", "bob-1"), ("x-tenant", "acme")]),
]

Headers = list[tuple[str, str]]


def topology() -> Topology:
    return loads_topology(CANARY_YAML, source="canary corpus")


def canary_requests(topo: Topology) -> list[tuple[str, Headers, str]]:
    """(label, headers, path): every lane carrier shape x every canary header shape x paths."""
    out = []
    lanes = lane_requests(topo)
    for label, headers in lanes:
        for clabel, cheaders in CANARY_HEADERS:
            for path in PATHS if clabel in ("none", "alice acme") else ["/", "/cart"]:
                out.append((f"{label} + {clabel} {path}", [*headers, *cheaders], path))
    return out


def predict(topo: Topology, service: str, headers: Headers, path: str) -> tuple[str, str | None]:
    """(effective lane, version): version None means "split by the canary's weight"; "503" a
    strict miss."""
    xl = [v for k, v in headers if k.lower() == topo.header]
    bg = [v for k, v in headers if k.lower() == "baggage"]
    lane = lane_from_headers(xl, bg, baggage_key=topo.baggage_key)
    res = topo.resolve(service, lane)
    assert res is not None
    if res.strict_miss:
        return res.lane, "503"
    canary = res.canary
    if canary is None:
        return res.lane, res.serving

    def values(name: str) -> list[str]:
        return [v.strip(" \t") for k, v in headers if k.lower() == name]

    bare = path.partition("?")[0]
    if canary.takes(values, bare, roll=0.999999):  # a match, or weight 100
        return res.lane, canary.version
    if not canary.takes(values, bare, roll=0.0):  # weight 0, no match
        return res.lane, res.serving
    return res.lane, None
