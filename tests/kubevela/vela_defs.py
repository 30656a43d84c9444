"""Loading the addon's rendered definitions and examples, and playing KubeVela's part around them:
the ``context`` it fills in, the ``$returns`` its providers fill."""

from __future__ import annotations

import json
from typing import Any

import yaml
from vela_cue import REPO

__all__ = [
    "ADDON",
    "STEP_CONTEXT",
    "canary_object",
    "example",
    "ready",
    "returns",
    "template",
    "trait_context",
]

ADDON = REPO / "k8s" / "kubevela"
STEP_CONTEXT = {"name": "reviews-canary", "namespace": "shop", "stepName": "step"}


def trait_context(component: str) -> dict[str, Any]:
    return {"name": component, "namespace": "shop", "appName": "shop-app"}


def template(name: str) -> str:
    """The CUE template text of a rendered definition (what KubeVela evaluates)."""
    doc = yaml.safe_load((ADDON / "rendered" / f"{name}.yaml").read_text(encoding="utf-8"))
    return doc["spec"]["schematic"]["cue"]["template"]


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((ADDON / "examples" / name).read_text(encoding="utf-8"))


def returns(**actions: dict[str, Any]) -> str:
    """CUE that fills each action's ``$returns`` as a provider does after running it."""
    return "\n".join(f"{name}: $returns: {json.dumps(ret)}" for name, ret in actions.items())


def canary_object(
    spec: dict[str, Any], *, generation: int = 1, observed: int | None = 1, **status: Any
) -> dict[str, Any]:
    """A TrafficCanary as the cluster returns it, with the controller's status."""
    st: dict[str, Any] = {}
    if observed is not None:
        st["observedGeneration"] = observed
    st.update(status)
    return {
        "apiVersion": "lanes.traffic-lanes.io/v1alpha1",
        "kind": "TrafficCanary",
        "metadata": {"name": "reviews-v2", "namespace": "shop", "generation": generation},
        "spec": spec,
        "status": st,
    }


def ready(status: str, reason: str, message: str = "from the controller") -> list[dict[str, Any]]:
    return [{"type": "Ready", "status": status, "reason": reason, "message": message}]
