"""Leader election, the command line, RBAC and cluster-wide mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml
from k8s_checks import converged, routed_subsets, settle, violations
from k8s_objects import NS, deployment, lane, service
from k8s_schemas import REPO, load_docs


def _seed(double, ns: str = NS) -> None:
    for s in ("productpage", "reviews"):
        double.put(service(s, ns=ns))
        double.put(deployment(s, "baseline", ns=ns))
    double.put(lane("feature-a", ns=ns))


def _agents(double, since: int = 0) -> set[str]:
    return {
        e.agent
        for e in double.log[since:]
        if e.write and e.kind != "Lease" and 200 <= e.status < 300
    }


def test_two_replicas_only_the_leader_writes(double, start_controller) -> None:
    _seed(double)
    a = start_controller("replica-a")
    b = start_controller("replica-b")
    double.wait_for(lambda: converged(double, NS), what="routes")
    double.put(deployment("reviews", "feature-a"))
    double.wait_for(
        lambda: "feature-a" in routed_subsets(double.get("VirtualService", NS, "reviews")),
        what="the lane route",
    )
    lease = double.get("Lease", NS, "traffic-lanes-controller")
    holder = lease["spec"]["holderIdentity"]
    leader, standby = (a, b) if holder == "replica-a" else (b, a)
    settle(double, leader)
    assert leader.is_leader() and not standby.is_leader()
    assert _agents(double) == {f"traffic-lanes-controller ({holder})"}

    # The leader stops (releasing the Lease); the standby takes over and writes from then on.
    since = len(double.log)
    leader.stop()
    double.wait_for(standby.is_leader, what="the standby to take the lease")
    double.put(deployment("productpage", "feature-a"))
    double.wait_for(lambda: converged(double, NS), what="routes from the new leader")
    other = "replica-b" if holder == "replica-a" else "replica-a"
    assert _agents(double, since) == {f"traffic-lanes-controller ({other})"}
    assert double.get("Lease", NS, "traffic-lanes-controller")["spec"]["leaseTransitions"] >= 1
    assert violations(double, NS) == []


def test_cluster_wide_mode_keeps_namespaces_apart(double, start_controller) -> None:
    _seed(double, "shop")
    _seed(double, "blog")
    double.put(deployment("reviews", "feature-a", ns="blog"))
    start_controller(namespace=None)
    for ns in ("shop", "blog"):
        double.wait_for(lambda ns=ns: converged(double, ns, export_to=None), what=f"{ns} routes")
    assert "feature-a" in routed_subsets(double.get("VirtualService", "blog", "reviews"))
    assert routed_subsets(double.get("VirtualService", "shop", "reviews")) == {"baseline"}
    assert "exportTo" not in double.get("VirtualService", "shop", "reviews")["spec"]


def _allowed(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules
    )


def test_rbac_allows_every_request_the_controller_made(double, start_controller) -> None:
    from kube_double import PLURAL

    _seed(double)
    double.put(deployment("reviews", "feature-a"))
    double.put(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "productpage", "namespace": NS},
            "spec": {"hosts": ["productpage"]},
        }
    )
    ctl = start_controller(namespace=None)
    double.wait_for(lambda: double.get("VirtualService", NS, "reviews"), what="routes")
    double.wait_for(lambda: double.objects("Event", NS), what="the conflict event")
    double.remove("Service", NS, "reviews")
    double.wait_for(lambda: double.get("VirtualService", NS, "reviews") is None, what="delete")
    settle(double, ctl)
    rules = [
        rule
        for doc in load_docs(REPO / "k8s" / "rbac.yaml")
        if doc["kind"] in ("ClusterRole", "Role")
        for rule in doc["rules"]
    ]
    seen = set()
    for e in double.log:
        group = PLURAL[e.kind][0]
        resource = PLURAL[e.kind][2] + (f"/{e.subresource}" if e.subresource else "")
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            e.method, "watch" if e.watch else ("get" if e.name else "list")
        )
        seen.add((group, resource, verb))
        assert _allowed(rules, group, resource, verb), (group, resource, verb)
    assert ("networking.istio.io", "virtualservices", "delete") in seen
    assert ("lanes.traffic-lanes.io", "trafficlanes/status", "patch") in seen
    assert ("", "events", "create") in seen


def _kubeconfig(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "double", "cluster": {"server": url}}],
                "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
                "contexts": [
                    {"name": "double", "context": {"cluster": "double", "user": "tester"}}
                ],
                "current-context": "double",
            }
        )
    )
    return path


def test_lanes_controller_command_serves_health_and_metrics(double, tmp_path) -> None:
    _seed(double)
    lanes = Path(sys.executable).with_name("lanes")
    proc = subprocess.Popen(
        [
            str(lanes),
            "controller",
            "--kubeconfig",
            str(_kubeconfig(tmp_path, double.url)),
            "--namespace",
            NS,
            "--metrics",
            "127.0.0.1:0",
            "--identity",
            "cli",
            "--lease-duration",
            "15",  # long enough that a loaded machine never loses the lease mid-test
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stderr.readline()
        assert "/healthz and /metrics on 127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1])
        double.wait_for(lambda: converged(double, NS), what="routes from the command")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert "lanes_controller_leader 1" in text
        assert 'lanes_controller_writes_total{kind="VirtualService",verb="apply"} 2' in text
        assert any("(cli)" in e.agent for e in double.log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            code = proc.wait(5)
        proc.stderr.close()
    assert code == 0
    # A clean stop hands the lease over at once.
    assert "holderIdentity" not in double.get("Lease", NS, "traffic-lanes-controller")["spec"]


def test_missing_kubernetes_client_is_a_clear_error() -> None:
    code = (
        "import sys; sys.modules['kubernetes'] = None\n"
        "from lane_router.cli import main\n"
        "sys.exit(main(['controller']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert out.returncode == 2
    assert "pip install 'traffic-lanes[controller]'" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_kubeconfig_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text(json.dumps({"apiVersion": "v1", "kind": "Config"}))
    lanes = Path(sys.executable).with_name("lanes")
    out = subprocess.run(
        [str(lanes), "controller", "--kubeconfig", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "no usable Kubernetes configuration" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_leader_cut_off_from_its_lease_stops_writing_before_the_other_starts(
    double, start_controller
) -> None:
    _seed(double)
    a = start_controller("replica-a")
    double.wait_for(a.is_leader, what="replica-a to lead")
    b = start_controller("replica-b")
    double.wait_for(lambda: converged(double, NS), what="routes")
    settle(double, a)
    # replica-a can no longer reach the Lease (its other calls still work).
    double.fail(10**6, status=503, when=lambda e: e.kind == "Lease" and "replica-a" in e.agent)
    double.wait_for(b.is_leader, timeout=30, what="replica-b to take over")
    assert not a.is_leader()
    double.put(deployment("reviews", "feature-a"))
    double.wait_for(
        lambda: "feature-a" in routed_subsets(double.get("VirtualService", NS, "reviews")),
        what="the new leader's route",
    )
    writers = [
        e.agent for e in double.log if e.write and e.kind != "Lease" and 200 <= e.status < 300
    ]
    first_b = writers.index("traffic-lanes-controller (replica-b)")
    assert set(writers[:first_b]) == {"traffic-lanes-controller (replica-a)"}
    assert set(writers[first_b:]) == {"traffic-lanes-controller (replica-b)"}
