"""A topology with every routing shape, and a request corpus over it.

The prediction for a request is the product contract: the lane is what ``lanes_sdk``'s wire rules
extract (design.md order: a valid ``x-lane``, else the first valid baggage member), the version
is ``Topology.resolve``. Renderer tests check each data plane lands every request there.

Left out on purpose (W3C leaves duplicate keys undefined, and no header-matching data plane can
order them): one request carrying two *different valid* lanes in the same carrier, such as
``baggage: lane=a,lane=b`` or two ``x-lane`` lines naming two lanes.
"""

from __future__ import annotations

from lane_router import Resolution, Topology, loads_topology
from lanes_sdk.wire import lane_from_headers

__all__ = ["TOPOLOGY_YAML", "predict", "requests", "topology"]

# feature-b -> feature-a -> baseline; feature-c -> feature-b -> ...; qa -> hotfix (strict): a
# chain ending in a strict lane; feature-ab exists to catch prefix collisions with feature-a;
# idle deploys nothing; ratings lives in another namespace.
TOPOLOGY_YAML = """\
namespace: shop
lanes:
  feature-a: {}
  feature-ab: {}
  feature-b: {fallback: feature-a}
  feature-c: {fallback: feature-b}
  hotfix: {strict: true}
  qa: {fallback: hotfix}
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
      feature-ab: ["127.0.0.1:9085"]
      hotfix: ["127.0.0.1:9086"]
  details:
    port: 9080
    versions:
      baseline: ["127.0.0.1:9087"]
      feature-b: ["127.0.0.1:9088"]
      qa: ["127.0.0.1:9089"]
  ratings:
    port: 8080
    namespace: data
    versions:
      baseline: ["[::1]:9090"]
"""

UNKNOWN = "nope"  # a valid name no lane declares
INVALID = ["Feature-A", "feature_a", "-a", "a" * 64, "feature-a x", "féature", ""]


def topology() -> Topology:
    return loads_topology(TOPOLOGY_YAML, source="corpus")


Headers = list[tuple[str, str]]


def requests(topo: Topology) -> list[tuple[str, Headers]]:
    """(label, headers) covering every lane by every carrier, invalid and unknown lanes."""
    out: list[tuple[str, Headers]] = [("no lane", [])]
    lanes = [*topo.all_lanes, UNKNOWN]
    others = [x for x in topo.lanes if x != "feature-a"]
    for lane in lanes:
        out += [
            (f"x-lane {lane}", [("x-lane", lane)]),
            (f"X-Lane upper-case name {lane}", [("X-Lane", lane)]),
            (f"x-lane with OWS {lane}", [("x-lane", f" {lane}\t")]),
            (f"baggage {lane}", [("baggage", f"lane={lane}")]),
            (f"baggage first of members {lane}", [("baggage", f"lane={lane},userId=42,k=v")]),
            (f"baggage last with spaces {lane}", [("baggage", f"userId=42 , lane = {lane}")]),
            (f"baggage middle with props {lane}", [("Baggage", f"a=1,lane={lane};ttl=60;x,b=2")]),
            (
                f"baggage in second header {lane}",
                [("baggage", "userId=42"), ("baggage", f"session=s1, lane={lane}")],
            ),
            (
                f"baggage in first of two headers {lane}",
                [("baggage", f"lane={lane};p"), ("baggage", "userId=42")],
            ),
            (
                f"x-lane {lane} beats baggage",
                [("x-lane", lane), ("baggage", f"lane={others[len(lane) % len(others)]}")],
            ),
            (
                f"baggage {lane} beats nothing-valid x-lane",
                [("x-lane", "NOT VALID"), ("baggage", f"lane={lane}")],
            ),
            (f"baggage {lane} with empty x-lane", [("x-lane", ""), ("baggage", f"lane={lane}")]),
            (
                f"valid unknown x-lane beats baggage {lane}",
                [("x-lane", UNKNOWN), ("baggage", f"lane={lane}")],
            ),
            (
                f"invalid then valid x-lane lines {lane}",
                [("x-lane", "BAD"), ("x-lane", lane)],
            ),
            (f"baggage key suffix is not the key {lane}", [("baggage", f"xlane={lane}")]),
            (f"baggage key prefix is not the key {lane}", [("baggage", f"lane2={lane}")]),
            (f"baggage value prefix {lane}", [("baggage", f"lane={lane}x")]),
            (
                f"invalid baggage member then valid {lane}",
                [("baggage", f"lane=BAD,lane={lane}")],
            ),
        ]
    for bad in INVALID:
        out += [
            (f"invalid x-lane {bad!r}", [("x-lane", bad)]),
            (f"invalid baggage {bad!r}", [("baggage", f"lane={bad}")]),
            (
                f"invalid x-lane {bad!r} + baggage feature-a",
                [("x-lane", bad), ("baggage", "lane=feature-a")],
            ),
        ]
    return out


def predict(topo: Topology, service: str, headers: Headers) -> Resolution:
    """The contract's answer: extract the lane (design.md order), then resolve."""
    xl = [v for k, v in headers if k.lower() == topo.header]
    bg = [v for k, v in headers if k.lower() == "baggage"]
    lane = lane_from_headers(xl, bg, baggage_key=topo.baggage_key)
    res = topo.resolve(service, lane)
    assert res is not None
    return res
