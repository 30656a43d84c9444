"""Schema validators for manifests and for what the controller writes.

Istio objects are checked against the CRDs copied in ``tests/schemas/istio-crds.yaml`` and
Gateway API objects against the CRDs copied in ``tests/schemas/gateway-api/``, with every object
schema closed (``additionalProperties: false``), so a misspelled key fails; the
Kubernetes kinds against the strict 1.33 JSON Schemas; TrafficLanes against our own CRD.
Provenance of the copies: ``tests/schemas/SOURCE.md``.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator, Draft202012Validator
from referencing import Registry, Resource

__all__ = [
    "REPO",
    "close_schema",
    "crd_validator",
    "gateway_api_validator",
    "istio_validator",
    "k8s_validator",
    "load_docs",
    "structural_problems",
]

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "tests" / "schemas"
_K8S = SCHEMAS / "k8s-v1.33.0-local-strict"
_PRINTER_TYPES = {"integer", "number", "string", "boolean", "date"}


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return [d for d in yaml.load_all(fh, Loader=loader) if d is not None]


def close_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy with ``additionalProperties: false`` on every object that lists properties."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


def _object_schema(group: str, version: str, kind: str, spec_schema: dict[str, Any]) -> dict:
    props = dict(spec_schema.get("properties", {}))
    props.pop("metadata", None)
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            **props,
            "apiVersion": {"const": f"{group}/{version}"},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                    "namespace": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    }


@functools.cache
def _istio_crds() -> dict[str, dict[str, Any]]:
    return {
        d["spec"]["names"]["kind"]: d
        for d in load_docs(SCHEMAS / "istio-crds.yaml")
        if d.get("kind") == "CustomResourceDefinition"
    }


@functools.cache
def istio_validator(kind: str, version: str) -> Draft7Validator:
    crd = _istio_crds()[kind]
    ver = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = close_schema(ver["schema"]["openAPIV3Schema"])
    return Draft7Validator(_object_schema(crd["spec"]["group"], version, kind, schema))


@functools.cache
def gateway_api_validator(kind: str, version: str = "v1") -> Draft7Validator:
    """Validator for a Gateway API kind (standard channel CRD), closed like Istio's. The CRD's
    CEL rules (``x-kubernetes-validations``) are not evaluated: callers check the ones they
    rely on; every structural limit (``maxItems``, ``maxLength``, enums, patterns) is."""
    plural = {"HTTPRoute": "httproutes"}[kind]
    (crd,) = load_docs(SCHEMAS / "gateway-api" / f"gateway.networking.k8s.io_{plural}.yaml")
    ver = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = close_schema(ver["schema"]["openAPIV3Schema"])
    return Draft7Validator(_object_schema(crd["spec"]["group"], version, kind, schema))


@functools.cache
def crd_validator(crd_path: str, version: str) -> Draft7Validator:
    """Validator for custom objects of the CRD in ``crd_path`` (ours), closed like Istio's."""
    (crd,) = load_docs(Path(crd_path))
    ver = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = close_schema(ver["schema"]["openAPIV3Schema"])
    spec = crd["spec"]
    obj = _object_schema(spec["group"], version, spec["names"]["kind"], schema)
    name_rule = schema["properties"].get("metadata", {}).get("properties", {}).get("name")
    if name_rule:
        obj["properties"]["metadata"]["properties"]["name"] = name_rule
    return Draft7Validator(obj)


@functools.cache
def _registry() -> Registry:
    defs = json.loads((_K8S / "_definitions.json").read_text(encoding="utf-8"))
    return Registry().with_resource("/api/_definitions.json", Resource.from_contents(defs))


# Kinds without a copied kind file: the same strict definition, by reference.
_BY_DEFINITION = {
    "StatefulSet": "io.k8s.api.apps.v1.StatefulSet",
    "DaemonSet": "io.k8s.api.apps.v1.DaemonSet",
    "ConfigMap": "io.k8s.api.core.v1.ConfigMap",
}


@functools.cache
def k8s_validator(kind: str) -> Draft202012Validator:
    if kind in _BY_DEFINITION:
        schema = {"$ref": f"/api/_definitions.json#/$defs/{_BY_DEFINITION[kind]}"}
        return Draft202012Validator(schema, registry=_registry())
    name = {"Deployment": "deployment-apps-v1.json", "Service": "service-v1.json"}[kind]
    schema = json.loads((_K8S / name).read_text(encoding="utf-8"))
    return Draft202012Validator(schema, registry=_registry())


def structural_problems(crd: dict[str, Any]) -> list[str]:
    """Why an apiextensions.k8s.io/v1 CRD would be refused as non-structural (empty: fine)."""
    problems: list[str] = []
    spec = crd.get("spec", {})
    versions = spec.get("versions", [])
    if sum(1 for v in versions if v.get("storage")) != 1:
        problems.append("exactly one version must be the storage version")
    if crd.get("metadata", {}).get("name") != f"{spec['names']['plural']}.{spec['group']}":
        problems.append("metadata.name must be <plural>.<group>")

    def walk(node: Any, path: str, root: bool = False) -> None:
        if not isinstance(node, dict):
            problems.append(f"{path}: not a schema object")
            return
        loose = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        if not node.get("type") and not loose:
            problems.append(f"{path}: no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties together")
        for key in ("allOf", "anyOf", "oneOf", "not"):
            if key in node:
                problems.append(f"{path}: {key} is not used by this project's CRDs")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        if node.get("x-kubernetes-list-type") == "map":
            keys = node.get("x-kubernetes-list-map-keys") or []
            required = set(node.get("items", {}).get("required", []))
            if not keys or not set(keys) <= required:
                problems.append(f"{path}: list-map keys must be required item properties")
        for name, sub in node.get("properties", {}).items():
            if root and name == "metadata":
                extra = set(sub.get("properties", {})) - {"name", "generateName"}
                if extra or set(sub) - {"type", "properties"}:
                    problems.append(f"{path}.metadata: may only restrict name and generateName")
            walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}{{}}")

    for v in versions:
        schema = v.get("schema", {}).get("openAPIV3Schema")
        if schema is None:
            problems.append(f"version {v.get('name')}: no openAPIV3Schema")
            continue
        if schema.get("type") != "object":
            problems.append(f"version {v.get('name')}: the root must be type object")
        walk(schema, f"{v['name']}", root=True)
        for col in v.get("additionalPrinterColumns", []):
            if col.get("type") not in _PRINTER_TYPES:
                problems.append(f"printer column {col.get('name')}: bad type {col.get('type')}")
            if not str(col.get("jsonPath", "")).startswith("."):
                problems.append(f"printer column {col.get('name')}: jsonPath must start with '.'")
    return problems
