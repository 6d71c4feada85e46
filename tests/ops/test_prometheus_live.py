"""A real Prometheus scrapes a real worker fed through the real broker, and every expression an
operator depends on — each Grafana panel target, each recording rule, each alert and its sides —
returns series through the HTTP API. The rule groups load and evaluate healthy.

Runs in CI (``make test``) and alone with ``make prometheus-live-test``; a missing prometheus
binary fails with a hint to run ``make ops-tools``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from metarec.metrics import Metrics, TrainerMetrics
from tests.broker.conftest import WorkerProcess
from tests.ops.conftest import SCRAPE_S
from tests.ops.exprs import Query, dashboard_queries, needs_a_trainer, rule_queries, rules, template_values
from tests.ops.live import (
    ADAPTER_JOB,
    DASHBOARD,
    RULE_FILES,
    TRAINER_JOB,
    EventFeeder,
    PrometheusServer,
    QueryError,
)

pytestmark = pytest.mark.prometheus

SETTLE_TIMEOUT_S = 180.0  # from Prometheus up to every check satisfied, on a loaded 2-core box

# Metrics the worker defines but never records, with why; the test fails when one starts being
# recorded (then delete its entry) and accepts NaN-only results from expressions over it.
KNOWN_UNOBSERVED: dict[str, str] = {}
# Counters of faults a healthy run does not have: their series must exist, not move. The hostile,
# outage and chaos tests make each of them move (tests/pipeline/test_agent_hostile.py, tests/broker).
FAULT_ONLY: dict[str, str] = {
    "metarec_delivery_retries": "a dead letter or re-keyed event the broker did not acknowledge",
    "metarec_agent_restarts": "the agent crashed (no input may cause it)",
    "metarec_batch_errors": "a user's adaptation raised",
    "metarec_log_lines_held": "repeated Kafka-library lines, during a broker outage",
}
# Counters that move only when a model version is announced on the models topic (by the continual
# trainer, a worker's rollback or `metarec models rollback`): this test announces none, so their
# series must exist, not move. The hot-swap and rollback tests make each of them move.
ON_ANNOUNCEMENT: dict[str, str] = {
    "metarec_model_swaps": "the worker switched (or failed to switch) to an announced version",
    "metarec_model_rollbacks": "a new version's live logloss fell behind the previous version's",
}


def _trainer_metrics() -> set[str]:
    registry = CollectorRegistry()
    TrainerMetrics.create(registry)
    return {family.name for family in registry.collect()}


# The continual trainer's series (and its scrape target) exist only where `metarec trainer` runs; this
# test runs a worker alone, so an expression over them must evaluate without error but may return
# nothing. Its lifecycle alerts are unit-tested by promtool (deploy/prometheus/tests/alerts_test.yml).
TRAINER_METRICS = _trainer_metrics()


def only_with_a_trainer(expr: str) -> bool:
    return needs_a_trainer(expr, TRAINER_METRICS, TRAINER_JOB)

Check = Callable[[], "str | None"]  # None: satisfied; a string: why not (yet). QueryError: failed for good.


def expression(prom: PrometheusServer, q: Query) -> Check:
    """``q`` evaluates; if it must return, it gives ≥1 series with a value that is not NaN."""
    known_nan = any(name in q.expr for name in KNOWN_UNOBSERVED)

    def check() -> str | None:
        result = prom.query(q.expr)
        if not q.must_return:
            return None
        if not result:
            return "returned no series"
        if not known_nan and all(math.isnan(v) for _, v in result):
            return f"returned only NaN ({len(result)} series)"
        return None

    return check


def exported_metrics(prom: PrometheusServer) -> dict[str, Check]:
    """Every metric the worker defines has series under the job; counters and histograms moved."""
    registry = CollectorRegistry()
    Metrics.create(registry)
    checks: dict[str, Check] = {}
    for family in registry.collect():
        sample = {"counter": "_total", "histogram": "_count", "info": "_info"}.get(family.type, "")
        selector = f'{family.name}{sample}{{job="{ADAPTER_JOB}"}}'
        moved = (family.type in ("counter", "histogram") and family.name not in KNOWN_UNOBSERVED
                 and family.name not in FAULT_ONLY and family.name not in ON_ANNOUNCEMENT)

        def check(selector: str = selector, moved: bool = moved) -> str | None:
            result = prom.query(f"sum({selector})")
            if not result:
                return "no series"
            return "never incremented / observed" if moved and result[0][1] <= 0 else None

        checks[f"metric {family.name} ({family.type}): {selector}"] = check
    return checks


def job_variable(prom: PrometheusServer, dashboard: dict) -> dict[str, Check]:
    """Each ``label_values(selector, label)`` variable offers its current value (one over the
    trainer's series offers it, or nothing: no trainer runs here)."""
    checks: dict[str, Check] = {}
    current = template_values(dashboard)
    for var in dashboard["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", str(var.get("definition", "")).strip())
        if var.get("type") != "query" or not m:
            continue
        selector, label, want = m.group(1), m.group(2), current[var["name"]]
        optional = only_with_a_trainer(selector)

        def check(selector: str = selector, label: str = label, want: str = want,
                  optional: bool = optional) -> str | None:
            offered = prom.api(f"label/{label}/values", **{"match[]": selector})
            if want in offered or (optional and not offered):
                return None
            return f"offers {offered}, not the current value {want!r}"

        checks[f"dashboard variable ${var['name']}: {var['definition']}"] = check
    return checks


def rule_groups_healthy(prom: PrometheusServer) -> Check:
    expected = [(group, r.get("record") or r.get("alert")) for group, r in rules(RULE_FILES)]

    def check() -> str | None:
        loaded = [(g["name"], r["name"], r["health"], r.get("lastError", ""))
                  for g in prom.api("rules")["groups"] for r in g["rules"]]
        if sorted((g, n) for g, n, _, _ in loaded) != sorted(expected):
            return f"loaded rules {sorted((g, n) for g, n, _, _ in loaded)} != the rule files' {sorted(expected)}"
        bad = [f"{g}/{n}: {h} {e}".strip() for g, n, h, e in loaded if h != "ok"]
        return f"not healthy: {bad}" if bad else None

    return check


def settle(checks: dict[str, Check], timeout: float) -> dict[str, str]:
    """Run the checks until each is satisfied once; what is left (or failed) after ``timeout``."""
    pending, why, failed = dict(checks), {k: "not evaluated" for k in checks}, {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, check in list(pending.items()):
            try:
                reason = check()
            except QueryError as e:
                failed[name] = f"Prometheus error: {e}"
                del pending[name]
                continue
            if reason is None:
                del pending[name]
            else:
                why[name] = reason
        if pending:
            time.sleep(SCRAPE_S)
    return {**failed, **{name: why[name] for name in pending}}


def user_model(worker: WorkerProcess, user_id: str) -> Check:
    """GET /users/{id}/model.onnx returns a self-contained model that onnxruntime runs."""
    import urllib.error
    import urllib.request

    import numpy as np
    import onnxruntime as ort

    def check() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/users/{user_id}/model.onnx", timeout=30) as r:
                data = r.read()
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code}"
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        width = sess.get_inputs()[0].shape[1]
        scores = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, width), np.int64)})[0]
        return None if scores.ndim == 2 and scores.shape[0] == 1 else f"unexpected output shape {scores.shape}"

    return check


# setup (Kafka, a briefly trained model, the worker) can take minutes on a loaded box; the settle
# loop is bounded by SETTLE_TIMEOUT_S
@pytest.mark.timeout(600)
def test_every_dashboard_and_rule_expression_returns_series(prometheus: PrometheusServer, worker: WorkerProcess,
                                                            feeder: EventFeeder) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [dataclasses.replace(q, must_return=False) if only_with_a_trainer(q.expr) else q
               for q in dashboard_queries(dashboard, SCRAPE_S) + rule_queries(RULE_FILES)]
    recorded = [Query(f"recorded series {r['record']}", r["record"]) for _, r in rules(RULE_FILES) if "record" in r]
    target = Query(f"scrape target: up{{job={ADAPTER_JOB!r}}} == 1", f'up{{job="{ADAPTER_JOB}"}} == 1')
    checks: dict[str, Check] = {f"{q.where}: {q.expr}": expression(prometheus, q)
                                for q in [target, *queries, *recorded]}
    checks |= exported_metrics(prometheus) | job_variable(prometheus, dashboard)
    checks["rule groups (/api/v1/rules)"] = rule_groups_healthy(prometheus)

    export = user_model(worker, feeder.events[0].user_id)
    checks["a user's model exported from the worker"] = export
    stop = threading.Event()

    def keep_exporting() -> None:  # exports are sporadic; keep some in every rate() window
        while not stop.wait(1.0):
            try:
                export()
            except Exception:  # noqa: BLE001 - the check above reports failures
                pass

    exporter = threading.Thread(target=keep_exporting, daemon=True)
    exporter.start()
    started = time.monotonic()
    try:
        failures = settle(checks, SETTLE_TIMEOUT_S)
    finally:
        stop.set()
        exporter.join(30)
    for name in KNOWN_UNOBSERVED:  # a fixed metric must leave the list
        moved = prometheus.query(f'sum({name}_count{{job="{ADAPTER_JOB}"}}) > 0')
        if moved:
            failures[f"KNOWN_UNOBSERVED {name}"] = "is recorded now: delete its entry in KNOWN_UNOBSERVED"

    assert feeder.error is None, f"the event feeder failed: {feeder.error!r}"
    assert not failures, (
        f"{len(failures)} of {len(checks)} checks unmet after {time.monotonic() - started:.0f} s "
        f"({feeder.sent} events and {feeder.malformed} malformed messages fed):\n"
        + "\n".join(f"- {name}\n    -> {why}" for name, why in failures.items())
        + f"\n--- worker log:\n{worker.tail(15)}\n--- prometheus log:\n{prometheus.tail(10)}")
