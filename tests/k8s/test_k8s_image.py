"""The image: what can be checked without a container engine (none can pull a base image here).

- the image name and tag in ``k8s/`` follow ``pyproject.toml``;
- every kustomization builds with the real ``kubectl kustomize`` (offline, no cluster);
- the Dockerfile's own RUN steps, run in a clean venv as a non-root user, give a ``lanes`` that
  works from a read-only install (the image runs with a read-only root filesystem).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from k8s_schemas import REPO, load_docs

K8S = REPO / "k8s"
IMAGE = "ghcr.io/traffic-lanes/traffic-lanes"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
NON_ROOT = 65532  # the Dockerfile's USER


def need(tool: str) -> str:
    """The tool's path; a missing tool fails under CI=true and skips (saying why) elsewhere."""
    path = shutil.which(tool)
    if path is None:
        why = f"{tool} not found: it is in .ci/apt-packages.txt, run `make system-deps` as root"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return path


def _images(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from _images(value)
    elif isinstance(node, list):
        for value in node:
            yield from _images(value)


def test_k8s_images_follow_the_pyproject_version() -> None:
    ours = [
        (path.relative_to(K8S), image)
        for path in sorted(K8S.rglob("*.yaml"))
        for doc in load_docs(path)
        for image in _images(doc)
        if image.startswith(IMAGE + ":") or image == IMAGE
    ]
    assert ours, "k8s/ runs no traffic-lanes image"
    assert [(p, i) for p, i in ours if i != f"{IMAGE}:{VERSION}"] == []


KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def kustomize(folder: Path, tmp_path: Path) -> list[dict]:
    """``kubectl kustomize`` of a kustomization; a component is built over ``k8s/``, from a
    kustomization of its own as a user would (kustomize refuses one inside its base)."""
    kubectl = need("kubectl")
    (spec,) = load_docs(folder / "kustomization.yaml")
    if spec.get("kind") == "Component":
        rel = lambda p: os.path.relpath(p, tmp_path)  # noqa: E731
        (tmp_path / "kustomization.yaml").write_text(
            f"resources: [{rel(K8S)}]\ncomponents: [{rel(folder)}]\n"
        )
        folder = tmp_path
    out = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(REPO)))
def test_kustomization_builds(folder: Path, tmp_path: Path) -> None:
    (spec,) = load_docs(folder / "kustomization.yaml")
    built = kustomize(folder, tmp_path)
    files = [folder / r for r in spec.get("resources", []) if (folder / r).is_file()]
    listed = [d for f in files for d in load_docs(f)]
    assert {(d["kind"], d["metadata"]["name"]) for d in built} >= {
        (d["kind"], d["metadata"]["name"]) for d in listed
    }


def _stages(dockerfile: str) -> list[list[str]]:
    """The RUN commands of each stage, continuation lines joined, ``--mount`` flags dropped."""
    text = re.sub(r"\\\n", " ", dockerfile)
    stages: list[list[str]] = []
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "FROM":
            stages.append([])
        elif word == "RUN":
            stages[-1].append(re.sub(r"--mount=\S+\s+", "", rest).strip())
    return stages


def _as_non_root() -> list[str]:
    if os.getuid() != 0:
        return []
    return [need("setpriv"), f"--reuid={NON_ROOT}", f"--regid={NON_ROOT}", "--clear-groups"]


_PROBE = "import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))"


def _python_for(user: list[str]) -> Path:
    """A Python 3.11+ with venv that the user can run: this one, else Debian's (python3-venv)."""
    for candidate in (getattr(sys, "_base_executable", sys.executable), "/usr/bin/python3"):
        probe = f'test -x "$0" && "$0" -c "{_PROBE}"'
        if subprocess.run([*user, "sh", "-c", probe, candidate]).returncode == 0:
            return Path(candidate)
    why = "no Python 3.11+ with venv that a non-root user can run (Debian: python3-venv)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def test_dockerfile_steps_install_a_working_lanes_as_non_root() -> None:
    build, runtime = _stages((REPO / "Dockerfile").read_text(encoding="utf-8"))
    assert len(build) == 1 and len(runtime) == 1
    base = _python_for(_as_non_root())
    root = Path(tempfile.mkdtemp(prefix="lanes-image-"))
    try:
        root.chmod(0o755)
        src, wheels, home = root / "src", root / "wheels", root / "home"
        venv = root / "opt" / "lanes"
        src.mkdir()
        for part in ("pyproject.toml", "README.md"):  # the Dockerfile's COPY lines
            shutil.copy(REPO / part, src / part)
        for part in ("lanes_sdk", "lane_router"):
            shutil.copytree(REPO / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
        home.mkdir()
        (root / "opt").mkdir()
        for d in (home, root / "opt"):
            d.chmod(0o777)

        def localise(cmd: str) -> str:
            cmd = cmd.replace("/wheels", str(wheels)).replace("/opt/lanes", str(venv))
            return re.sub(r"(^|&& )python ", rf"\g<1>{shlex.quote(str(base))} ", cmd)

        env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
        env |= {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
        # The build stage runs as root in the image too; it may reuse this machine's pip cache.
        step = localise(build[0]).replace("--no-cache-dir ", "")
        done = subprocess.run(
            ["sh", "-c", step],
            cwd=src,
            env=env | {"HOME": os.environ.get("HOME", "/root")},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        wheels.chmod(0o755)
        for whl in wheels.iterdir():
            whl.chmod(0o644)
        # The runtime stage offline (--no-index), as the image's non-root user.
        done = subprocess.run(
            [*_as_non_root(), "sh", "-c", localise(runtime[0])],
            cwd=home,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        assert (venv / "bin" / "lanes").is_file()
        # Read-only from here on, as the image's root filesystem is.
        for path in [venv, *venv.rglob("*")]:
            if not path.is_symlink():
                path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
        before = sorted(str(p) for p in venv.rglob("*"))
        env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
        out = subprocess.run(
            [*_as_non_root(), "lanes", "--help"],
            cwd=home,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        for command in ("controller", "sidecar", "check", "render"):
            assert command in out.stdout
        extra = subprocess.run(
            [*_as_non_root(), str(venv / "bin" / "python"), "-c", "import kubernetes, lanes_sdk"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert extra.returncode == 0, extra.stderr
        assert sorted(str(p) for p in venv.rglob("*")) == before
    finally:
        for path in [root, *root.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(root)


def test_sidecar_mode_component_switches_the_controller(tmp_path: Path) -> None:
    built = kustomize(K8S / "sidecar-mode", tmp_path)
    kinds = {d["kind"] for d in built}
    assert "EnvoyFilter" not in kinds and "CustomResourceDefinition" in kinds
    (ctl,) = [d for d in built if d["kind"] == "Deployment"]
    assert "--data-plane=sidecar" in ctl["spec"]["template"]["spec"]["containers"][0]["args"]
    roles = {d["metadata"]["name"] for d in built if d["kind"] == "ClusterRoleBinding"}
    assert roles == {"traffic-lanes-controller", "traffic-lanes-controller-sidecar"}
