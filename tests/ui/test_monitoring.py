"""``k8s/monitoring/``: the rules pass ``promtool check rules`` and their unit tests
(``promtool test rules``), record exactly the PromQL ``lanes ui`` runs, and the Grafana
dashboard is built on what they record. (The live check of rules and dashboard against a real
Prometheus is in ``test_ui_live.py``.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from ui_helpers import ROOT, need_binary

from lane_router.ui import queries

MONITORING = ROOT / "k8s" / "monitoring"
RULES = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RECORDED = {
    "lanes:requests:rate1m": "rate",
    "lanes:request_errors:rate1m": "errors",
    "lanes:request_duration_seconds:p99_1m": "p99",
}


def rule_groups() -> list[dict[str, Any]]:
    """The PrometheusRule's groups, as a plain Prometheus rule file holds them."""
    doc = yaml.safe_load(RULES.read_text())
    assert doc["kind"] == "PrometheusRule"
    return doc["spec"]["groups"]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def _promtool(tmp_path: Path, *args: str) -> str:
    promtool = need_binary("promtool", "prometheus")
    (tmp_path / "lanes-rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}))
    shutil.copy(Path(__file__).with_name("rules_test.yaml"), tmp_path)
    done = subprocess.run(
        [promtool, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    out = _promtool(tmp_path, "check", "rules", "lanes-rules.yaml")
    assert "SUCCESS: 6 rules found" in out


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    assert "SUCCESS" in _promtool(tmp_path, "test", "rules", "rules_test.yaml")


def test_recording_rules_are_the_uis_queries() -> None:
    ui = queries("1m")
    records = {r["record"]: r["expr"] for g in rule_groups() for r in g["rules"] if "record" in r}
    assert records == {name: ui[key] for name, key in RECORDED.items()}
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    assert alerts == {
        "LaneErrorRateAboveBaseline",
        "CanaryErrorRateAboveBaseline",
        "LanePropagationBreak",
    }


def test_dashboard_reads_only_recorded_series() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    exprs = dashboard_exprs()
    assert exprs
    for expr in exprs:
        names = set(re.findall(r"\b(lanes[:_][a-z0-9_:]+)", expr))
        assert names <= set(RECORDED) | {"lanes_route_info"}, expr
    # The propagation-break panel is the alert's expression.
    alert = next(
        r for g in rule_groups() for r in g["rules"] if r.get("alert") == "LanePropagationBreak"
    )
    assert " ".join(alert["expr"].split()) in {" ".join(e.split()) for e in exprs}
