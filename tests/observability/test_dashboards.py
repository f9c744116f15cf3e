"""The Grafana dashboards: up to date with their generator, the shape Grafana and the chart's sidecar expect,
and every metric a dashboard or alert rule names is one the code exports, under the name it is exposed by."""

from __future__ import annotations

import functools
import importlib.util
import sys
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from a2c.observe import metrics
from tests.observability import promql

BOARDS = promql.dashboards()
QUERIES = promql.dashboard_queries() + promql.rule_queries()


@functools.cache
def exposed_names() -> dict[str, str]:
    """Sample name -> metric family, exactly as prometheus_client exposes them (counters get _total, histograms
    _bucket/_count and _sum only without negative buckets): one probe series per metric is rendered, then removed."""
    wrappers = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    probes = [(m, ["probe"] * len(m._labelnames)) for m in wrappers]  # labelled metrics show no samples until used
    for m, values in probes:
        m.labels(*values)
    try:
        text = generate_latest(REGISTRY).decode()
    finally:
        for m, values in probes:
            m.remove(*values)
    return {s.name: f.name for f in text_string_to_metric_families(text) for s in f.samples
            if not (f.name.endswith("_created") and f.type == "gauge")}  # creation timestamps, no dashboard's


def test_generated_dashboards_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("gen_dashboards", promql.ROOT / "tools" / "gen_dashboards.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gen  # dataclasses look their module up while the file runs
    spec.loader.exec_module(gen)
    rendered = gen.render()
    assert sorted(rendered) == sorted(BOARDS), "run python tools/gen_dashboards.py"
    for name, text in rendered.items():
        assert (promql.DASHBOARDS / name).read_text() == text, f"{name} is stale: run python tools/gen_dashboards.py"


def test_the_four_topics_have_a_dashboard() -> None:
    titles = " ".join(board["title"].lower() for board in BOARDS.values())
    for topic in ("training progress", "where the time goes", "communication", "errors"):
        assert topic in titles


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_has_a_prometheus_datasource_variable_every_panel_uses(name: str) -> None:
    board = BOARDS[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert board["uid"].startswith("a2c-") and board["title"]
    nested = [c for p in board["panels"] if p["type"] == "row" for c in p.get("panels", [])]
    ids = [p["id"] for p in board["panels"] + nested]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    shown = list(promql.panels(board))
    assert shown
    for panel in shown:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panels_fit_the_grid_without_overlapping(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in BOARDS[name]["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_a2c_query_filters_on_the_job_variable() -> None:
    for q in promql.dashboard_queries():
        names = promql.metric_names(q.expr)
        if any(n.startswith("a2c_controller_") for n in names):
            continue  # the controller serves every job; its series are not per job
        for name in names:
            assert f'{name}{{a2c_job=~"$job"' in q.expr.replace("\n", ""), f"{q.where}: {name} is not filtered by $job"


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q.where)
def test_every_metric_named_is_exported_under_that_name(query: promql.Query) -> None:
    names = promql.metric_names(query.expr)
    assert names, f"no metric found in {query.expr!r}"
    exported = exposed_names()
    for name in names - promql.PROMETHEUS_SERIES:
        assert name.startswith("a2c_"), f"{query.where}: {name} is not an a2c metric"
        assert name in exported, f"{query.where}: {name} is not exported by a2c/observe/metrics.py (as exposed)"


def test_every_a2c_metric_is_shown_or_alerted_on() -> None:
    """A metric nobody looks at is dead weight: each family in a2c/observe/metrics.py appears in a dashboard or rule."""
    exported = exposed_names()
    used = {exported[n] for q in QUERIES for n in promql.metric_names(q.expr) if n in exported}
    families = {f for f in exported.values() if f.startswith("a2c_")}
    assert families - used == set()


def test_the_metric_name_parser() -> None:
    expr = ('sum by (a2c_job, le) (rate(a2c_x_bucket{a2c_job=~"$job", code!="OK"}[$__rate_interval]))\n'
            '/ ignoring (phase) group_left a2c_y or on (a2c_job) up == bool 0 and vector(1)')
    assert promql.metric_names(expr) == {"a2c_x_bucket", "a2c_y", "up"}


def _walk(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _walk(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _walk(v)]
    return [obj] if isinstance(obj, str) else []


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_only_known_grafana_variables_are_used(name: str) -> None:
    for text in _walk(BOARDS[name]):
        leftover = promql.concrete(text, "j").replace("${datasource}", "")
        assert "$" not in leftover, f"{name}: unknown variable in {text!r}"
