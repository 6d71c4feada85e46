"""The Prometheus config and rules pass the real promtool, and name only metrics metarec exports."""

from __future__ import annotations

import subprocess

import pytest
from deploy_helpers import DEPLOY, exported_metric_names, load_yaml, promql_metric_names, tool

pytestmark = pytest.mark.deploy

PROM = DEPLOY / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool("promtool", "METAREC_PROMTOOL")), *args], cwd=PROM,
                          check=False, capture_output=True, text=True, timeout=120)


def test_rule_files_exist() -> None:
    assert RULE_FILES, "no rule files under deploy/prometheus/rules"


def test_promtool_check_config() -> None:
    r = promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_check_rules() -> None:
    r = promtool("check", "rules", *[str(p) for p in RULE_FILES])
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_alert_unit_tests() -> None:
    r = promtool("test", "rules", "tests/alerts_test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_rejects_a_broken_rule(tmp_path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(rate(metarec_events_consumed_total[5m])\n")
    assert promtool("check", "rules", str(bad)).returncode != 0


def rules() -> list[dict]:
    return [r for p in RULE_FILES for g in load_yaml(p)["groups"] for r in g["rules"]]


def test_rules_use_only_exported_metrics() -> None:
    known = exported_metric_names() | {"up"} | {r["record"] for r in rules() if "record" in r}
    unknown = {(r.get("alert") or r.get("record"), n) for r in rules()
               for n in promql_metric_names(r["expr"]) if n not in known}
    assert not unknown, f"rules select metrics metarec does not export: {sorted(unknown)}"


def test_required_alerts_exist() -> None:
    alerts = {r["alert"] for r in rules() if "alert" in r}
    for name in ("MetarecWorkerDown", "MetarecWorkerAbsent", "MetarecConsumerLagGrowing",
                 "MetarecDeadLetterSpike", "MetarecLatencySLOBreach",
                 "MetarecAdaptedLoglossWorseThanInit", "MetarecAdaptedAUCBelowInit", "MetarecAgentRestarted",
                 "MetarecBrokerUnreachable", "MetarecDeliveryRetrying", "MetarecBatchErrors",
                 "MetarecModelStale", "MetarecModelRolledBack", "MetarecModelSwapFailed", "MetarecTrainerDown",
                 "MetarecTrainerRejecting", "MetarecTrainerRoundFailed"):
        assert name in alerts
    assert all(r.get("labels", {}).get("severity") for r in rules() if "alert" in r)


def test_scrape_job_matches_the_rules() -> None:
    cfg = load_yaml(PROM / "prometheus.yml")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert "metarec-adapter" in jobs and "metarec-trainer" in jobs
    assert any('job="metarec-adapter"' in r["expr"] for r in rules())
    assert any('job="metarec-trainer"' in r["expr"] for r in rules())


def test_every_rule_file_is_unit_tested() -> None:
    tested = load_yaml(PROM / "tests" / "alerts_test.yml")["rule_files"]
    assert sorted((PROM / "tests" / f).resolve() for f in tested) == [p.resolve() for p in RULE_FILES]


def test_promql_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le) (rate(a_bucket{job=~"$job", le!="x"}[$__rate_interval])))'
            ' / clamp_min(b_total + c:rec offset 5m, 1e-9) > ignoring(model) d and on() up == 0')
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "c:rec", "d", "up"}
