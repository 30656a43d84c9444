"""``lanes check`` and ``lanes render`` as a user runs them: exit codes, messages, stable output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from routing_corpus import TOPOLOGY_YAML

from lane_router.cli import main

FORMATS = ["istio", "gateway-api", "envoy"]


@pytest.fixture
def lanes_file(tmp_path: Path) -> Path:
    path = tmp_path / "lanes.yaml"
    path.write_text(TOPOLOGY_YAML, encoding="utf-8")
    return path


def _cells(out: str) -> dict[str, dict[str, str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("service "))
    header = lines[start].split()
    table = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        row = line.split()
        table[row[0]] = dict(zip(header[1:], row[1:], strict=True))
    return table


def test_check_prints_the_matrix_and_exits_0(lanes_file: Path, capsys) -> None:
    assert main(["check", "-f", str(lanes_file)]) == 0
    out = capsys.readouterr().out
    cells = _cells(out)
    assert cells["reviews"]["feature-a"] == "feature-a"  # own version
    assert cells["reviews"]["feature-b"] == "feature-a*"  # fallback
    assert cells["reviews"]["feature-c"] == "feature-a*"  # two hops
    assert cells["productpage"]["hotfix"] == "503"  # strict miss
    assert cells["details"]["qa"] == "qa"
    assert cells["reviews"]["qa"] == "hotfix*"  # chain ending in a strict lane that deploys it
    assert cells["productpage"]["qa"] == "503"  # ... and one that does not
    assert cells["ratings"]["idle"] == "baseline*"
    assert list(cells["ratings"]) == [
        "baseline",
        "feature-a",
        "feature-ab",
        "feature-b",
        "feature-c",
        "hotfix",
        "idle",
        "qa",
    ]
    assert sorted(cells) == ["details", "productpage", "ratings", "reviews"]
    assert "legend:" in out and "qa: qa -> hotfix" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lanes:\n  a: {fallback: b}\n  b: {fallback: a}\nservices: {}\n", ["fallback cycle"]),
        ("lanes:\n  a: {fallback: ghost}\n", ["lanes.a.fallback (line 2)", "ghost"]),
        ("lanes:\n  Bad_Lane: {}\n", ["lanes.Bad_Lane (line 2)", "not a valid lane name"]),
        (
            "services:\n  web:\n    versions:\n      feature: ['127.0.0.1:1']\n",
            ["services.web.versions", "no 'baseline' version", "unknown lane 'feature'"],
        ),
        (
            "services:\n  web:\n    versions:\n      baseline: ['::1:80']\n",
            ["services.web.versions.baseline[0] (line 4)", "[::1]:9081"],
        ),
        ("lanes:\n  a: {strict: yes please}\n", ["lanes.a.strict (line 2)"]),
        ("lanse: {}\n", ["lanse (line 1)", "unknown key"]),
        ("lanes: [\n", ["not valid YAML"]),
    ],
)
def test_check_exits_2_naming_the_key_and_line(
    tmp_path: Path, capsys, text: str, expected: list[str]
) -> None:
    path = tmp_path / "lanes.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["check", "-f", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    for fragment in expected:
        assert fragment in captured.err
    assert str(path) in captured.err


def test_check_and_render_exit_2_for_a_missing_file(tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert main(["check", "-f", missing]) == 2
    assert main(["render", "-f", missing]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", FORMATS)
def test_render_is_byte_identical_and_valid_yaml(lanes_file: Path, capsys, fmt: str) -> None:
    assert main(["render", "-f", str(lanes_file), "--format", fmt]) == 0
    first = capsys.readouterr().out
    assert main(["render", "-f", str(lanes_file), "--format", fmt]) == 0
    assert capsys.readouterr().out == first
    docs = list(yaml.safe_load_all(first))
    assert docs and all(isinstance(d, dict) for d in docs)


def test_render_is_stable_across_processes_and_lane_order(tmp_path: Path, lanes_file: Path) -> None:
    """Hash seeds differ per process; declaration order differs per author: output must not."""
    shuffled = tmp_path / "shuffled.yaml"
    doc = yaml.safe_load(TOPOLOGY_YAML)
    doc["lanes"] = dict(reversed(list(doc["lanes"].items())))
    doc["services"] = dict(reversed(list(doc["services"].items())))
    shuffled.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    for fmt in FORMATS:
        outputs = set()
        for seed, path in (("1", lanes_file), ("2", shuffled), ("3", lanes_file)):
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "lane_router.cli",
                    "render",
                    "-f",
                    str(path),
                    "--format",
                    fmt,
                ],
                capture_output=True,
                check=True,
                env={**os.environ, "PYTHONHASHSEED": seed},
            )
            outputs.add(proc.stdout)
        assert len(outputs) == 1, fmt


def test_render_output_file_matches_stdout(lanes_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "istio.yaml"
    assert main(["render", "-f", str(lanes_file), "-o", str(out), "--export-local"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["render", "-f", str(lanes_file), "--export-local"]) == 0
    assert out.read_text(encoding="utf-8") == capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["istio.yaml", "lanes.yaml"]  # no temp


def test_render_ingress_options(lanes_file: Path, capsys) -> None:
    argv = ["render", "-f", str(lanes_file), "--gateway", "istio-system/ingress"]
    argv += ["--external-host", "shop.example.com", "--entry-service", "productpage"]
    assert main(argv) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert docs[-1]["spec"]["gateways"] == ["istio-system/ingress"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--gateway", "istio-system/ingress"], "--external-host"),
        (["--format", "gateway-api", "--export-local"], "istio only"),
        (["--lane-label", "not a label"], "label"),
    ],
)
def test_render_exits_2_on_bad_options(lanes_file: Path, capsys, extra, message) -> None:
    assert main(["render", "-f", str(lanes_file), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


def test_render_lane_label_option(lanes_file: Path, capsys) -> None:
    argv = ["render", "-f", str(lanes_file), "--format", "gateway-api", "--lane-label", "track"]
    assert main(argv) == 0
    services = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d["kind"] == "Service"]
    assert all(set(s["spec"]["selector"]) == {"app", "track"} for s in services)
