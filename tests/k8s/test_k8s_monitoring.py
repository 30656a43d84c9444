"""``k8s/monitoring/`` against the Prometheus Operator's own CRD schemas (v0.93.0, copied in
``tests/schemas/prometheus-operator/``, closed so a misspelled key fails), as kustomize builds it;
and the sidecars it scrapes are the pods ``lanes inject`` and ``k8s/sidecar/`` label."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml
from k8s_schemas import REPO, SCHEMAS, crd_validator, load_docs
from test_k8s_image import kustomize

from lane_router._inject import InjectOptions, inject_object

MONITORING = REPO / "k8s" / "monitoring"
CRDS = SCHEMAS / "prometheus-operator"
PLURALS = {"PodMonitor": "podmonitors", "PrometheusRule": "prometheusrules"}


def _errors(obj: dict) -> list[str]:
    path = CRDS / f"monitoring.coreos.com_{PLURALS[obj['kind']]}.yaml"
    return [
        f"{obj['kind']}/{obj['metadata']['name']}: {'/'.join(map(str, e.absolute_path))}: "
        f"{e.message}"
        for e in crd_validator(str(path), "v1").iter_errors(obj)
    ]


def test_monitoring_objects_validate_against_the_operator_crds(tmp_path: Path) -> None:
    built = kustomize(MONITORING, tmp_path)
    custom = [d for d in built if d["kind"] in PLURALS]
    assert sorted(d["kind"] for d in custom) == ["PodMonitor", "PodMonitor", "PrometheusRule"]
    assert [e for d in custom for e in _errors(d)] == []
    # Negative controls: the closed schema catches a misspelled key and a bad value.
    pod = next(d for d in custom if d["metadata"]["name"] == "traffic-lanes-sidecars")
    typo = copy.deepcopy(pod)
    typo["spec"]["podMetricEndpoints"] = typo["spec"].pop("podMetricsEndpoints")
    assert any("podMetricEndpoints" in e for e in _errors(typo))
    bad = copy.deepcopy(pod)
    bad["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    assert _errors(bad)
    rule = next(d for d in custom if d["kind"] == "PrometheusRule")
    typo = copy.deepcopy(rule)
    typo["spec"]["groups"][1]["rules"][0]["labels_"] = {"severity": "warning"}
    assert any("labels_" in e for e in _errors(typo))


@pytest.mark.parametrize("how", ["inject", "component"])
def test_injected_pods_are_the_ones_the_sidecar_podmonitor_selects(
    how: str, tmp_path: Path
) -> None:
    (monitor,) = load_docs(MONITORING / "podmonitor-sidecars.yaml")
    want = monitor["spec"]["selector"]["matchLabels"]
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    dep = next(
        d for d in load_docs(REPO / "k8s" / "sample" / "app.yaml") if d["kind"] == "Deployment"
    )
    if how == "inject":
        out = inject_object(dep, InjectOptions(image="x:1"))
    else:
        dep["metadata"].setdefault("labels", {})["traffic-lanes.io/inject"] = "true"
        app = tmp_path / "app"
        app.mkdir()
        (app / "app.yaml").write_text(yaml.safe_dump(dep))
        component = os.path.relpath(REPO / "k8s" / "sidecar", app)
        (app / "kustomization.yaml").write_text(
            f"resources: [app.yaml]\ncomponents: [{component}]\n"
        )
        (out,) = kustomize(app, tmp_path)
    template = out["spec"]["template"]
    assert want.items() <= template["metadata"]["labels"].items()
    ports = [p["name"] for c in template["spec"]["initContainers"] for p in c.get("ports", [])]
    assert port in ports
