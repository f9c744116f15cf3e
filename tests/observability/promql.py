"""What the observability tests read: the dashboards' and alert rules' queries, and the metric names in them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "helm" / "dashboards"
RULES = ROOT / "deploy" / "helm" / "files" / "alert-rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "alert-rules.test.yaml"

# Series Prometheus itself writes for every target; dashboards and rules may name them.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
# Grafana's built-in interval variables, as a concrete range Prometheus accepts.
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


@dataclass(frozen=True)
class Query:
    where: str  # "dashboard.json / panel title / refId" or "alert-rules.yaml / alert name"
    expr: str


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included; rows themselves are not panels."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries() -> list[Query]:
    return [Query(f"{name} / {panel['title']} / {target['refId']}", target["expr"])
            for name, board in dashboards().items() for panel in panels(board) for target in panel["targets"]]


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def rule_queries() -> list[Query]:
    return [Query(f"{RULES.name} / {rule.get('alert') or rule.get('record')}", rule["expr"]) for rule in rules()]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (strings, label matchers, ranges and grouping labels removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b(?:group_left|group_right)\b", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\()?", text):
        word, call = m.group(1), m.group(2)
        if call is None and word.lower() not in _KEYWORDS:
            names.add(word)
    return names


def concrete(expr: str, job: str) -> str:
    """The query Grafana would send with `$job` set to `job` (Grafana's interval variables as fixed ranges)."""
    for var, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(var, value)
    return expr.replace("${job}", job).replace("$job", job)
