"""Kubernetes objects as a user would create them, for the controller tests."""

from __future__ import annotations

from typing import Any

__all__ = ["NS", "canary", "deployment", "lane", "service"]

NS = "shop"


def service(name: str, *, ns: str = NS, port: int = 9080) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]},
    }


def deployment(app: str, lane: str, *, ns: str = NS, available: int = 1) -> dict[str, Any]:
    labels = {"app": app, "lane": lane}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{app}-{lane}", "namespace": ns, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": app, "image": f"example/{app}:1"}]},
            },
        },
        "status": {"replicas": 1, "availableReplicas": available},
    }


def lane(name: str, *, ns: str = NS, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lanes.traffic-lanes.io/v1alpha1",
        "kind": "TrafficLane",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def canary(
    name: str, service: str, version: str, weight: int = 0, *, ns: str = NS, **spec: Any
) -> dict[str, Any]:
    """A TrafficCanary; ``spec`` may add ``match`` (a list of {headers, uri})."""
    return {
        "apiVersion": "lanes.traffic-lanes.io/v1alpha1",
        "kind": "TrafficCanary",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"service": service, "version": version, "weight": weight, **spec},
    }
