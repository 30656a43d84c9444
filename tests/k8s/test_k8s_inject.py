"""``lanes inject`` and the ``k8s/sidecar/`` component: what they add, validated against the
Kubernetes 1.33 strict schemas; idempotence; everything else byte for byte."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from k8s_schemas import REPO, k8s_validator, load_docs

from lane_router._inject import (
    CONTAINER_NAME,
    DEFAULT_NO_PROXY,
    SERVICE_ENV,
    InjectOptions,
    inject_stream,
    sidecar_container,
)

SAMPLE = REPO / "k8s" / "sample" / "app.yaml"
OPTS = InjectOptions(image="ghcr.io/traffic-lanes/traffic-lanes:0.1.0")

OTHERS = """\
# a comment that must survive
apiVersion: v1
kind: ConfigMap
metadata: {name: keep-me}   # flow style kept
data:
  x: "1"
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      initContainers:
      - {name: migrate, image: busybox:1.36}
      containers:
      - name: db
        image: postgres:17
        env:
        - {name: HTTP_PROXY, value: "http://corp-proxy:3128"}
        - {name: PGDATA, value: /data}
      volumes:
      - {name: data, emptyDir: {}}
---
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: DaemonSet
  metadata: {name: agent}
  spec:
    selector: {matchLabels: {component: agent}}
    template:
      metadata: {labels: {component: agent}}
      spec:
        containers: [{name: agent, image: agent:1}]
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: opted-out}
  spec:
    selector: {matchLabels: {app: o}}
    template:
      metadata: {labels: {app: o}, annotations: {traffic-lanes.io/inject: "false"}}
      spec:
        containers: [{name: o, image: o:1}]
"""


def _errors(obj: dict) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in k8s_validator(obj["kind"]).iter_errors(obj)
    ]


def _pod(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def test_injected_sample_validates_and_routes_app_traffic_through_the_sidecar() -> None:
    text = SAMPLE.read_text(encoding="utf-8")
    out = inject_stream(text, OPTS)
    docs = [d for d in yaml.safe_load_all(out) if d]
    workloads = [d for d in docs if d["kind"] == "Deployment"]
    assert workloads and len(docs) == len(load_docs(SAMPLE))
    for dep in workloads:
        assert _errors(dep) == [], dep["metadata"]["name"]
        pod = _pod(dep)
        (sidecar,) = pod["initContainers"]
        assert sidecar == sidecar_container(OPTS) and sidecar["restartPolicy"] == "Always"
        # --service is the pod's app label (the controller's), expanded by the kubelet.
        assert sidecar["args"][-2:] == ["--service", f"$({SERVICE_ENV})"]
        assert "app" in dep["spec"]["template"]["metadata"]["labels"]
        assert sidecar["env"] == [
            {
                "name": SERVICE_ENV,
                "valueFrom": {
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels['app']"}
                },
            }
        ]
        sec = sidecar["securityContext"]
        assert sec["runAsNonRoot"] and sec["readOnlyRootFilesystem"]
        assert sec["capabilities"] == {"drop": ["ALL"]}
        assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {"name": "lanes-config", "configMap": {"name": "traffic-lanes"}} in pod["volumes"]
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["HTTP_PROXY"] == env["http_proxy"] == "http://127.0.0.1:15001"
            assert env["NO_PROXY"] == env["no_proxy"]
            assert set(DEFAULT_NO_PROXY) <= set(env["NO_PROXY"].split(","))
            # Service names must reach the sidecar: no domain suffix in NO_PROXY but the API's.
            suffixes = [h for h in env["NO_PROXY"].split(",") if h.startswith(".") or "svc" in h]
            assert all(h.startswith("kubernetes.") for h in suffixes)
    # Untouched documents are byte-identical: the Namespace and the Services.
    first = text.split("\n---\n")[0]
    assert out.startswith(first + "\n---\n")
    assert inject_stream(out, OPTS) == out  # idempotent


def test_statefulset_daemonset_list_opt_out_and_what_is_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = inject_stream(OTHERS, OPTS)
    assert "HTTP_PROXY=http://corp-proxy:3128 replaced" in capsys.readouterr().err
    assert out.startswith(OTHERS.split("---\n")[0])  # the ConfigMap, comments and all
    cm, sts, lst = (d for d in yaml.safe_load_all(out) if d)
    assert _errors(cm) == [] and _errors(sts) == []
    assert [c["name"] for c in _pod(sts)["initContainers"]] == [CONTAINER_NAME, "migrate"]
    assert [v["name"] for v in _pod(sts)["volumes"]] == ["data", "lanes-config"]
    env = _pod(sts)["containers"][0]["env"]
    assert [e["name"] for e in env] == [
        "HTTP_PROXY",
        "PGDATA",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
    ]
    # db's pods are labelled app: db (downward API); a workload without the label: its name.
    assert _pod(sts)["initContainers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['app']"
    )
    ds, opted_out = lst["items"]
    assert _errors(ds) == [] and _pod(ds)["initContainers"][0]["name"] == CONTAINER_NAME
    assert _pod(ds)["initContainers"][0]["env"] == [{"name": SERVICE_ENV, "value": "agent"}]
    assert "initContainers" not in _pod(opted_out)
    assert inject_stream(out, OPTS) == out


def test_cli_reads_files_and_stdin() -> None:
    cmd = [sys.executable, "-m", "lane_router.cli", "inject", "--image", OPTS.image]
    one = subprocess.run(
        [*cmd, "-f", str(SAMPLE), "--no-proxy", "metrics.internal"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    piped = subprocess.run(
        [*cmd, "--no-proxy", "metrics.internal"],
        input=SAMPLE.read_text(encoding="utf-8"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert one == piped and "metrics.internal" in one
    assert one == inject_stream(
        SAMPLE.read_text(encoding="utf-8"),
        InjectOptions(image=OPTS.image, no_proxy=("metrics.internal",)),
    )


def test_kustomize_component_adds_the_same_sidecar(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        why = "kubectl not found: it is in .ci/apt-packages.txt, run `make system-deps` as root"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    workloads = [d for d in load_docs(SAMPLE) if d["kind"] == "Deployment"]
    for d in workloads[:2]:
        d["metadata"].setdefault("labels", {})["traffic-lanes.io/inject"] = "true"
    (tmp_path / "app.yaml").write_text(yaml.safe_dump_all(workloads))
    component = os.path.relpath(REPO / "k8s" / "sidecar", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [app.yaml]\ncomponents: [{component}]\n"
    )
    out = subprocess.run(
        [kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    built = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out.stdout) if d}
    for n, d in enumerate(workloads):
        pod = _pod(built[d["metadata"]["name"]])
        assert _errors(built[d["metadata"]["name"]]) == []
        if n < 2:
            assert pod["initContainers"] == [sidecar_container(OPTS)]
            assert {"name": "lanes-config", "configMap": {"name": "traffic-lanes"}} in (
                pod["volumes"]
            )
        else:
            assert "initContainers" not in pod


def test_sidecar_takes_an_empty_service_from_an_unlabelled_pod() -> None:
    """`$(LANES_SERVICE)` is empty in a pod without the app label: the sidecar still starts
    (with a WARNING at run time), a bad name is refused."""
    import argparse

    from lane_router._cmd.sidecar import add_arguments

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    assert parser.parse_args(["-f", "x", "--service", ""]).service == ""
    assert parser.parse_args(["-f", "x", "--service", "reviews"]).service == "reviews"
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["-f", "x", "--service", "Not_A_Label"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (": bad: [\n", "document 1: invalid YAML"),
        (
            "kind: Deployment\napiVersion: apps/v1\nmetadata: {name: x}\nspec: 3\n",
            "Deployment/x: spec must be a mapping",
        ),
        (
            "kind: Deployment\napiVersion: apps/v1\nmetadata: {name: x}\n"
            "spec: {template: {spec: {containers: [{name: a, env: [5]}]}}}\n",
            "spec.template.spec.containers[0].env[0] must be a mapping",
        ),
        (
            "kind: List\nitems:\n- 7\n- kind: DaemonSet\n  apiVersion: apps/v1\n"
            "  metadata: {name: d}\n  spec: {template: {spec: {containers: 5}}}\n",
            "items[1]: DaemonSet/d: spec.template.spec.containers must be a list",
        ),
    ],
    ids=["yaml", "spec", "env-entry", "list-item"],
)
def test_bad_input_is_an_error_naming_it_and_prints_nothing(text: str, message: str) -> None:
    """Before: a Python traceback (exit 1), with the documents before it already printed."""
    good = SAMPLE.read_text(encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "lane_router.cli", "inject", "-f", str(SAMPLE), "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good and done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("lanes inject: error: stdin: ")
    assert message in done.stderr and "Traceback" not in done.stderr


def test_the_app_containers_own_no_proxy_entries_are_kept() -> None:
    """Before: ``NO_PROXY=db.internal`` was silently replaced (the app then sent its database
    traffic to the sidecar, which answers 404 for hosts it does not know)."""
    text = (
        "kind: Deployment\napiVersion: apps/v1\nmetadata: {name: x}\n"
        "spec: {template: {metadata: {labels: {app: x}}, spec: {containers: [{name: a, env: "
        "[{name: NO_PROXY, value: 'db.internal, api.example'}, {name: no_proxy, value: "
        "api.example}]}]}}}\n"
    )
    once = inject_stream(text, OPTS)
    [container] = yaml.safe_load(once)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    for key in ("NO_PROXY", "no_proxy"):
        hosts = env[key].split(",")
        assert hosts[-2:] == ["db.internal", "api.example"] and "localhost" in hosts
    assert inject_stream(once, OPTS) == once  # still idempotent
