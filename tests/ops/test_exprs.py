"""The expression helpers behind the live Prometheus test: no server needed."""

from __future__ import annotations

import json

import pytest

from tests.ops.exprs import (
    dashboard_queries,
    grafana_builtins,
    needs_a_trainer,
    operands,
    parse_duration,
    rule_queries,
    substitute,
)
from tests.ops.live import DASHBOARD, RULE_FILES


@pytest.mark.parametrize(("expr", "sides"), [
    ('up{job="metarec-adapter"} == 0', ['up{job="metarec-adapter"}']),
    ('absent(up{job="metarec-adapter"})', ['up{job="metarec-adapter"}']),
    ("absent_over_time(x[5m])", ["x"]),
    ("a:sum > 1000 and deriv(a:sum[10m]) > 0", ["a:sum", "deriv(a:sum[10m])"]),
    ('x{m="adapted"} > ignoring(m) x{m="init"}\n  and ignoring(m) n{m="adapted"} > 500',
     ['x{m="adapted"}', 'x{m="init"}', 'n{m="adapted"}']),
    ("sum(rate(a[5m])) > 0 and sum(rate(b[5m])) == 0", ["sum(rate(a[5m]))", "sum(rate(b[5m]))"]),
    ("(a >= bool 1) or on(x) group_left(y) (b <= 2)", ["a", "b"]),
    ('sum by (le) (rate(h{le!="0.5", k=~"a|b"}[5m]))', ['sum by (le) (rate(h{le!="0.5", k=~"a|b"}[5m]))']),
    ("(a) / (b)", ["(a) / (b)"]),
    ("sorted_order_total unless android", ["sorted_order_total", "android"]),
])
def test_operands(expr: str, sides: list[str]) -> None:
    assert operands(expr) == sides


def test_grafana_intervals_follow_grafana() -> None:
    v = grafana_builtins({"gridPos": {"w": 12}}, range_s=1800, scrape_s=1)
    assert v["__interval"] == "1875ms" and v["__rate_interval"] == "4s" and v["__range"] == "1800s"
    v = grafana_builtins({"interval": "30s"}, range_s=1800, scrape_s=5)
    assert v["__interval"] == "30s" and v["__rate_interval"] == "35s"
    assert parse_duration("1h30m") == 5400 and parse_duration("500ms") == 0.5


def test_substitute_every_form_and_refuse_unknown_names() -> None:
    vals = {"job": "metarec-adapter", "__rate_interval": "4s"}
    assert substitute('a{job=~"$job"}[$__rate_interval] ${job} ${job:regex} [[job]]', vals) == \
        'a{job=~"metarec-adapter"}[4s] metarec-adapter metarec-adapter metarec-adapter'
    with pytest.raises(ValueError, match=r"\$nope"):
        substitute("a{x=~\"$nope\"}", vals)


def test_every_project_expression_becomes_a_query() -> None:
    dash = dashboard_queries(json.loads(DASHBOARD.read_text()), scrape_s=1)
    assert dash and all("$" not in q.expr and "[[" not in q.expr for q in dash)
    rules = rule_queries(RULE_FILES)
    assert {q.where for q in rules if not q.must_return} == {q.where.split(",")[0] for q in rules if "alert" in q.where}
    assert all(q.must_return for q in rules if "recording" in q.where)


@pytest.mark.parametrize(("expr", "needs"), [
    ("sum(increase(metarec_trainer_rounds_total[6h])) >= 3", True),
    ('histogram_quantile(0.5, sum by (le) (rate(metarec_trainer_training_seconds_bucket{job=~"x"}[1h])))', True),
    ('count(up{job="metarec-trainer"})', True),
    ('max(metarec_model_age_seconds) > 21600 and on() count(up{job = "metarec-trainer"}) > 0', True),
    ("max(metarec_model_age_seconds)", False),
    ('up{job="metarec-adapter"} == 0', False),
    ('up{job="metarec-trainer-canary"}', False),
    ("metarec_trainer_rounds_totally_else", False),
])
def test_needs_a_trainer(expr: str, needs: bool) -> None:
    names = {"metarec_trainer_rounds", "metarec_trainer_training_seconds"}
    assert needs_a_trainer(expr, names, "metarec-trainer") is needs
