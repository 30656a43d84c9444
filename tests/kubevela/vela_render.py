"""Render the KubeVela addon: YAML definitions from the CUE sources, one-object resource files
from the project's manifests. ``python tests/kubevela/vela_render.py --write`` (``make
kubevela-defs``) writes them; without ``--write`` it (like the tests) fails when a file is stale, as
upstream's ``make check-diff`` does.

A CUE source is in ``vela def`` form: imports, the metadata block ``"<name>": {type, description,
annotations, labels, attributes}``, then ``template: {...}`` closing the file. The metadata is
evaluated by the real CUE evaluator; the template's text is kept as written (comments too),
dedented, with the imports in front, which is what ``vela def render`` puts in
``spec.schematic.cue.template`` (upstream also formats it, ``cue fmt -s``; here the source's
own layout is kept). Keys of ``annotations`` and ``labels`` without ``oam.dev`` get the
``custom.definition.oam.dev/`` prefix, as upstream's. Each file in ``resources/`` holds one
object, because KubeVela's addon loader reads one object per file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from vela_cue import CUE, REPO, run_cue

__all__ = ["ADDON", "expected_files", "render_definition", "render_resources"]

ADDON = REPO / "k8s" / "kubevela"
SOURCES = ADDON / "definitions"
RENDERED = ADDON / "rendered"
RESOURCES = ADDON / "resources"
_KINDS = {"trait": "TraitDefinition", "workflow-step": "WorkflowStepDefinition"}
_TEMPLATE_OPEN = "template: {"
_IMPORT_ONE = re.compile(r'^import\s+"[^"]+"\s*$')


_PLACEHOLDER = "TEMPLATE-PLACEHOLDER"


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, width=100)


def _with_template(doc: dict[str, Any], template: str) -> str:
    """``doc`` as YAML with the template as a literal block, tabs kept as upstream keeps them.

    PyYAML never writes a block scalar holding tabs, so the block is spliced in and the result
    loaded back to prove it carries exactly the template.
    """
    text = _dump(doc)
    block = "|\n" + "".join(
        f"        {line}\n" if line else "\n" for line in template[:-1].split("\n")
    )
    out = text.replace(f"template: {_PLACEHOLDER}\n", f"template: {block}")
    if yaml.safe_load(out)["spec"]["schematic"]["cue"]["template"] != template:
        raise ValueError(f"{doc['metadata']['name']}: the template does not survive YAML")
    return out


def _split(path: Path) -> tuple[list[str], list[str], list[str]]:
    """(import lines, metadata lines, template body lines) of a ``vela def`` source."""
    lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    try:
        start = lines.index(_TEMPLATE_OPEN)
    except ValueError:
        raise ValueError(f"{path}: no line {_TEMPLATE_OPEN!r} at column 0") from None
    if lines[-1] != "}":
        raise ValueError(f"{path}: the template block must close the file with '}}' at column 0")
    imports: list[str] = []
    meta: list[str] = []
    in_block = False
    for line in lines[:start]:
        if in_block:
            imports.append(line)
            in_block = line.strip() != ")"
        elif line.startswith("import ("):
            imports.append(line)
            in_block = True
        elif _IMPORT_ONE.match(line):
            imports.append(line)
        else:
            meta.append(line)
    body = []
    for line in lines[start + 1 : -1]:
        if line and not line.startswith("\t"):
            raise ValueError(f"{path}: template lines are indented with one tab: {line!r}")
        body.append(line[1:])
    return imports, meta, body


def _metadata(sources: list[Path]) -> list[dict[str, Any]]:
    """Evaluate each source's metadata block with CUE (one Node process for all)."""
    with tempfile.TemporaryDirectory(prefix="vela-meta-") as tmp:
        jobs = []
        for i, src in enumerate(sources):
            _, meta, _ = _split(src)
            (Path(tmp) / f"m{i}.cue").write_text("\n".join(meta) + "\n", encoding="utf-8")
            jobs.append((Path(tmp), ["export", f"m{i}.cue", "--out=json"]))
        results = run_cue(jobs)
    out = []
    for src, res in zip(sources, results, strict=True):
        if res["code"] != 0:
            raise ValueError(f"{src}: metadata does not evaluate: {res['stderr']}")
        out.append(json.loads(res["stdout"]))
    return out


def render_definition(src: Path, evaluated: dict[str, Any]) -> str:
    """The YAML definition of one CUE source, given its evaluated metadata."""
    imports, _, body = _split(src)
    ((name, meta),) = evaluated.items()
    if name != src.stem:
        raise ValueError(f"{src}: the definition is named {name!r}, the file {src.stem!r}")
    annotations = {"definition.oam.dev/description": meta["description"]}
    for key, value in (meta.get("annotations") or {}).items():
        annotations[key if "oam.dev" in key else f"custom.definition.oam.dev/{key}"] = value
    metadata: dict[str, Any] = {"annotations": annotations}
    if meta.get("labels"):
        metadata["labels"] = {
            k if "oam.dev" in k else f"custom.definition.oam.dev/{k}": v
            for k, v in meta["labels"].items()
        }
    metadata |= {"name": name, "namespace": "vela-system"}
    template = "\n".join([*imports, *([""] if imports else []), *body]).strip("\n") + "\n"
    doc = {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": _KINDS[meta["type"]],
        "metadata": metadata,
        "spec": {
            **(meta.get("attributes") or {}),
            "schematic": {"cue": {"template": _PLACEHOLDER}},
        },
    }
    rel = src.relative_to(REPO)
    head = f"# Generated from {rel} by `make kubevela-defs`: edit the CUE source, not this file.\n"
    return head + _with_template(doc, template)


def _manifests(folder: Path) -> list[Path]:
    """The files a kustomization lists, in order; a listed folder is a kustomization too."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    out: list[Path] = []
    for entry in kustomization.get("resources") or ():
        path = folder / entry
        out.extend(_manifests(path) if path.is_dir() else [path])
    return out


def render_resources() -> dict[str, str]:
    """resources/<NN>-<kind>-<name>.yaml -> text, one object each, from the k8s/ manifests.

    What `kubectl apply -k k8s/` installs, in its order (the sample shop is not in the addon).
    Patches and generators of a kustomization are not applied: the addon refuses to render one
    that has them rather than ship objects that differ from `kubectl apply -k`.
    """
    out: dict[str, str] = {}
    n = 0
    for path in _manifests(REPO / "k8s"):
        kust = yaml.safe_load((path.parent / "kustomization.yaml").read_text(encoding="utf-8"))
        extra = set(kust) - {"apiVersion", "kind", "resources"}
        if extra:
            raise ValueError(f"{path.parent}/kustomization.yaml: {sorted(extra)} not rendered here")
        rel = path.relative_to(REPO)
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is None:
                continue
            n += 1
            name = f"{n:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
            head = f"# Generated from {rel} by `make kubevela-defs`: edit that file.\n"
            out[name] = head + _dump(doc)
    return out


def expected_files() -> dict[Path, str]:
    """Every generated file of the addon and its expected text."""
    sources = sorted(SOURCES.glob("*.cue"))
    files = {
        RENDERED / f"{src.stem}.yaml": render_definition(src, meta)
        for src, meta in zip(sources, _metadata(sources), strict=True)
    }
    files |= {RESOURCES / name: text for name, text in render_resources().items()}
    return files


def stale(files: dict[Path, str]) -> list[str]:
    """Generated files that differ from what is on disk, or are on disk but not generated."""
    problems = [
        str(p.relative_to(REPO))
        for p, t in files.items()
        if not p.is_file() or p.read_text(encoding="utf-8") != t
    ]
    for folder in (RENDERED, RESOURCES):
        for p in sorted(folder.glob("*.yaml")) if folder.is_dir() else ():
            if p not in files:
                problems.append(f"{p.relative_to(REPO)} (not generated by anything)")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="write the files (default: check them)")
    args = ap.parse_args(argv)
    files = expected_files()
    if args.write:
        for folder in (RENDERED, RESOURCES):
            folder.mkdir(exist_ok=True)
            for p in folder.glob("*.yaml"):
                if p not in files:
                    p.unlink()
        for path, text in files.items():
            path.write_text(text, encoding="utf-8")
        print(f"wrote {len(files)} files under {ADDON.relative_to(REPO)}")
        return 0
    problems = stale(files)
    for p in problems:
        print(f"out of date: {p} (run make kubevela-defs)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        CUE.stop()
