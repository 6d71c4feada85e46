"""Helpers for the deploy tests: repository paths, the metric names metarec exports, PromQL names, tools."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from metarec.metrics import Metrics, TrainerMetrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = REPO / "k8s"
CACHE_BIN = Path(os.environ.get("METAREC_CACHE", Path.home() / ".cache" / "metarec")) / "bin"
TOOLS_HINT = "install the deploy tools with `make ops-tools` (deploy/ops.mk)"

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}


def exported_metric_names() -> set[str]:
    """Every sample name the worker and the continual trainer can export, from fresh registries
    (never hard-coded twice)."""
    registry = CollectorRegistry()
    Metrics.create(registry)
    TrainerMetrics.create(registry)  # its names all start metarec_trainer_: no clash with the worker's
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
    return names


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_DURATION = re.compile(r"\b(?:\d+(?:ms|[smhdwy]))+\b")
_NUMBER = re.compile(r"\b\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan", "by", "without", "on", "ignoring",
             "group_left", "group_right"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric (or recording rule) names an expression selects: identifiers that are not
    functions, keywords, label names or Grafana variables."""
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\w+", " ", text)
    text = _DURATION.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names: set[str] = set()
    for m in _IDENT.finditer(text):
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or m.group() in _KEYWORDS:
            continue  # a function call or an operator
        names.add(m.group())
    return names


def tool(name: str, env: str) -> Path:
    """A required external tool: $<env>, then the ops cache, then PATH. Fails (never skips) when missing."""
    candidates = [os.environ.get(env), str(CACHE_BIN / name), shutil.which(name)]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    pytest.fail(f"{name} not found (${env}, {CACHE_BIN}, PATH): {TOOLS_HINT}")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
