"""Fixtures for the KubeVela addon tests: the CUE evaluator must be installed (``make node``),
and the controller tests reuse the API double and controller fixtures of ``tests/k8s``."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_K8S = Path(__file__).resolve().parents[1] / "k8s"
if str(_K8S) not in sys.path:
    sys.path.insert(0, str(_K8S))  # kube_double, k8s_objects, k8s_checks, k8s_schemas

from vela_cue import CUE, cue_available  # noqa: E402


def _k8s_fixtures():  # one definition of the double and the controller fixtures: tests/k8s's
    spec = importlib.util.spec_from_file_location("tests_k8s_conftest", _K8S / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fixtures = _k8s_fixtures()
double = _fixtures.double
start_controller = _fixtures.start_controller


@pytest.fixture(scope="session", autouse=True)
def cue_evaluator() -> Iterator[None]:
    """Fail in CI, skip elsewhere, with the fix, when the CUE evaluator cannot run; stop the
    shared evaluator process at the end."""
    why = cue_available()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the CUE evaluator is required in CI: {why}")
        pytest.skip(f"the CUE evaluator is not installed: {why}")
    yield
    CUE.stop()
