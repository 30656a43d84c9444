"""``lanes canary`` as a user runs it: in-place edits that keep comments, atomic writes, and bad
input that exits 2 leaving the file byte-identical."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from lane_router import (
    load_topology,
    loads_topology,
    topology_from_dict,
    topology_to_dict,
)
from lane_router._rollout import RolloutError, write_atomically
from lane_router.cli import main

LANES = """\
# shop topology: owned by the platform team
namespace: shop
lanes:
  feature-a: {}   # Alice's iteration
services:
  reviews:
    port: 9080
    versions:
      baseline: ["127.0.0.1:9081"]  # v1
      feature-a: ["127.0.0.1:9082"]
      v2:
        - 127.0.0.1:9085   # the new one
        - "[::1]:9086"
    # canary: v2 for 10% of untagged traffic
    canary:
      version: v2   # the release candidate
      weight: 10    # percent
      match:
        - headers: {x-canary: {exact: "1"}}
        - uri: {prefix: /beta/}
    # end of reviews
  details:
    versions: {baseline: ["127.0.0.1:9087"], feature-a: ["127.0.0.1:9088"]}
  ratings:
    versions: {baseline: ["127.0.0.1:9089"], v3: []}
    canary: {version: v3, weight: 0}
"""


@pytest.fixture
def lanes_file(tmp_path: Path) -> Path:
    path = tmp_path / "lanes.yaml"
    path.write_text(LANES, encoding="utf-8")
    return path


def _changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    a, b = before.splitlines(), after.splitlines()
    return [x for x in a if x not in b], [x for x in b if x not in a]


def _comments(text: str) -> list[str]:
    return [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]


def test_weight_rewrites_one_number_and_nothing_else(lanes_file: Path, capsys) -> None:
    assert main(["canary", "reviews", "-f", str(lanes_file), "--weight", "25"]) == 0
    assert capsys.readouterr().out == "reviews: canary v2 weight 10 -> 25\n"
    after = lanes_file.read_text()
    assert _changed_lines(LANES, after) == (
        ["      weight: 10    # percent"],
        ["      weight: 25    # percent"],
    )
    canary = load_topology(lanes_file).services["reviews"].canary
    assert (canary.weight, len(canary.matches)) == (25, 2)


@pytest.mark.parametrize("steps", [[1, 5, 25, 50, 100, 0], [100, 100, 3]])
def test_stepping_keeps_every_comment_and_only_the_weight_changes(
    lanes_file: Path, steps: list[int]
) -> None:
    before = topology_to_dict(loads_topology(LANES))
    for w in steps:
        assert main(["canary", "reviews", "-f", str(lanes_file), "--weight", str(w)]) == 0
        after = lanes_file.read_text()
        assert _comments(after) == _comments(LANES)
        doc = topology_to_dict(load_topology(lanes_file))
        before["services"]["reviews"]["canary"]["weight"] = w
        assert doc == before


def test_weight_on_a_flow_canary_without_a_weight_key(tmp_path: Path) -> None:
    path = tmp_path / "lanes.yaml"
    path.write_text(
        "services:\n  web:\n    versions: {baseline: [], v2: []}\n"
        "    canary: {version: v2}  # new\n"
    )
    assert main(["canary", "web", "-f", str(path), "--weight", "7"]) == 0
    assert path.read_text().endswith("    canary: {version: v2, weight: 7}  # new\n")


def test_abort_sets_weight_0_and_drops_the_matches(lanes_file: Path, capsys) -> None:
    assert main(["canary", "reviews", "-f", str(lanes_file), "--abort"]) == 0
    assert "aborted" in capsys.readouterr().out
    canary = load_topology(lanes_file).services["reviews"].canary
    assert (canary.version, canary.weight, canary.matches) == ("v2", 0, ())
    removed, added = _changed_lines(LANES, lanes_file.read_text())
    assert added == ["      weight: 0    # percent"]
    assert removed[-2:] == [
        '        - headers: {x-canary: {exact: "1"}}',
        "        - uri: {prefix: /beta/}",
    ]


def test_promote_makes_the_canary_endpoints_the_baseline(lanes_file: Path) -> None:
    assert main(["canary", "reviews", "-f", str(lanes_file), "--promote"]) == 0
    after = lanes_file.read_text()
    topo = load_topology(lanes_file)
    svc = topo.services["reviews"]
    assert svc.canary is None and "v2" not in svc.versions
    assert [str(e) for e in svc.versions["baseline"]] == ["127.0.0.1:9085", "[::1]:9086"]
    assert '      baseline: ["127.0.0.1:9085", "[::1]:9086"]  # v1' in after.splitlines()
    # Everything else (other services, lanes, comments outside the removed blocks) is kept.
    assert after.startswith("# shop topology: owned by the platform team\nnamespace: shop\n")
    assert "# Alice's iteration" in after and "# end of reviews" in after
    assert topo.services["details"] == loads_topology(LANES).services["details"]


def test_remove_needs_an_aborted_canary_first(lanes_file: Path, capsys) -> None:
    before = lanes_file.read_bytes()
    assert main(["canary", "reviews", "-f", str(lanes_file), "--remove"]) == 2
    assert "--abort first" in capsys.readouterr().err
    assert lanes_file.read_bytes() == before
    assert main(["canary", "reviews", "-f", str(lanes_file), "--abort"]) == 0
    assert main(["canary", "reviews", "-f", str(lanes_file), "--remove"]) == 0
    svc = load_topology(lanes_file).services["reviews"]
    assert svc.canary is None and set(svc.versions) == {"baseline", "feature-a"}
    # ratings is already at weight 0: removable in one step (flow style).
    assert main(["canary", "ratings", "-f", str(lanes_file), "--remove"]) == 0
    assert '  ratings:\n    versions: {baseline: ["127.0.0.1:9089"]}\n' in lanes_file.read_text()


def test_declare_a_canary_with_a_new_version_and_matches(lanes_file: Path) -> None:
    argv = [
        "canary",
        "details",
        "-f",
        str(lanes_file),
        "--version",
        "v2",
        "--weight",
        "5",
        "--endpoint",
        "127.0.0.1:9090",
        "--match",
        "header:X-Beta:prefix:yes",
        "--match",
        "uri:regex:/api/v[0-9]+/items",
    ]
    assert main(argv) == 0
    topo = load_topology(lanes_file)
    canary = topo.services["details"].canary
    assert canary.version == "v2" and canary.weight == 5
    assert [(m.headers, m.uri) for m in canary.matches] == [
        ((("x-beta", "prefix", "yes"),), None),
        ((), ("regex", "/api/v[0-9]+/items")),
    ]
    assert [str(e) for e in topo.services["details"].versions["v2"]] == ["127.0.0.1:9090"]
    removed, added = _changed_lines(LANES, lanes_file.read_text())
    assert removed == [
        '    versions: {baseline: ["127.0.0.1:9087"], feature-a: ["127.0.0.1:9088"]}'
    ]
    assert added[0].endswith(', v2: ["127.0.0.1:9090"]}') and added[1].startswith("    canary: {")
    assert len(added) == 2


def test_declare_in_a_block_service(tmp_path: Path) -> None:
    path = tmp_path / "lanes.yaml"
    path.write_text(
        "services:\n  web:\n    port: 80\n    versions:\n      baseline: []\n# trailing comment\n"
    )
    assert main(["canary", "web", "-f", str(path), "--version", "v2", "--weight", "0"]) == 0
    assert path.read_text() == (
        "services:\n  web:\n    port: 80\n    versions:\n      baseline: []\n"
        "      v2: []\n    canary: {version: v2, weight: 0}\n# trailing comment\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope", "--weight", "5"], "unknown service 'nope'"),
        (["details", "--weight", "5"], "service 'details' has no canary"),
        (["details", "--promote"], "has no canary"),
        (["details", "--abort"], "has no canary"),
        (["reviews", "--weight", "101"], "--weight must be a whole number 0-100, got 101"),
        (["reviews", "--weight", "-1"], "0-100"),
        (["reviews", "--weight", "5", "--version", "v9"], "already has canary 'v2'"),
        (["reviews", "--weight", "5", "--match", "uri:exact:/x"], "only declare a new canary"),
        (["reviews", "--promote", "--version", "v2"], "takes no"),
        (["ratings", "--promote"], "would leave the baseline without any"),
        (["details", "--weight", "5", "--version", "feature-a"], "is a lane"),
        (
            ["details", "--weight", "5", "--version", "v9", "--match", "uri:prefix:beta"],
            "starts with '/'",
        ),
        (["details", "--weight", "5", "--version", "v9", "--match", "path:/x"], "--match"),
        (
            ["details", "--weight", "5", "--version", "v9", "--endpoint", "nohost"],
            "--endpoint",
        ),
    ],
)
def test_bad_input_exits_2_and_leaves_the_file_byte_identical(
    lanes_file: Path, capsys, argv: list[str], message: str
) -> None:
    before = lanes_file.read_bytes()
    mtime = lanes_file.stat().st_mtime_ns
    assert main(["canary", *argv[:1], "-f", str(lanes_file), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert lanes_file.read_bytes() == before and lanes_file.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in lanes_file.parent.iterdir()) == ["lanes.yaml"]


def test_declaring_without_endpoints_is_fine_for_istio(lanes_file: Path) -> None:
    # A version the file lacks is added, with the --endpoint values (none: Istio selects pods).
    assert (
        main(["canary", "details", "-f", str(lanes_file), "--version", "v9", "--weight", "1"]) == 0
    )
    assert load_topology(lanes_file).services["details"].versions["v9"] == ()


def test_argparse_rejects_a_non_integer_weight_and_two_actions(lanes_file: Path) -> None:
    before = lanes_file.read_bytes()
    for argv in (["--weight", "ten"], ["--weight", "5", "--abort"], []):
        with pytest.raises(SystemExit) as info:
            main(["canary", "reviews", "-f", str(lanes_file), *argv])
        assert info.value.code == 2
    assert lanes_file.read_bytes() == before


def test_an_invalid_file_is_reported_and_untouched(tmp_path: Path, capsys) -> None:
    path = tmp_path / "lanes.yaml"
    path.write_text("services:\n  web:\n    versions: {v2: []}\n")
    before = path.read_bytes()
    assert main(["canary", "web", "-f", str(path), "--weight", "5"]) == 2
    assert "services.web.versions (line 3)" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert main(["canary", "web", "-f", str(tmp_path / "missing.yaml"), "--weight", "5"]) == 2


def test_the_write_replaces_the_file_atomically_keeping_mode_and_symlinks(
    lanes_file: Path,
) -> None:
    os.chmod(lanes_file, 0o640)
    link = lanes_file.parent / "current.yaml"
    link.symlink_to(lanes_file.name)
    inode = lanes_file.stat().st_ino
    assert main(["canary", "reviews", "-f", str(link), "--weight", "30"]) == 0
    assert link.is_symlink()  # the link still points at the real file, which was replaced
    assert lanes_file.stat().st_ino != inode  # a new file renamed over the old: never half
    assert stat.S_IMODE(lanes_file.stat().st_mode) == 0o640
    assert load_topology(lanes_file).services["reviews"].canary.weight == 30
    assert sorted(p.name for p in lanes_file.parent.iterdir()) == ["current.yaml", "lanes.yaml"]


def test_crlf_files_stay_crlf(tmp_path: Path) -> None:
    path = tmp_path / "lanes.yaml"
    path.write_bytes(LANES.replace("\n", "\r\n").encode())
    assert main(["canary", "ratings", "-f", str(path), "--weight", "3"]) == 0
    assert main(["canary", "reviews", "-f", str(path), "--promote"]) == 0
    data = path.read_bytes()
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert load_topology(path).services["ratings"].canary.weight == 3


def test_a_file_changed_during_the_edit_is_not_overwritten(lanes_file: Path) -> None:
    stale = lanes_file.read_bytes()
    lanes_file.write_text(LANES + "# someone else's edit\n")
    with pytest.raises(RolloutError, match="changed while"):
        write_atomically(lanes_file, "x: 1\n", expect=stale)
    assert lanes_file.read_text().endswith("# someone else's edit\n")


def test_an_aliased_canary_is_refused_not_mangled(tmp_path: Path, capsys) -> None:
    path = tmp_path / "lanes.yaml"
    path.write_text(
        "services:\n"
        "  a:\n    versions: {baseline: [], v2: []}\n    canary: &c {version: v2, weight: 5}\n"
        "  b:\n    versions: {baseline: [], v2: []}\n    canary: *c\n"
    )
    before = path.read_bytes()
    assert main(["canary", "b", "-f", str(path), "--weight", "6"]) == 2
    assert "cannot edit this file safely" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_check_shows_each_canary(lanes_file: Path, capsys) -> None:
    assert main(["check", "-f", str(lanes_file)]) == 0
    out = capsys.readouterr().out
    assert "canaries (baseline traffic only; lanes never reach them):\n" in out
    assert (
        "  reviews: v2 takes 10% of baseline traffic (baseline 90%); always when "
        'x-canary exact "1" | uri prefix "/beta/"\n'
    ) in out
    assert "  ratings: v3 takes 0% of baseline traffic (baseline 100%)\n" in out
    assert "details:" not in out.split("canaries")[1].split("\n\n")[0]


@pytest.mark.parametrize("fmt", ["istio", "gateway-api"])
def test_render_follows_each_step(lanes_file: Path, capsys, fmt: str) -> None:
    def rendered() -> str:
        assert main(["render", "-f", str(lanes_file), "--format", fmt]) == 0
        return capsys.readouterr().out

    first = rendered()
    assert first == rendered()  # byte-identical
    assert "weight: 90" in first and "weight: 10" in first
    main(["canary", "reviews", "-f", str(lanes_file), "--weight", "40"])
    capsys.readouterr()
    assert "weight: 60" in rendered()
    main(["canary", "reviews", "-f", str(lanes_file), "--promote"])
    capsys.readouterr()
    assert "v2" not in rendered()


def _doc() -> dict:
    return {
        "namespace": "shop",
        "lanes": {"feature-a": {}},
        "services": {
            "reviews": {
                "port": 9080,
                "versions": {
                    "baseline": ["127.0.0.1:9081"],
                    "feature-a": ["127.0.0.1:9082"],
                    "v2": ["127.0.0.1:9085", "[::1]:9086"],
                },
                "canary": {
                    "version": "v2",
                    "weight": 10,
                    "match": [{"headers": {"x-canary": {"exact": "1"}}}],
                },
            },
            "details": {"versions": {"baseline": ["127.0.0.1:9087"]}},
        },
    }


LAYOUTS = {
    "block": lambda d: yaml.safe_dump(d),
    "block-sorted-indent4": lambda d: yaml.safe_dump(d, indent=4, sort_keys=True),
    "mixed-flow": lambda d: yaml.safe_dump(d, default_flow_style=None, sort_keys=False),
    "explicit-start": lambda d: yaml.safe_dump(d, explicit_start=True, sort_keys=False),
    "json-indented": lambda d: json.dumps(d, indent=2),
    "json-one-line": lambda d: json.dumps(d),
}
STEPS = {
    "weight": (["reviews", "--weight", "42"], lambda c: {**c, "weight": 42}),
    "abort": (["reviews", "--abort"], lambda c: {"version": "v2", "weight": 0}),
    "promote": (["reviews", "--promote"], None),
    "declare": (["details", "--version", "v3", "--weight", "7", "--endpoint", "[::1]:1"], None),
}


@pytest.mark.parametrize("step", sorted(STEPS))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_common_layout_is_edited_to_exactly_the_intended_topology(
    tmp_path: Path, layout: str, step: str
) -> None:
    path = tmp_path / "lanes.yaml"
    path.write_text(LAYOUTS[layout](_doc()))
    argv, change = STEPS[step]
    assert main(["canary", argv[0], "-f", str(path), *argv[1:]]) == 0
    want = _doc()
    reviews, details = want["services"]["reviews"], want["services"]["details"]
    if change is not None:
        reviews["canary"] = change(reviews["canary"])
    elif step == "promote":
        reviews["versions"]["baseline"] = reviews["versions"].pop("v2")
        del reviews["canary"]
    else:
        details["versions"]["v3"] = ["[::1]:1"]
        details["canary"] = {"version": "v3", "weight": 7}
    assert topology_to_dict(load_topology(path)) == topology_to_dict(topology_from_dict(want))
    if step == "abort":  # and the aborted canary can be removed in every layout too
        assert main(["canary", "reviews", "-f", str(path), "--remove"]) == 0
        assert load_topology(path).services["reviews"].canary is None


def test_first_entries_of_flow_mappings_are_removed_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "lanes.yaml"
    path.write_text(
        "services:\n"
        "  web: {canary: {match: [{uri: {exact: /x}}], version: v2, weight: 5},\n"
        '        versions: {v2: ["127.0.0.1:2"], baseline: ["127.0.0.1:1"]}}  # web\n'
    )
    assert main(["canary", "web", "-f", str(path), "--abort"]) == 0
    assert path.read_text().splitlines()[1] == "  web: {canary: {version: v2, weight: 0},"
    assert main(["canary", "web", "-f", str(path), "--weight", "3"]) == 0
    assert main(["canary", "web", "-f", str(path), "--promote"]) == 0
    assert path.read_text() == (
        'services:\n  web: {versions: {baseline: ["127.0.0.1:2"]}}  # web\n'
    )


def test_lanes_help_lists_canary(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "canary" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["canary", "--help"])
    out = capsys.readouterr().out
    assert "--promote" in out and "--abort" in out and "--weight" in out


def test_dry_run_prints_the_diff_and_writes_nothing(lanes_file: Path, capsys) -> None:
    before = lanes_file.read_bytes()
    assert main(["canary", "reviews", "-f", str(lanes_file), "--weight", "20", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "-      weight: 10    # percent\n+      weight: 20    # percent\n" in out
    assert "(reviews: canary v2 weight 10 -> 20)" in out.splitlines()[1]
    assert lanes_file.read_bytes() == before
