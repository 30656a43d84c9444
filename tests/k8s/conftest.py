"""Fixtures: the Kubernetes API double and controllers that talk to it with the real client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kube_double import KubeDouble

from lane_router._controller._controller import Controller, ControllerOptions
from lane_router._controller._kube import Kube

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


@pytest.fixture
def double() -> Iterator[KubeDouble]:
    d = KubeDouble()
    d.start()
    yield d
    d.stop()


@pytest.fixture
def start_controller(double: KubeDouble) -> Iterator[Callable[..., Controller]]:
    """Start controllers (each with its own real ApiClient); all are stopped at teardown."""
    from kubernetes import client

    started: list[tuple[Controller, Any]] = []

    def start(identity: str = "replica-a", **options: Any) -> Controller:
        cfg = client.Configuration()
        cfg.host = double.url
        api = client.ApiClient(cfg)
        api.user_agent = f"traffic-lanes-controller ({identity})"
        defaults: dict[str, Any] = {
            "namespace": NS,
            "lease_namespace": NS,
            "lease_seconds": 3,
            "renew_seconds": 0.2,
            "watch_timeout": 30,
            "backoff_cap": 0.3,
        }
        ctl = Controller(
            Kube(api, request_timeout=5), ControllerOptions(identity=identity, **defaults | options)
        )
        ctl.start()
        started.append((ctl, api))
        return ctl

    yield start
    for ctl, api in started:
        ctl.stop()
        api.close()
