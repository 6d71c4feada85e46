"""The PromQL the operators look at: every dashboard target and every rule, ready to run.

Pure (no Prometheus, no worker): :func:`dashboard_queries` substitutes Grafana's variables the
way Grafana would for a live panel; :func:`rule_queries` turns each alert into the expression
plus its non-comparison sides (a healthy system's alert returns nothing, its sides must not);
:func:`operands` is the small top-level PromQL splitter behind that; :func:`needs_a_trainer` tells
the expressions over the continual trainer's series, which a worker alone cannot make return.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

GRAFANA_ROW_WIDTH_PX = 1920  # a 24-column Grafana row on a common screen; sets the default maxDataPoints


@dataclass(frozen=True)
class Query:
    """One expression to evaluate. ``must_return`` is False for an alert's own condition."""

    where: str  # e.g. "panel 'Workers up' (id 2) target A" or "alert MetarecWorkerDown, side 1"
    expr: str
    must_return: bool = True


# ---------------------------------------------------------------- Grafana dashboard

def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])


def parse_duration(text: str) -> float:
    """Seconds in a Grafana/Prometheus duration such as ``30m``, ``1h30m`` or ``500ms``."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|[smhdwy])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def prom_duration(seconds: float) -> str:
    """A PromQL duration literal, whole milliseconds (Grafana sends e.g. ``4s`` or ``1875ms``)."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def dashboard_range_s(dashboard: dict[str, Any]) -> float:
    """The default time range (``time.from`` = ``now-30m``, ``to`` = ``now``) in seconds."""
    t = dashboard.get("time", {"from": "now-6h", "to": "now"})
    start, end = t["from"], t["to"]
    if end != "now" or not start.startswith("now-"):
        raise ValueError(f"dashboard time range {t} is not relative to now")
    return parse_duration(start.removeprefix("now-").split("/")[0])


def grafana_builtins(panel: dict[str, Any], range_s: float, scrape_s: float) -> dict[str, str]:
    """``$__interval``, ``$__rate_interval``, ``$__range`` … as Grafana computes them for ``panel``.

    ``$__interval`` = max(min interval, range / maxDataPoints), the min interval being the
    panel's ``interval`` or the datasource's ``timeInterval`` (= the scrape interval);
    ``$__rate_interval`` = max(``$__interval`` + scrape interval, 4 × scrape interval).
    """
    min_interval = parse_duration(panel["interval"]) if panel.get("interval") else scrape_s
    width_px = panel.get("gridPos", {}).get("w", 24) / 24 * GRAFANA_ROW_WIDTH_PX
    max_points = panel.get("maxDataPoints") or width_px
    interval = max(min_interval, range_s / max_points)
    rate_interval = max(interval + scrape_s, 4 * scrape_s)
    return {
        "__interval": prom_duration(interval), "__interval_ms": str(round(interval * 1000)),
        "__rate_interval": prom_duration(rate_interval), "__rate_interval_ms": str(round(rate_interval * 1000)),
        "__range": prom_duration(range_s), "__range_s": str(round(range_s)), "__range_ms": str(round(range_s * 1000)),
    }


def template_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each templating variable's current value (a multi-value or All selection as a regex)."""
    out: dict[str, str] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        value = var.get("current", {}).get("value")
        if value in ("$__all", ["$__all"]):
            value = var.get("allValue") or ".*"
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else "(" + "|".join(value) + ")"
        if value is None:
            raise ValueError(f"dashboard variable ${var['name']} has no current value")
        out[var["name"]] = str(value)
    return out


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace ``$name``, ``${name}``, ``${name:fmt}`` and ``[[name]]``; an unknown name is an error."""
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(one, expr)


def dashboard_queries(dashboard: dict[str, Any], scrape_s: float) -> list[Query]:
    """Every panel target's ``expr`` with the variables a live panel would send."""
    range_s = dashboard_range_s(dashboard)
    variables = template_values(dashboard)
    out = []
    for p in panels(dashboard):
        for t in p.get("targets", []):
            if t.get("hide") or not t.get("expr"):
                continue
            values = {**variables, **grafana_builtins(p, range_s, scrape_s)}
            out.append(Query(f"panel {p.get('title')!r} (id {p.get('id')}) target {t.get('refId')}",
                             substitute(t["expr"], values)))
    return out


# ---------------------------------------------------------------- rules

def rules(rule_files: list[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in rule_files:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield group["name"], rule


def rule_queries(rule_files: list[Path]) -> list[Query]:
    """Recording rules: the expression. Alerts: the expression (may be empty) and its sides."""
    out = []
    for _, rule in rules(rule_files):
        expr = rule["expr"].strip()
        if "record" in rule:
            out.append(Query(f"recording rule {rule['record']}", expr))
            continue
        out.append(Query(f"alert {rule['alert']}", expr, must_return=False))
        sides = operands(expr)
        if sides != [expr]:
            out += [Query(f"alert {rule['alert']}, side {i}", s) for i, s in enumerate(sides, 1)]
    return out


def needs_a_trainer(expr: str, trainer_metrics: set[str], trainer_job: str) -> bool:
    """True when ``expr`` selects one of the trainer's metrics (family names, e.g.
    ``metarec_trainer_rounds``) or its scrape target (``job="<trainer_job>"``, ``=~`` too)."""
    if re.search(r'\bjob\s*=~?\s*"' + re.escape(trainer_job) + '"', expr):
        return True
    return any(re.search(rf"\b{re.escape(name)}(?:_total|_bucket|_sum|_count|_info)?\b", expr)
               for name in trainer_metrics)


# ---------------------------------------------------------------- a top-level PromQL splitter

# Binary operators that make a healthy system's alert return nothing, loosest binding first.
_LEVELS = (("or",), ("and", "unless"), ("==", "!=", ">=", "<=", ">", "<"))
_WORD = re.compile(r"[A-Za-z0-9_:]")
_MODIFIERS = re.compile(r"^\s*(?:bool\b)?\s*(?:(?:on|ignoring)\s*\([^)]*\))?\s*"
                        r"(?:(?:group_left|group_right)\b\s*(?:\([^)]*\))?)?\s*")
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?(?:inf|nan)$", re.IGNORECASE)
_ABSENT = re.compile(r"^(absent|absent_over_time)\s*\((.*)\)$", re.DOTALL)


def _top_level(expr: str) -> Iterator[int]:
    """Indexes of ``expr`` outside brackets, braces, parentheses and string literals."""
    depth, quote, escaped = 0, "", False
    for i, c in enumerate(expr):
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            yield i


def _split(expr: str, ops: tuple[str, ...]) -> list[str]:
    """``expr`` split at each top-level occurrence of one of ``ops`` (longest operators first)."""
    top = set(_top_level(expr))
    parts, start, i = [], 0, 0
    while i < len(expr):
        op = next((o for o in ops if expr.startswith(o, i) and all(j in top for j in range(i, i + len(o)))), None)
        end = i + len(op) if op else i
        if op and op[0].isalpha() and ((i and _WORD.match(expr[i - 1])) or _WORD.match(expr[end:end + 1] or " ")):
            op = None  # part of a longer identifier
        if op is None:
            i += 1
            continue
        parts.append(expr[start:i])
        start = i = end
    parts.append(expr[start:])
    return parts


def _wrapped(expr: str) -> bool:
    """True when ``expr`` is one parenthesised group: ``(…)``, not ``(a) + (b)``."""
    if not (expr.startswith("(") and expr.endswith(")")):
        return False
    top = list(_top_level(expr + " "))
    return top == [len(expr)]  # nothing but the trailing pad lies outside the outer parentheses


def _unwrap(expr: str) -> str:
    """Drop vector-matching modifiers in front of an operand and parentheses around it."""
    expr = _MODIFIERS.sub("", expr, count=1).strip()
    while _wrapped(expr):
        expr = _MODIFIERS.sub("", expr[1:-1], count=1).strip()
    return expr


def operands(expr: str) -> list[str]:
    """The sides of ``expr`` that a live system must return series for.

    Splits at top-level set operators and comparisons (``A > 1000 and deriv(B[10m]) > 0`` gives
    ``A`` and ``deriv(B[10m])``), drops scalar literals, and looks inside ``absent(X)`` (gives
    ``X``). An expression with none of these is its own single operand.
    """
    expr = _unwrap(expr.strip())
    for ops in _LEVELS:
        parts = _split(expr, ops)
        if len(parts) > 1:
            return [o for p in parts for o in operands(p)]
    if _NUMBER.match(expr):
        return []
    m = _ABSENT.match(expr)
    if m and _wrapped(expr[len(m.group(1)):].strip()):
        inner = m.group(2).strip()
        return operands(re.sub(r"\[[^\]]*\]$", "", inner) if m.group(1) == "absent_over_time" else inner)
    return [expr]
