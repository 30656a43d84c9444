"""Any canary, any request: the Istio and Gateway API renderings decide as ``Canary.takes`` does
(the independent evaluators of ``routing_eval`` read the objects)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from routing_eval import gamma_rule, istio_outcome

from lane_router import Canary, ContentMatch, Lane, Service, Topology
from lane_router.render.gateway_api import render_gateway_api_host
from lane_router.render.istio import render_istio_host

NAMES = ("x-a", "x-b", "baggage")
VALUES = ("", "1", "12", "a", "a.b", "a+", "/p")
PATHS = ("/", "/p", "/p/", "/p/q", "/pq", "/p?x=1", "/a.b")


def _value(kind: str, text: str) -> str:
    return re.escape(text) + ".?" if kind == "regex" else text


conditions = st.tuples(st.sampled_from(("exact", "prefix", "regex")), st.sampled_from(VALUES))
matches = st.builds(
    lambda headers, uri: ContentMatch(
        tuple(sorted((n, k, _value(k, v)) for n, (k, v) in headers.items())), uri
    ),
    st.dictionaries(st.sampled_from(NAMES), conditions, max_size=2),
    st.one_of(
        st.none(),
        st.tuples(st.sampled_from(("exact", "prefix")), st.sampled_from(("/p", "/p/", "/a.b"))),
        st.just(("regex", "/p(/.*)?")),
    ),
).filter(lambda m: m.headers or m.uri)
requests = st.tuples(
    st.lists(st.tuples(st.sampled_from((*NAMES, "x-lane")), st.sampled_from(VALUES)), max_size=3),
    st.sampled_from(PATHS),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.lists(matches, max_size=3),
    st.sampled_from((0, 10, 100)),
    st.lists(requests, min_size=1, max_size=10),
)
def test_renderings_decide_as_the_model(cmatches, weight, reqs) -> None:
    canary = Canary("v2", weight, tuple(cmatches))
    topo = Topology.build(
        lanes=[Lane("a")],
        services=[Service("web", {"baseline": (), "v2": ()}, canary=canary)],
    )
    _, vs = render_istio_host(topo, "web")
    backends, routes = render_gateway_api_host(topo, "web")
    for headers, path in reqs:
        if any(n.lower() == "x-lane" for n, _ in headers):
            continue  # lanes are the corpus tests' business; "a" is a lane served by baseline
        if any(sum(n == m for n, _ in headers) > 1 for m in NAMES):
            continue  # repeated lines: per-line in Istio, joined in Gateway API

        def values(name: str, headers=headers) -> list[str]:
            return [v for n, v in headers if n == name]

        bare = path.partition("?")[0]
        if canary.takes(values, bare, 0.999999):
            want = (("v2", 100),)
        elif not canary.takes(values, bare, 0.0):
            want = (("baseline", 100),)
        else:
            want = (("baseline", 100 - weight), ("v2", weight))
        assert istio_outcome(vs["spec"], headers, path=path).split == want, (headers, path)
        refs = gamma_rule(routes, headers, path)
        lanes = {b["metadata"]["name"]: b["spec"]["selector"]["lane"] for b in backends}
        got = tuple((lanes[r["name"]], r.get("weight", 100)) for r in refs)
        assert got == want, (headers, path, refs)
