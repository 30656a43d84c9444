"""The edge tests reuse other suites' helpers: the Envoy upstream fleet, the sidecar runner and
the closed Istio CRD validators."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _helpers in ("envoy", "sidecar", "k8s"):
    if str(_TESTS / _helpers) not in sys.path:
        sys.path.insert(0, str(_TESTS / _helpers))
