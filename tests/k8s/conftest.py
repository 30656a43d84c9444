"""Fixtures: the Kubernetes API double and controllers that talk to it with the real client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from k8s_objects import NS
from kube_double import KubeDouble

from lane_router._controller._controller import Controller, ControllerOptions
from lane_router._controller._kube import Kube


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
