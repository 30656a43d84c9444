"""Shared helpers for the routing tests: the schema validators live with the k8s tests."""

from __future__ import annotations

import sys
from pathlib import Path

_K8S_TESTS = str(Path(__file__).resolve().parents[1] / "k8s")
if _K8S_TESTS not in sys.path:  # k8s_schemas: closed Istio CRD and strict Kubernetes validators
    sys.path.insert(0, _K8S_TESTS)
