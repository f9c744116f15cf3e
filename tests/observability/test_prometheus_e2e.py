"""A real Prometheus scrapes a real `a2c local` run, and every dashboard query returns data.

The Prometheus config is deploy/prometheus/prometheus.yml with faster intervals and this run's targets file.
The run evaluates every 20 iterations (not the default 100) so the evaluation panels fill early.
Beside the run, one misconfigured `a2c player` (wrong --n-steps) uploads to trainer 0, so the trainers
refuse its rollouts and the error panels have something real to show. No controller runs locally: its
panels must evaluate without error but may be empty.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability import promql
from tests.support.procs import free_port, wait_for

JOB = "local"
DEADLINE_S = 75.0


def tails(logs: Path, lines: int = 6) -> str:
    out = []
    for path in sorted(logs.rglob("*.log")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(out)


def api(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as err:  # 400/422: a bad query; the body says why
        body = json.load(err)
    return body


def problem(base: str, query: promql.Query) -> str | None:
    """Why this query is not good yet, or None."""
    reply = api(base, "/api/v1/query", query=promql.concrete(query.expr, JOB))
    if reply.get("status") != "success":
        return f"error: {reply.get('errorType')}: {reply.get('error')}"
    if all(n.startswith("a2c_controller_") for n in promql.metric_names(query.expr)):
        return None  # no controller in a local run
    result = reply["data"]["result"]
    if not result:
        return "no data"
    values = [float(r["value"][1]) for r in result]
    if not any(math.isfinite(v) for v in values):
        return f"no finite value: {values}"
    return None


def prometheus_config(run_dir: Path, rogue_port: int) -> dict[str, Any]:
    """The example config, pointed at this run, scraping every second."""
    cfg: dict[str, Any] = yaml.safe_load((promql.ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str(promql.RULES)]
    job = cfg["scrape_configs"][0]
    job["file_sd_configs"] = [{"files": [str(run_dir / "prometheus_targets.json")], "refresh_interval": "1s"}]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{rogue_port}"],
                              "labels": {"a2c_job": JOB, "role": "player", "rank": "2"}}]
    return cfg


def stop(proc: subprocess.Popen[bytes], group: bool) -> None:
    if proc.poll() is not None:
        return
    (os.killpg if group else os.kill)(proc.pid, signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        (os.killpg if group else os.kill)(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_every_dashboard_query_returns_data_from_a_real_run(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus not found: install Debian's `prometheus` package (.ci/run does)"
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    env = {**os.environ, "PYTHONPATH": str(promql.ROOT), "A2C_JOB": JOB}
    a2c = [sys.executable, "-m", "a2c"]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    watching: dict[str, Any] = {"watch": procs, "explain": lambda: tails(tmp_path), "every_s": 0.5}
    prom_port, rogue_port = free_port(), free_port()
    base = f"http://127.0.0.1:{prom_port}"
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(run_dir, rogue_port)))
    try:
        procs["a2c local"] = subprocess.Popen(
            [*a2c, "local", "--run-dir", str(run_dir), "--trainers", "2", "--players-per-trainer", "1",
             "--num-envs", "4", "--max-env-steps", "100000000", "--target-return", "1e9",
             "--checkpoint-interval", "100", "--eval-interval", "20", "--progress", "false", "--plot", "false"],
            cwd=promql.ROOT, env=env, stdout=(logs / "local.log").open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        procs["prometheus"] = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=(logs / "prometheus.log").open("wb"), stderr=subprocess.STDOUT)

        def trainer0_port() -> int | None:
            log = run_dir / "logs" / "trainer-0.log"
            found = re.search(r"gRPC on port (\d+)", log.read_text()) if log.exists() else None
            return int(found.group(1)) if found else None

        port = wait_for(trainer0_port, 60, "trainer 0's gRPC port in its log", **watching)
        procs["misconfigured player"] = subprocess.Popen(
            [*a2c, "player", "--player-index", "2", "--num-trainers", "2", "--trainer-address", f"127.0.0.1:{port}",
             "--metrics-port", str(rogue_port), "--num-envs", "2", "--n-steps", "4"],
            cwd=promql.ROOT, env=env, stdout=(logs / "misconfigured-player.log").open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True)

        targets = wait_for(lambda: (run_dir / "prometheus_targets.json").exists(), 60,
                           "the run's prometheus_targets.json", **watching)
        assert targets
        written = json.loads((run_dir / "prometheus_targets.json").read_text())
        roles = sorted((t["labels"]["role"], t["labels"]["rank"]) for t in written)
        assert roles == [("player", "0"), ("player", "1"), ("trainer", "0"), ("trainer", "1")]

        def all_targets_up() -> bool:
            active = api(base, "/api/v1/targets").get("data", {}).get("activeTargets", [])
            return len(active) == 5 and all(t["health"] == "up" for t in active)

        wait_for(all_targets_up, 60, "5 scrape targets up", **watching)

        queries = promql.dashboard_queries()
        left: dict[str, str | None] = {}

        def every_query_has_data() -> bool:
            left.clear()
            left.update({q.where: problem(base, q) for q in queries})
            return not any(left.values())

        def without_data() -> str:
            bad = "\n".join(f"  {where}: {why}" for where, why in left.items() if why)
            return f"dashboard queries without data:\n{bad}\n{tails(tmp_path)}"

        wait_for(every_query_has_data, DEADLINE_S, "every dashboard query to return data", watch=procs,
                 explain=without_data, every_s=2.0)

        for name, board in promql.dashboards().items():
            variable = next(v for v in board["templating"]["list"] if v["name"] == "job")
            found = re.fullmatch(r"label_values\((.+), *(\w+)\)", variable["query"]["query"])
            assert found, f"{name}: unexpected job variable query {variable['query']}"
            values = api(base, f"/api/v1/label/{found.group(2)}/values", **{"match[]": found.group(1)})
            assert JOB in values["data"], f"{name}: the $job variable would not offer {JOB!r}"
        def rule_states() -> dict[str, str] | None:
            rules = [r for g in api(base, "/api/v1/rules")["data"]["groups"] for r in g["rules"]]
            assert len(rules) == len(promql.rules())
            for rule in rules:
                assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
            states = {r["name"]: r["state"] for r in rules}
            return states if states["A2CRolloutsRefused"] != "inactive" else None

        # The misconfigured player's refusals trip the refusal alert (pending: it waits 10m before firing);
        # the healthy trainers are neither stalled nor down. (A2CReturnCollapsed may see early learning noise.)
        # The refused share climbs past 10% as the 5m rate windows fill (~10 s on a quiet machine, ~25% later):
        # the deadline only bounds a hang, with room for a loaded CI machine.
        states = wait_for(rule_states, 90, "A2CRolloutsRefused to go pending", **watching)
        assert states["A2CTrainingStalled"] == "inactive"
        assert states["A2CTrainerDown"] == "inactive"
    finally:
        for name in ("misconfigured player", "a2c local", "prometheus"):
            if name in procs:
                stop(procs[name], group=name != "prometheus")
