"""Every manifest under k8s/ is valid for the API server that would receive it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from k8s_schemas import (
    REPO,
    crd_validator,
    istio_validator,
    k8s_validator,
    load_docs,
    structural_problems,
)

K8S = REPO / "k8s"
CRD = K8S / "crd.yaml"
CANARY_CRD = K8S / "crd-canary.yaml"
# k8s/kubevela/ holds an addon (metadata, KubeVela definitions, Applications): tests/kubevela.
# Patch files are partial objects: checked where they are applied (test_k8s_inject.py,
# test_k8s_image.py), not here.
PATCHES = {
    k.parent / p["path"]
    for k in K8S.rglob("kustomization.yaml")
    for p in load_docs(k)[0].get("patches", ())
    if "path" in p
}
FILES = sorted(
    p
    for p in K8S.rglob("*.yaml")
    if p.relative_to(K8S).parts[0] != "kubevela" and p not in PATCHES
)
DOCS = [(p, d) for p in FILES if p.name != "kustomization.yaml" for d in load_docs(p)]


def _errors(validator, doc) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def _id(item) -> str:
    path, doc = item
    return f"{path.relative_to(K8S)}:{doc['kind']}/{doc['metadata']['name']}"


def test_there_are_manifests_of_each_kind() -> None:
    kinds = {d["kind"] for _, d in DOCS}
    assert {
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "EnvoyFilter",
        "TrafficLane",
        "TrafficCanary",
    } <= kinds


@pytest.mark.parametrize("item", DOCS, ids=_id)
def test_manifest_validates(item) -> None:
    path, doc = item
    kind = doc["kind"]
    group, _, version = doc["apiVersion"].rpartition("/")
    if group == "networking.istio.io":
        errors = _errors(istio_validator(kind, version), doc)
    elif kind in ("Deployment", "Service"):
        errors = _errors(k8s_validator(kind), doc)
    elif kind == "TrafficLane":
        errors = _errors(crd_validator(str(CRD), version), doc)
    elif kind == "TrafficCanary":
        errors = _errors(crd_validator(str(CANARY_CRD), version), doc)
    elif kind == "CustomResourceDefinition":
        errors = structural_problems(doc)
    else:
        # No schema copy for these kinds: check the shape the API server requires.
        errors = [] if doc["metadata"].get("name") else ["no metadata.name"]
        if kind in ("Role", "ClusterRole"):
            verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
            for rule in doc["rules"]:
                errors += [f"unknown verb {v}" for v in set(rule["verbs"]) - verbs]
                errors += ["wildcard"] if "*" in rule["resources"] + rule["apiGroups"] else []
    assert errors == [], f"{path.name}: {doc['kind']}/{doc['metadata']['name']}"


def test_validators_reject_a_misspelled_key() -> None:
    """The checks above could never fail if the schemas were open."""
    (crd,) = load_docs(CRD)
    lane = next(d for _, d in DOCS if d["kind"] == "TrafficLane")
    bad_lane = {**lane, "spec": {**lane["spec"], "fallbak": "x"}}
    assert _errors(crd_validator(str(CRD), "v1alpha1"), bad_lane)
    assert _errors(crd_validator(str(CRD), "v1alpha1"), {**lane, "spec": {"ttl": "soon"}})
    tc = next(d for _, d in DOCS if d["kind"] == "TrafficCanary")
    canary_schema = crd_validator(str(CANARY_CRD), "v1alpha1")
    for bad_spec in (
        {"wieght": 10},
        {"weight": 101},
        {"weight": -1},
        {"version": "V3"},
        {"match": [{"headers": {"end-user": {"exakt": "jason"}}}]},
        {"match": [{"headers": {"end-user": {"exact": "a", "prefix": "b"}}}]},
        {"match": [{"uri": {}}]},
        {"match": [{"uri": {"prefix": "api/"}}]},
        {"match": [{"uri": {"exact": "/x?y=1"}}]},
    ):
        assert _errors(canary_schema, {**tc, "spec": {**tc["spec"], **bad_spec}}), bad_spec
    no_version = {k: v for k, v in tc["spec"].items() if k != "version"}
    assert _errors(canary_schema, {**tc, "spec": no_version})
    ef = next(d for _, d in DOCS if d["kind"] == "EnvoyFilter")
    bad_ef = {**ef, "spec": {**ef["spec"], "configPatch": []}}
    assert _errors(istio_validator("EnvoyFilter", "v1alpha3"), bad_ef)
    svc = next(d for _, d in DOCS if d["kind"] == "Service")
    assert _errors(k8s_validator("Service"), {**svc, "spec": {**svc["spec"], "prots": []}})
    broken = yaml.safe_load(yaml.safe_dump(crd))
    del broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["type"]
    assert structural_problems(broken)


def test_sample_pods_carry_app_and_lane_and_lanes_exist() -> None:
    lanes = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "TrafficLane"}
    services = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "Service"}
    canaries = {
        (d["spec"]["service"], d["spec"]["version"])
        for _, d in DOCS
        if d["kind"] == "TrafficCanary"
    }
    assert canaries and not {v for _, v in canaries} & (lanes | {"baseline"})
    deployments = [
        d for _, d in DOCS if d["kind"] == "Deployment" and "app" in d["metadata"]["labels"]
    ]
    assert deployments
    for dep in deployments:
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert labels["app"] in services
        version = (labels["app"], labels["lane"])
        assert labels["lane"] == "baseline" or labels["lane"] in lanes or version in canaries
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize(
    "kustomization", sorted(K8S.rglob("kustomization.yaml")), ids=lambda p: str(p.relative_to(K8S))
)
def test_kustomization_lists_every_manifest(kustomization: Path) -> None:
    (k,) = load_docs(kustomization)
    listed = set(k.get("resources", [])) | {p["path"] for p in k.get("patches", []) if "path" in p}
    present = {
        p.name for p in kustomization.parent.glob("*.yaml") if p.name != "kustomization.yaml"
    }
    assert listed == present


def test_rbac_grants_what_the_controller_needs_and_no_more() -> None:
    sidecar_mode = {
        (g, r, v)
        for p, d in DOCS
        if d["kind"] == "ClusterRole" and p.parent.name == "sidecar-mode"
        for rule in d["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert sidecar_mode == {
        ("", "services", "patch"),
        ("", "services", "delete"),
        *(("", "configmaps", v) for v in ("list", "watch", "patch", "delete")),
    }
    rules = {
        (g, r, v)
        for p, d in DOCS
        if d["kind"] in ("ClusterRole", "Role") and p.parent.name != "sidecar-mode"
        for rule in d["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert ("networking.istio.io", "virtualservices", "delete") in rules
    assert ("coordination.k8s.io", "leases", "update") in rules
    assert ("lanes.traffic-lanes.io", "trafficcanaries", "watch") in rules
    assert ("lanes.traffic-lanes.io", "trafficcanaries/status", "patch") in rules
    assert not any(
        v in ("delete", "patch", "update", "create")
        for g, r, v in rules
        if r in ("deployments", "services", "trafficlanes", "trafficcanaries")
    )


def test_envoyfilter_lua_is_the_tested_envoy_filter_verbatim() -> None:
    (ef,) = [d for _, d in DOCS if d["kind"] == "EnvoyFilter"]
    patches = ef["spec"]["configPatches"]
    # Sidecars only: at a gateway a client's baggage lane is untrusted (design.md, "The edge").
    assert sorted(p["match"]["context"] for p in patches) == ["SIDECAR_INBOUND", "SIDECAR_OUTBOUND"]
    for patch in patches:
        code = patch["patch"]["value"]["typed_config"]["default_source_code"]["inline_string"]
        assert code == (REPO / "envoy" / "lanes.lua").read_text(encoding="utf-8")
        assert patch["patch"]["operation"] == "INSERT_BEFORE"
        assert patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == (
            "envoy.filters.http.router"
        )
