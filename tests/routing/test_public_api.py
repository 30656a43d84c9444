"""The public API: every exported name resolves, and the sidecar never loads a renderer."""

from __future__ import annotations

import subprocess
import sys

import lane_router
import lane_router.render


def test_every_exported_name_resolves() -> None:
    for module in (lane_router, lane_router.render):
        missing = [n for n in module.__all__ if getattr(module, n, None) is None]
        assert not missing, f"{module.__name__}: {missing}"
    # What envoy/README.md's xDS example raises is importable with the function it calls.
    from lane_router.render.envoy_xds import XdsError

    assert lane_router.XdsError is XdsError
    # The dispatch lives in the package; the top-level name is the package itself.
    assert callable(lane_router.render.render)


def test_the_sidecar_imports_no_renderer() -> None:
    code = (
        "import sys, lane_router._sidecar, lane_router\n"
        "lane_router.load_topology\n"
        "print(sorted(m for m in sys.modules if m.startswith('lane_router.render')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_the_benches_use_only_public_sdk_names() -> None:
    """The SDK's benches measure what users can call: no private ``lanes_sdk`` module or name."""
    import ast
    from pathlib import Path

    bad = []
    for path in sorted((Path(__file__).parents[2] / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lanes_sdk"):
                names = [node.module or "", *(a.name for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("lanes_sdk")]
            else:
                continue
            if any(part.startswith("_") for n in names for part in n.split(".")):
                bad.append(f"{path.name}:{node.lineno}")
    assert not bad, bad


def test_every_logger_is_under_the_one_prefix() -> None:
    """docs/design.md: loggers lanes.sidecar, lanes.controller, lanes.sdk (and lanes.ui)."""
    code = (
        "import logging, lanes_sdk, lane_router._sidecar, lane_router._controller, lane_router.ui\n"
        "import lane_router._sidecar._resolve\n"
        "print(sorted(n for n in logging.root.manager.loggerDict\n"
        "             if n.startswith(('lane', 'traffic')) and n.split('.')[0] != 'lanes'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
