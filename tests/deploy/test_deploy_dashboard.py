"""The Grafana dashboard: fixed uid, provisioned datasource, and only metrics metarec exports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from deploy_helpers import DEPLOY, exported_metric_names, load_yaml, promql_metric_names

pytestmark = pytest.mark.deploy

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "metarec.json"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def datasource_uid() -> str:
    ds = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert len(ds) == 1 and ds[0]["type"] == "prometheus"
    return str(ds[0]["uid"])


def test_uid_is_fixed(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "metarec-overview"


def test_datasource_variable_defaults_to_the_provisioned_uid(dashboard: dict[str, Any]) -> None:
    var = {v["name"]: v for v in dashboard["templating"]["list"]}["datasource"]
    assert var["type"] == "datasource" and var["query"] == "prometheus"
    assert var["current"]["value"] == datasource_uid()


def test_every_target_has_an_expr_and_uses_the_variable(dashboard: dict[str, Any]) -> None:
    graph = [p for p in panels(dashboard) if p["type"] != "row"]
    assert graph
    for p in graph:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t.get("expr", "").strip(), f"{p['title']} / {t.get('refId')} has no expr"


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_dashboard_uses_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    known = exported_metric_names() | {"up"}
    used = {n for p in panels(dashboard) for t in p.get("targets", []) for n in promql_metric_names(t["expr"])}
    assert used - known == set(), f"unknown metrics in the dashboard: {sorted(used - known)}"


def test_dashboard_covers_every_exported_metric(dashboard: dict[str, Any]) -> None:
    used = {n for p in panels(dashboard) for t in p.get("targets", []) for n in promql_metric_names(t["expr"])}
    families = {n.removesuffix(s) for n in exported_metric_names()
                for s in ("_bucket", "_sum", "_count", "_total", "_info") if n.endswith(s)}
    families |= {n for n in exported_metric_names() if not n.endswith(("_bucket", "_sum", "_count", "_total", "_info"))}
    missing = {f for f in families if not any(u.startswith(f) for u in used)}
    assert not missing, f"metrics without a panel: {sorted(missing)}"


def test_latency_quantiles(dashboard: dict[str, Any]) -> None:
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    for q in ("0.5", "0.95", "0.99"):
        assert any(e.startswith(f"histogram_quantile({q},") and "metarec_event_to_recommendation_seconds_bucket" in e
                   for e in exprs), q


def test_dashboard_provider_points_at_the_compose_mount() -> None:
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "metarec.yml")["providers"][0]
    compose = load_yaml(DEPLOY / "docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
