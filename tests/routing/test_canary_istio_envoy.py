"""The rendered Istio canary routes, run by a real Envoy (istiod's translation, as in
``test_routing_istio_envoy``): Envoy's own RE2, its path matching (query stripped for ``path`` and
``safe_regex``, kept for ``prefix``), header normalisation and repeated lines decide, and every
answer must be what the model predicts: the lane's version, the canary, or the weighted split."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest
from canary_corpus import canary_requests, predict, topology
from envoyproc import EnvoyProcess, running_envoy
from test_routing_istio_envoy import _bootstrap, _send

TOPO = topology()


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyProcess]:
    bootstrap = _bootstrap(TOPO)
    workdir = tmp_path_factory.mktemp("istio-canary-envoy")
    with running_envoy(bootstrap, workdir=workdir, validate=True) as proxy:
        yield proxy


@pytest.mark.parametrize("service", ["reviews", "ratings", "details"])
def test_real_envoy_routes_every_canary_request_where_the_model_predicts(
    envoy: EnvoyProcess, service: str
) -> None:
    host, port = envoy.address()
    fqdn = f"{service}.{TOPO.namespace_of(service)}.svc.cluster.local"
    canary = TOPO.services[service].canary
    conn = http.client.HTTPConnection(host, port, timeout=10)
    wrong = []
    sent = 0
    try:
        for label, headers, path in canary_requests(TOPO):
            if any(not v.isascii() for _, v in headers):
                continue  # Envoy's codec may refuse obs-text; the Python evaluator covers it
            lane, want = predict(TOPO, service, headers, path)
            status, body = _send(conn, service, headers, path)
            sent += 1
            if want == "503":
                ok = status == 503
            elif want is None:
                split = f"{TOPO.baseline}={100 - canary.weight} {canary.version}={canary.weight}"
                ok = (status, body) == (200, f"route {fqdn} {split}")
            else:
                ok = (status, body) == (200, f"route {fqdn} {want}=100")
            if not ok:
                wrong.append(f"{label} (lane {lane}): {status} {body!r}, model {want}")
    finally:
        conn.close()
    assert sent > 3000
    assert not wrong, "\n".join(wrong[:20])
