"""The addon's definitions under the real CUE evaluator: every template over a table of valid and
invalid parameter sets; valid ones give objects our CRDs (and Kubernetes') accept, invalid ones
fail evaluation naming the parameter; the YAML definitions are up to date with the CUE and are
valid KubeVela definitions (KubeVela's CRDs, closed so a misspelled key fails)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from k8s_schemas import REPO, crd_validator, k8s_validator
from vela_cue import Case, Outcome, evaluate
from vela_defs import (
    ADDON,
    STEP_CONTEXT,
    canary_object,
    example,
    ready,
    returns,
    template,
    trait_context,
)
from vela_render import expected_files, stale

_LANE = crd_validator(str(REPO / "k8s" / "crd.yaml"), "v1alpha1")
_CANARY = crd_validator(str(REPO / "k8s" / "crd-canary.yaml"), "v1alpha1")
_KUBEVELA = REPO / "tests" / "schemas" / "kubevela"
JASON = {"matchRule": "exact", "key": "end-user", "value": "jason"}
V2 = {"newVersion": "v2"}


@dataclass
class Row:
    id: str
    definition: str
    parameter: dict[str, Any]
    error: str = ""  # a fragment of the evaluator's message: the case must fail with it
    expect: dict[str, Any] = field(default_factory=dict)  # dotted path -> value in the export
    component: str = "reviews"
    extra: str = ""


ROWS = [
    # traffic-lane
    Row(
        "lane declared",
        "traffic-lane",
        {
            "lane": "feature-a",
            "fallback": "feature-b",
            "ttl": "7d",
            "description": "x",
            "port": 9080,
        },
        expect={
            "outputs.traffic-lane.spec": {"fallback": "feature-b", "ttl": "7d", "description": "x"},
            "patch.spec.template.metadata.labels": {"app": "reviews", "lane": "feature-a"},
            "outputs.lane-service.spec.selector": {"app": "reviews"},
        },
    ),
    Row(
        "lane joined",
        "traffic-lane",
        {"lane": "feature-a", "service": "ratings", "declare": False},
        expect={
            "outputs": None,
            "patch.spec.template.metadata.labels": {"app": "ratings", "lane": "feature-a"},
        },
    ),
    Row(
        "strict lane",
        "traffic-lane",
        {"lane": "hotfix", "strict": True},
        expect={"outputs.traffic-lane.spec": {"strict": True}},
    ),
    Row(
        "baseline",
        "traffic-lane",
        {"lane": "baseline", "declare": False, "port": 9080},
        expect={"outputs.traffic-lane": None},
    ),
    Row(
        "baseline declared",
        "traffic-lane",
        {"lane": "baseline"},
        error="the baseline is not a TrafficLane: set declare: false",
    ),
    Row(
        "strict with fallback",
        "traffic-lane",
        {"lane": "a", "strict": True, "fallback": "b"},
        error="a strict lane does not fall back",
    ),
    Row("bad ttl", "traffic-lane", {"lane": "a", "ttl": "7 days"}, error="parameter.ttl"),
    # The CRD and the controller bound ttl to 365d and 32 characters: refused here first.
    Row(
        "ttl at the bound",
        "traffic-lane",
        {"lane": "a", "ttl": "364d23h60m"},
        expect={"outputs.traffic-lane.spec": {"ttl": "364d23h60m"}},
    ),
    Row(
        "ttl over 365d",
        "traffic-lane",
        {"lane": "a", "ttl": "3000000d"},
        error="ttl is at most 365d",
    ),
    Row(
        "ttl over 365d in parts",
        "traffic-lane",
        {"lane": "a", "ttl": "365d1s"},
        error="ttl is at most 365d",
    ),
    Row(
        "ttl past any integer",
        "traffic-lane",
        {"lane": "a", "ttl": "9" * 30 + "d"},
        error="ttl is at most 365d",
    ),
    Row(
        "ttl with leading zeros",
        "traffic-lane",
        {"lane": "a", "ttl": "0000000000007d"},
        expect={"outputs.traffic-lane.spec": {"ttl": "0000000000007d"}},
    ),
    Row("ttl too long", "traffic-lane", {"lane": "a", "ttl": "1s" * 17}, error="parameter.ttl"),
    Row("bad lane name", "traffic-lane", {"lane": "Feature_A"}, error="parameter.lane"),
    Row("port out of range", "traffic-lane", {"lane": "a", "port": 70000}, error="parameter.port"),
    # canary-traffic
    Row(
        "canary header",
        "canary-traffic",
        {"service": "reviews", "versions": V2, "header": JASON, "weight": 10},
        component="reviews-v2",
        expect={
            "outputs.traffic-canary.spec": {
                "service": "reviews",
                "version": "v2",
                "weight": 10,
                "match": [{"headers": {"end-user": {"exact": "jason"}}}],
            },
            "outputs.traffic-canary.metadata.name": "reviews-v2",
            "patch.spec.template.metadata.labels": {"app": "reviews", "lane": "v2"},
        },
    ),
    Row(
        "canary header and uri",
        "canary-traffic",
        {
            "versions": V2,
            "header": {"matchRule": "regex", "key": "cookie", "value": ".*beta=1.*"},
            "uri": {"matchRule": "prefix", "path": "/api/"},
        },
        expect={
            "outputs.traffic-canary.spec.match": [
                {"headers": {"cookie": {"regex": ".*beta=1.*"}}, "uri": {"prefix": "/api/"}}
            ],
            "outputs.traffic-canary.spec.weight": 0,
        },
    ),
    Row(
        "canary weight only",
        "canary-traffic",
        {"versions": V2, "weight": 20},
        expect={
            "outputs.traffic-canary.spec": {"service": "reviews", "version": "v2", "weight": 20}
        },
    ),
    Row(
        "canary bad matchRule",
        "canary-traffic",
        {"versions": V2, "header": {**JASON, "matchRule": "exakt"}},
        error="parameter.header.matchRule",
    ),
    Row(
        "canary weight 101",
        "canary-traffic",
        {"versions": V2, "weight": 101},
        error="parameter.weight",
    ),
    Row(
        "canary new is old",
        "canary-traffic",
        {"versions": {"newVersion": "baseline"}},
        error="parameter.versions.newVersion",
    ),
    Row(
        "canary header in capitals",
        "canary-traffic",
        {"versions": V2, "header": {**JASON, "key": "End-User"}},
        error="parameter.header.key",
    ),
    Row(
        "canary uri with query",
        "canary-traffic",
        {"versions": V2, "uri": {"matchRule": "exact", "path": "/a?b=1"}},
        error="parameter.uri.path",
    ),
    Row(
        "canary long regex",
        "canary-traffic",
        {"versions": V2, "uri": {"matchRule": "regex", "path": "a" * 1025}},
        error="parameter.uri.path",
    ),
    Row("canary without version", "canary-traffic", {"weight": 5}, error="newVersion"),
    # canary-rollout-content
    Row(
        "content header",
        "canary-rollout-content",
        {"component": "reviews", "versions": V2, "header": JASON},
        expect={
            "apply.$params.value.spec": {
                "service": "reviews",
                "version": "v2",
                "weight": 0,
                "match": [{"headers": {"end-user": {"exact": "jason"}}}],
            },
            "apply.$params.value.metadata": {"name": "reviews-v2", "namespace": "shop"},
            "apply.$params.cluster": "",
            "wait.$params.continue": False,
            "fail": None,
        },
    ),
    Row(
        "content uri elsewhere",
        "canary-rollout-content",
        {
            "component": "reviews",
            "versions": V2,
            "uri": {"matchRule": "exact", "path": "/beta"},
            "weight": 5,
            "target": {"cluster": "east", "namespace": "shop-2"},
            "name": "beta",
        },
        expect={
            "apply.$params.cluster": "east",
            "apply.$params.value.metadata": {"name": "beta", "namespace": "shop-2"},
            "apply.$params.value.spec.match": [{"uri": {"exact": "/beta"}}],
        },
    ),
    Row(
        "content without match",
        "canary-rollout-content",
        {"component": "reviews", "versions": V2},
        error="canary-rollout-content needs header or uri",
    ),
    Row(
        "content missing component",
        "canary-rollout-content",
        {"versions": V2, "header": JASON},
        error="parameter.component: incomplete value",
    ),
    Row(
        "content bad matchRule",
        "canary-rollout-content",
        {"component": "reviews", "versions": V2, "header": {**JASON, "matchRule": "glob"}},
        error="parameter.header.matchRule",
    ),
    Row(
        "content routed",
        "canary-rollout-content",
        {"component": "reviews", "versions": V2, "header": JASON},
        extra=returns(
            apply={
                "value": canary_object(
                    {}, observedWeight=0, matches=1, conditions=ready("True", "Routed")
                )
            }
        ),
        expect={"wait.$params.continue": True, "fail": None},
    ),
    Row(
        "content stale status",
        "canary-rollout-content",
        {"component": "reviews", "versions": V2, "header": JASON},
        extra=returns(
            apply={
                "value": canary_object(
                    {},
                    generation=2,
                    observedWeight=0,
                    matches=1,
                    conditions=ready("True", "Routed"),
                )
            }
        ),
        expect={"wait.$params.continue": False, "fail": None},
    ),
    Row(
        "content refused",
        "canary-rollout-content",
        {"component": "reviews", "versions": V2, "header": JASON},
        extra=returns(
            apply={
                "value": canary_object(
                    {}, conditions=ready("False", "InvalidSpec", "spec.version: a lane")
                )
            }
        ),
        expect={
            "fail.$params.message": "TrafficCanary reviews-v2: InvalidSpec: spec.version: a lane",
            "wait.$params.continue": False,
        },
    ),
    Row(
        "content pods starting",
        "canary-rollout-content",
        {"component": "reviews", "versions": V2, "header": JASON},
        extra=returns(
            apply={
                "value": canary_object(
                    {}, conditions=ready("False", "VersionNotAvailable", "no pods")
                )
            }
        ),
        expect={
            "fail": None,
            "wait.$params.continue": False,
            "wait.$params.message": "TrafficCanary reviews-v2: VersionNotAvailable: no pods",
        },
    ),
    # canary-rollout-weight
    Row(
        "weight 10",
        "canary-rollout-weight",
        {
            "component": "reviews",
            "traffic": [{"revision": "baseline", "weight": 90}, {"revision": "v2", "weight": 10}],
        },
        expect={
            "apply.$params.value.spec": {"service": "reviews", "version": "v2", "weight": 10},
            "apply.$params.value.metadata.name": "reviews-v2",
            "read.$params.value.metadata": {"name": "reviews-v2", "namespace": "shop"},
        },
    ),
    Row(
        "weight keeps matches",
        "canary-rollout-weight",
        {"component": "reviews", "traffic": [{"revision": "v2", "weight": 100}]},
        extra=returns(
            read={
                "value": canary_object(
                    {
                        "service": "reviews",
                        "version": "v2",
                        "weight": 10,
                        "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    }
                )
            }
        ),
        expect={
            "apply.$params.value.spec": {
                "service": "reviews",
                "version": "v2",
                "weight": 100,
                "match": [{"headers": {"end-user": {"exact": "jason"}}}],
            }
        },
    ),
    Row(
        "weight after a missing read",
        "canary-rollout-weight",
        {
            "component": "reviews",
            "traffic": [{"revision": "v2", "weight": 0}, {"revision": "baseline", "weight": 100}],
        },
        extra=returns(
            read={"err": 'trafficcanaries.lanes.traffic-lanes.io "reviews-v2" not found'}
        ),
        expect={"apply.$params.value.spec": {"service": "reviews", "version": "v2", "weight": 0}},
    ),
    Row(
        "weights not adding up",
        "canary-rollout-weight",
        {
            "component": "reviews",
            "traffic": [{"revision": "baseline", "weight": 90}, {"revision": "v2", "weight": 20}],
        },
        error="the weights of traffic add up to 100",
    ),
    Row(
        "weight 101",
        "canary-rollout-weight",
        {"component": "reviews", "traffic": [{"revision": "v2", "weight": 101}]},
        error="parameter.traffic.0.weight",
    ),
    Row(
        "two canaries",
        "canary-rollout-weight",
        {
            "component": "reviews",
            "traffic": [{"revision": "v2", "weight": 50}, {"revision": "v3", "weight": 50}],
        },
        error="traffic names exactly one revision besides the baseline",
    ),
    Row(
        "baseline only",
        "canary-rollout-weight",
        {"component": "reviews", "traffic": [{"revision": "baseline", "weight": 100}]},
        error="traffic names exactly one revision besides the baseline",
    ),
    Row(
        "a revision twice",
        "canary-rollout-weight",
        {"component": "reviews", "traffic": [{"revision": "v2", "weight": 50}] * 2},
        error="traffic names each revision once",
    ),
    Row(
        "three revisions",
        "canary-rollout-weight",
        {
            "component": "reviews",
            "traffic": [
                {"revision": "baseline", "weight": 50},
                {"revision": "v2", "weight": 25},
                {"revision": "v3", "weight": 25},
            ],
        },
        error="parameter.traffic",
    ),
    Row(
        "weight missing component",
        "canary-rollout-weight",
        {"traffic": [{"revision": "v2", "weight": 100}]},
        error="parameter.component: incomplete value",
    ),
    # canary-promote, canary-abort
    Row(
        "promote",
        "canary-promote",
        {"component": "reviews", "versions": V2},
        expect={"apply.$params.value.spec": {"service": "reviews", "version": "v2", "weight": 100}},
    ),
    Row(
        "promote routed",
        "canary-promote",
        {"component": "reviews", "versions": V2},
        extra=returns(
            apply={
                "value": canary_object(
                    {}, observedWeight=100, matches=0, conditions=ready("True", "Routed")
                )
            }
        ),
        expect={"wait.$params.continue": True},
    ),
    Row(
        "promote the baseline",
        "canary-promote",
        {"component": "reviews", "versions": {"newVersion": "baseline"}},
        error="parameter.versions.newVersion",
    ),
    Row(
        "abort",
        "canary-abort",
        {"component": "reviews", "versions": V2, "remove": True},
        expect={
            "apply.$params.value.spec": {"service": "reviews", "version": "v2", "weight": 0},
            "remove": None,
        },
    ),
    Row(
        "abort drained removes",
        "canary-abort",
        {"component": "reviews", "versions": V2, "remove": True},
        extra=returns(
            apply={
                "value": canary_object(
                    {}, observedWeight=0, matches=0, conditions=ready("True", "Routed")
                )
            }
        ),
        expect={
            "wait.$params.continue": True,
            "remove.$params.value.metadata": {"name": "reviews-v2", "namespace": "shop"},
        },
    ),
    Row(
        "abort not routed is drained",
        "canary-abort",
        {"component": "reviews", "versions": V2},
        extra=returns(
            apply={"value": canary_object({}, conditions=ready("False", "VersionNotAvailable"))}
        ),
        expect={"wait.$params.continue": True, "remove": None},
    ),
    Row(
        "abort while routes fail waits",
        "canary-abort",
        {"component": "reviews", "versions": V2},
        extra=returns(apply={"value": canary_object({}, conditions=ready("False", "ApplyFailed"))}),
        expect={"wait.$params.continue": False, "fail": None},
    ),
    Row(
        "abort missing component",
        "canary-abort",
        {"versions": V2},
        error="parameter.component: incomplete value",
    ),
]


def _example_rows() -> list[Row]:
    """Every trait and addon step of the example Applications, as a user wrote them."""
    rows = []
    for name in sorted(p.name for p in (ADDON / "examples").glob("*.yaml")):
        app = example(name)
        for comp in app["spec"]["components"]:
            for i, trait in enumerate(comp.get("traits", ())):
                rows.append(
                    Row(
                        f"{name} {comp['name']} trait {i}",
                        trait["type"],
                        trait.get("properties", {}),
                        component=comp["name"],
                    )
                )
        for step in app["spec"].get("workflow", {}).get("steps", ()):
            if (ADDON / "rendered" / f"{step['type']}.yaml").is_file():
                rows.append(
                    Row(f"{name} step {step['name']}", step["type"], step.get("properties", {}))
                )
    return rows


ALL = ROWS + _example_rows()


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    cases = [
        Case(
            template(r.definition),
            r.parameter,
            trait_context(r.component)
            if r.definition in ("traffic-lane", "canary-traffic")
            else STEP_CONTEXT,
            r.extra,
        )
        for r in ALL
    ]
    return dict(zip((r.id for r in ALL), evaluate(cases), strict=True))


def _at(value: Any, path: str) -> Any:
    for key in path.split("."):
        if isinstance(value, list):
            value = value[int(key)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            return None
    return value


def _objects(value: dict[str, Any]) -> list[dict[str, Any]]:
    """The Kubernetes objects an evaluation hands to KubeVela: trait outputs, applied values."""
    objs = list((value.get("outputs") or {}).values())
    for action in value.values():
        params = action.get("$params") if isinstance(action, dict) else None
        if params and "spec" in params.get("value", {}):  # applied; a read or delete names only
            objs.append(params["value"])
    return objs


def _validate(obj: dict[str, Any]) -> list[str]:
    validator = {"TrafficLane": _LANE, "TrafficCanary": _CANARY}.get(obj["kind"]) or k8s_validator(
        obj["kind"]
    )
    return [f"{obj['kind']}: {e.json_path}: {e.message}" for e in validator.iter_errors(obj)]


@pytest.mark.parametrize("row", ALL, ids=lambda r: r.id)
def test_parameter_table(row: Row, outcomes: dict[str, Outcome]) -> None:
    got = outcomes[row.id]
    if row.error:
        assert not got.ok, f"{row.id}: evaluated although it should fail with {row.error!r}"
        assert row.error in got.error, got.error
        return
    assert got.ok, got.error
    for path, want in row.expect.items():
        assert _at(got.value, path) == want, f"{path}: {_at(got.value, path)!r}"
    objs = _objects(got.value)
    # One routing table per host: the controller's. No definition writes one of its own.
    assert not {o["kind"] for o in objs} & {"VirtualService", "DestinationRule"}
    assert objs or "patch" in got.value, "nothing produced"
    assert [p for o in objs for p in _validate(o)] == []
    if row.definition in ("traffic-lane", "canary-traffic"):
        labels = got.value["patch"]["spec"]["template"]["metadata"]["labels"]
        assert set(labels) == {"app", "lane"}


def test_invalid_rows_cover_the_issue_list() -> None:
    errors = {r.id for r in ROWS if r.error}
    assert {
        "canary bad matchRule",
        "canary weight 101",
        "weights not adding up",
        "content missing component",
    } <= errors


def test_rendered_yaml_is_up_to_date_with_the_cue() -> None:
    assert stale(expected_files()) == [], "run make kubevela-defs"


@pytest.mark.parametrize("path", sorted((ADDON / "rendered").glob("*.yaml")), ids=lambda p: p.stem)
def test_definitions_are_valid_kubevela_definitions(path) -> None:
    import yaml

    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    crd = {
        "TraitDefinition": "traitdefinitions",
        "WorkflowStepDefinition": "workflowstepdefinitions",
    }
    validator = crd_validator(str(_KUBEVELA / f"core.oam.dev_{crd[doc['kind']]}.yaml"), "v1beta1")
    assert [e.message for e in validator.iter_errors(doc)] == []
    # Closed: a misspelled key fails (the schemas alone would let it through).
    bad = {**doc, "spec": {**doc["spec"], "schematic": {"cue": {"templates": "x"}}}}
    assert any("templates" in e.message for e in validator.iter_errors(bad))


def test_the_staleness_check_sees_edits_and_strays() -> None:
    from vela_render import RENDERED, render_resources

    files = {RENDERED.parent / "resources" / n: t for n, t in render_resources().items()}
    first = next(iter(files))
    edited = {**files, first: files[first] + "# edited\n"}
    problems = stale(edited)
    assert str(first.relative_to(REPO)) in problems
    assert any("not generated by anything" in p and "rendered/" in p for p in problems)
