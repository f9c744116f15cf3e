"""Generate the Grafana dashboards deploy/helm/dashboards/*.json from the panel tables below.

    python tools/gen_dashboards.py           # regenerate
    python tools/gen_dashboards.py --check   # exit 1 if a committed dashboard differs from this file

The JSON is what the Helm chart ships (one ConfigMap per file, picked up by Grafana's sidecar); this file
is where panels are written and reviewed. Every query filters on the `$job` variable (the `a2c_job`
label) and reads the `${datasource}` variable, so one dashboard serves every A2CJob and every Prometheus.
tests/observability checks that each metric named here is exported by a2c/observe/metrics.py and that each query
returns data from a real Prometheus scraping a real `a2c local` run.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "helm" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
J = 'a2c_job=~"$job"'  # every a2c series carries a2c_job; the variable may hold several (regex)
RI = "$__rate_interval"


@dataclass
class Panel:
    title: str
    exprs: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    description: str = ""
    stack: bool = False
    width: int = 12


@dataclass
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


def mean(hist: str, by: str, sel: str = J) -> str:
    """Mean of a histogram's observations over the rate interval."""
    return (f"sum by ({by}) (rate({hist}_sum{{{sel}}}[{RI}]))\n"
            f"/ sum by ({by}) (rate({hist}_count{{{sel}}}[{RI}]))")


def quantile(q: float, hist: str, by: str, sel: str = J) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({hist}_bucket{{{sel}}}[{RI}])))"


def phase(name: str) -> str:
    return f'{J}, phase="{name}"'


TRAINING = [
    Row("Now", [
        Panel("Mean return (last 100 episodes)",
              [(f"max by (a2c_job) (a2c_trainer_mean_return{{{J}}})", "{{a2c_job}}")],
              kind="stat", width=4, description="The trainers' moving mean return, the quantity the stop rule reads."),
        Panel("Env steps", [(f"max by (a2c_job) (a2c_trainer_env_steps{{{J}}})", "{{a2c_job}}")], kind="stat", width=4),
        Panel("Episodes", [(f"max by (a2c_job) (a2c_trainer_episodes{{{J}}})", "{{a2c_job}}")], kind="stat", width=4),
        Panel("Iteration (policy version)", [(f"max by (a2c_job) (a2c_trainer_iteration{{{J}}})", "{{a2c_job}}")],
              kind="stat", width=4),
        Panel("Env steps/s", [(f"sum by (a2c_job) (rate(a2c_player_env_steps_total{{{J}}}[{RI}]))", "{{a2c_job}}")],
              kind="stat", width=4),
        Panel("Checkpoints written (since the trainers started)",
              [(f"sum by (a2c_job) (a2c_trainer_checkpoints_total{{{J}}})", "{{a2c_job}}")], kind="stat", width=4),
    ]),
    Row("Learning", [
        Panel("Mean return (trainers, last 100 episodes)",
              [(f"max by (a2c_job) (a2c_trainer_mean_return{{{J}}})", "{{a2c_job}}")]),
        Panel("Episode return (players, episodes finished in the interval)", [
            (quantile(q, "a2c_player_episode_return", "a2c_job"), f"{{{{a2c_job}}}} p{p}")
            for q, p in ((0.1, 10), (0.5, 50), (0.9, 90))
        ], description="Quantiles interpolated inside histogram buckets: read them as rough. (No mean: a histogram "
                       "with negative buckets exposes no _sum.)"),
        Panel("Episode length", [
            (mean("a2c_player_episode_length", "a2c_job"), "{{a2c_job}} mean"),
            (quantile(0.9, "a2c_player_episode_length", "a2c_job"), "{{a2c_job}} p90"),
        ]),
        Panel("Episodes finished per second",
              [(f"sum by (a2c_job) (rate(a2c_player_episodes_total{{{J}}}[{RI}]))", "{{a2c_job}}")]),
        Panel("Losses of the last update",
              [(f"avg by (a2c_job, term) (a2c_trainer_loss{{{J}}})", "{{a2c_job}} {{term}}")],
              description="policy, value and entropy terms, as the trainers computed them (before coefficients)."),
        Panel("Gradient norm (before clipping)", [(f"a2c_trainer_grad_norm{{{J}}}", "{{a2c_job}} trainer {{rank}}")]),
        Panel("Learning rate", [(f"max by (a2c_job) (a2c_trainer_learning_rate{{{J}}})", "{{a2c_job}}")]),
    ]),
    Row("Evaluation (greedy policy, trainer 0's evaluator process)", [
        Panel("Evaluation return (greedy, mean ± std) vs training mean return", [
            (f"max by (a2c_job) (a2c_eval_mean_return{{{J}}})", "{{a2c_job}} evaluation mean"),
            *[(f"max by (a2c_job) (a2c_eval_mean_return{{{J}}} {sign} a2c_eval_std_return{{{J}}})",
               f"{{{{a2c_job}}}} evaluation {sign} std") for sign in ("+", "-")],
            (f"max by (a2c_job) (a2c_trainer_mean_return{{{J}}})", "{{a2c_job}} training (last 100 episodes)"),
        ], description="Every --eval-interval iterations trainer 0 plays its newest weights greedily for "
                       "--eval-episodes episodes with a fixed seed; training's mean return comes from the players' "
                       "exploring policy."),
        Panel("Evaluation episode length and seconds per evaluation", [
            (f"max by (a2c_job) (a2c_eval_mean_length{{{J}}})", "{{a2c_job}} mean episode length"),
            (f"max by (a2c_job) (a2c_eval_seconds{{{J}}})", "{{a2c_job}} seconds per evaluation"),
        ]),
        Panel("Evaluated weights vs the trainers' (iteration)", [
            (f"max by (a2c_job) (a2c_eval_iteration{{{J}}})", "{{a2c_job}} evaluated"),
            (f"max by (a2c_job) (a2c_trainer_iteration{{{J}}})", "{{a2c_job}} trainers"),
        ], description="An evaluation takes the newest weights when the evaluator is free, so the evaluated iteration "
                       "trails the trainers' by up to one evaluation's duration."),
        Panel("Env steps of the evaluated weights",
              [(f"max by (a2c_job) (a2c_eval_env_steps{{{J}}})", "{{a2c_job}}")], kind="stat", width=4),
        Panel("Evaluations done", [(f"sum by (a2c_job) (a2c_evaluations_total{{{J}}})", "{{a2c_job}}")],
              kind="stat", width=4),
        Panel("Snapshots skipped (evaluator busy)",
              [(f"sum by (a2c_job) (a2c_eval_skipped_total{{{J}}})", "{{a2c_job}}")], kind="stat", width=4,
              description="Only the newest snapshot waits while an evaluation runs; the older ones are skipped."),
    ]),
    Row("Throughput", [
        Panel("Env steps per second (whole job)",
              [(f"sum by (a2c_job) (rate(a2c_player_env_steps_total{{{J}}}[{RI}]))", "{{a2c_job}}")]),
        Panel("Stepping speed per player (last rollout, excludes waiting)",
              [(f"a2c_player_steps_per_second{{{J}}}", "{{a2c_job}} player {{rank}}")]),
        Panel("Iterations per second",
              [(f"max by (a2c_job) (deriv(a2c_trainer_iteration{{{J}}}[{RI}]))", "{{a2c_job}}")]),
        Panel("Samples trained per second, by trainer",
              [(f"sum by (a2c_job, rank) (rate(a2c_trainer_samples_total{{{J}}}[{RI}]))",
                "{{a2c_job}} trainer {{rank}}")]),
    ]),
]

TIME = [
    Row("Trainers: one iteration", [
        Panel("Seconds per iteration, by phase (mean over trainers)",
              [(mean("a2c_trainer_phase_seconds", "phase"), "{{phase}}")], unit="s", stack=True,
              description="Stacked, the phases add up to one iteration: wait_rollouts (players still stepping or "
                          "uploading), batch (values, advantages and returns of the rollouts), forward_backward, "
                          "allreduce (the DDP gradient sum, with every trainer's sample counts and episodes in "
                          "it), optimizer, publish (new weights for the players)."),
        Panel("Share of trainer wall time, by phase", [
            (f"avg by (phase) (rate(a2c_trainer_phase_seconds_sum{{{J}}}[{RI}]))", "{{phase}}"),
            (f"1 - avg (sum by (a2c_job, rank) (rate(a2c_trainer_phase_seconds_sum{{{J}}}[{RI}])))",
             "other (checkpoints, empty rounds)"),
        ], unit="percentunit", stack=True),
        Panel("Slowest iterations: p95 per phase",
              [(quantile(0.95, "a2c_trainer_phase_seconds", "phase"), "{{phase}}")],
              unit="s"),
        Panel("Waiting for rollouts, by trainer", [(mean("a2c_trainer_phase_seconds", "a2c_job, rank",
                                                         phase("wait_rollouts")), "{{a2c_job}} trainer {{rank}}")],
              unit="s", description="A trainer that waits much longer than its peers has slow or missing players."),
        Panel("All-reduce, by trainer", [(mean("a2c_trainer_phase_seconds", "a2c_job, rank", phase("allreduce")),
                                          "{{a2c_job}} trainer {{rank}}")], unit="s",
              description="Includes waiting for the slowest trainer to reach the all-reduce."),
        Panel("Forward/backward and optimizer, by trainer", [
            (mean("a2c_trainer_phase_seconds", "a2c_job, rank", phase("forward_backward")),
             "{{a2c_job}} trainer {{rank}} forward_backward"),
            (mean("a2c_trainer_phase_seconds", "a2c_job, rank", phase("optimizer")),
             "{{a2c_job}} trainer {{rank}} optimizer"),
        ], unit="s"),
    ]),
    Row("Players: one rollout", [
        Panel("Share of player wall time", [
            (f"avg by (a2c_job) (rate(a2c_player_upload_seconds_sum{{{J}}}[{RI}]))", "{{a2c_job}} uploading rollouts"),
            (f"avg by (a2c_job) (rate(a2c_player_fetch_seconds_sum{{{J}}}[{RI}]))", "{{a2c_job}} waiting for weights"),
            (f"1 - avg by (a2c_job) (rate(a2c_player_upload_seconds_sum{{{J}}}[{RI}]) "
             f"+ rate(a2c_player_fetch_seconds_sum{{{J}}}[{RI}]))", "{{a2c_job}} stepping"),
        ], unit="percentunit", stack=True,
            description="Waiting for weights includes the long-poll until the trainers finish the next iteration."),
        Panel("Upload and weight-fetch time per call, by player", [
            (mean("a2c_player_upload_seconds", "a2c_job, rank"), "{{a2c_job}} player {{rank}} upload"),
            (mean("a2c_player_fetch_seconds", "a2c_job, rank"), "{{a2c_job}} player {{rank}} fetch"),
        ], unit="s"),
    ]),
]

COMMUNICATION = [
    Row("Rollouts: players -> trainers", [
        Panel("Rollout upload latency", [(quantile(q, "a2c_player_upload_seconds", "a2c_job"), f"{{{{a2c_job}}}} p{p}")
                                         for q, p in ((0.5, 50), (0.95, 95), (0.99, 99))], unit="s"),
        Panel("Rollout bytes uploaded per second",
              [(f"sum by (a2c_job) (rate(a2c_player_upload_bytes_total{{{J}}}[{RI}]))", "{{a2c_job}}")], unit="Bps"),
        Panel("Mean rollout size", [(f"sum by (a2c_job) (rate(a2c_player_upload_bytes_total{{{J}}}[{RI}]))\n"
                                     f"/ sum by (a2c_job) (rate(a2c_player_upload_seconds_count{{{J}}}[{RI}]))",
                                     "{{a2c_job}}")], unit="bytes"),
        Panel("Rollouts accepted per second, by trainer",
              [(f"sum by (a2c_job, rank) (rate(a2c_trainer_rollouts_accepted_total{{{J}}}[{RI}]))",
                "{{a2c_job}} trainer {{rank}}")]),
        Panel("Trainer queue depth and active players", [
            (f"a2c_trainer_queue_depth{{{J}}}", "{{a2c_job}} trainer {{rank}} queued"),
            (f"a2c_trainer_active_players{{{J}}}", "{{a2c_job}} trainer {{rank}} active players"),
        ]),
    ]),
    Row("Weights: trainers -> players", [
        Panel("Weight fetch latency (includes the long-poll wait)",
              [(quantile(q, "a2c_player_fetch_seconds", "a2c_job"), f"{{{{a2c_job}}}} p{p}")
               for q, p in ((0.5, 50), (0.95, 95))], unit="s"),
        Panel("Policy lag (trainer version minus acting version)", [
            (f"max by (a2c_job) (a2c_player_policy_lag{{{J}}})", "{{a2c_job}} max"),
            (f"avg by (a2c_job) (a2c_player_policy_lag{{{J}}})", "{{a2c_job}} mean"),
        ], description="Bounded by --max-policy-lag; 0 is strict on-policy A2C."),
        Panel("Policy version: players and trainers", [
            (f"a2c_player_policy_version{{{J}}}", "{{a2c_job}} player {{rank}}"),
            (f"max by (a2c_job) (a2c_trainer_iteration{{{J}}})", "{{a2c_job}} trainers"),
        ]),
    ]),
    Row("gRPC and all-reduce", [
        Panel("gRPC requests per second, by method and code",
              [(f"sum by (method, code) (rate(a2c_grpc_requests_total{{{J}}}[{RI}]))", "{{method}} {{code}}")]),
        Panel("gRPC latency p95, by method", [(quantile(0.95, "a2c_grpc_request_seconds", "method"), "{{method}}")],
              unit="s", description="Fetch is a long-poll: its latency includes waiting for the next version."),
        Panel("All-reduce seconds per iteration (DDP)",
              [(mean("a2c_trainer_phase_seconds", "a2c_job", phase("allreduce")), "{{a2c_job}}")], unit="s"),
    ]),
]

ERRORS = [
    Row("Processes", [
        Panel("Targets up, by role", [(f"sum by (a2c_job, role) (up{{{J}}})", "{{a2c_job}} {{role}}")], kind="stat"),
        Panel("Targets down, by role", [(f"sum by (a2c_job, role) (up{{{J}}} == bool 0)", "{{a2c_job}} {{role}}")],
              description="Scrape targets Prometheus cannot reach: a crashed or stuck process."),
        Panel("Evaluations lost (evaluator process died or an evaluation raised)",
              [(f"sum by (a2c_job) (a2c_eval_failures_total{{{J}}})", "{{a2c_job}}")],
              description="Trainer 0 restarts its evaluator process a few times, then stops evaluating; training goes "
                          "on either way. Its log says why."),
    ]),
    Row("Rollouts and uploads", [
        Panel("Rollouts refused per second, by reason",
              [(f"sum by (a2c_job, reason) (rate(a2c_trainer_rollouts_refused_total{{{J}}}[{RI}]))",
                "{{a2c_job}} {{reason}}")],
              description="stale_version / stale_in_queue: players behind the trainers; other_generation: "
                          "rollouts acted before a gang restart; invalid_rollout, unknown_player, future_version, "
                          "malformed: misconfigured players; queue_full: overload."),
        Panel("Refused share of rollouts", [(
            f"sum by (a2c_job) (rate(a2c_trainer_rollouts_refused_total{{{J}}}[{RI}]))\n"
            f"/ (sum by (a2c_job) (rate(a2c_trainer_rollouts_refused_total{{{J}}}[{RI}]))\n"
            f"   + sum by (a2c_job) (rate(a2c_trainer_rollouts_accepted_total{{{J}}}[{RI}])))", "{{a2c_job}}")],
            unit="percentunit"),
        Panel("Upload errors per second, by status code (players)",
              [(f"sum by (a2c_job, code) (rate(a2c_player_upload_errors_total{{{J}}}[{RI}]))",
                "{{a2c_job}} {{code}}")]),
        Panel("gRPC responses other than OK, by method and code (trainers)",
              [(f'sum by (a2c_job, method, code) (rate(a2c_grpc_requests_total{{{J}, code!="OK"}}[{RI}]))',
                "{{a2c_job}} {{method}} {{code}}")]),
    ]),
    Row("Controller", [
        Panel("Reconciles per second, by result",
              [(f"sum by (result) (rate(a2c_controller_reconciles_total[{RI}]))", "{{result}}")], width=8),
        Panel("Reconcile errors per second", [(f"sum (rate(a2c_controller_errors_total[{RI}]))", "errors")], width=8),
        Panel("A2CJobs by phase", [("sum by (phase) (a2c_controller_jobs)", "{{phase}}")], width=8),
        Panel("Jobs created, succeeded, failed and gang-restarted per hour, by namespace", [
            ("sum by (namespace) (increase(a2c_controller_jobs_created_total[1h]))", "created {{namespace}}"),
            ("sum by (namespace) (increase(a2c_controller_jobs_succeeded_total[1h]))", "succeeded {{namespace}}"),
            ("sum by (namespace, reason) (increase(a2c_controller_jobs_failed_total[1h]))",
             "failed {{namespace}} {{reason}}"),
            ("sum by (namespace) (increase(a2c_controller_jobs_restarted_total[1h]))", "restarted {{namespace}}"),
        ], width=8),
        Panel("Reconcile duration (p50, p99)", [
            (f"histogram_quantile(0.5, sum by (le) (rate(a2c_controller_reconcile_seconds_bucket[{RI}])))", "p50"),
            (f"histogram_quantile(0.99, sum by (le) (rate(a2c_controller_reconcile_seconds_bucket[{RI}])))", "p99"),
        ], unit="s", width=8),
        Panel("Reconcile queue depth", [("max (a2c_controller_queue_depth)", "jobs waiting")], width=8),
    ]),
]

DASHBOARDS: dict[str, tuple[str, list[Row]]] = {
    "training": ("a2c / Training progress", TRAINING),
    "time": ("a2c / Where the time goes", TIME),
    "communication": ("a2c / Communication", COMMUNICATION),
    "errors": ("a2c / Errors", ERRORS),
}


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    if p.kind == "timeseries":
        custom = {"fillOpacity": 30 if p.stack else 10, "stacking": {"mode": "normal" if p.stack else "none"}}
    out: dict[str, Any] = {
        "id": pid, "type": p.kind, "title": p.title, "description": p.description, "datasource": DS,
        "gridPos": {"h": 4 if p.kind == "stat" else 8, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit, "custom": custom}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(p.exprs)],
    }
    if p.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "area", "textMode": "auto"}
    else:
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    return out


def _variables() -> list[dict[str, Any]]:
    job_query = "label_values(a2c_grpc_requests_total, a2c_job)"
    return [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": ""},
        {"name": "job", "label": "A2C job", "type": "query", "datasource": DS,
         "query": {"query": job_query, "refId": "job"}, "definition": job_query, "current": {}, "hide": 0,
         "includeAll": True, "allValue": ".*", "multi": True, "options": [], "refresh": 2, "regex": "", "sort": 1},
    ]


def dashboard(slug: str, title: str, rows: list[Row]) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in rows:
        panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        pid, y, x, height = pid + 1, y + 1, 0, 0
        for p in row.panels:
            if x + p.width > 24:
                x, y = 0, y + height
            panel = _panel(p, pid, x, y)
            pid, x, height = pid + 1, x + p.width, max(height, panel["gridPos"]["h"])
            panels.append(panel)
        y += height
    return {
        "uid": f"a2c-{slug}", "title": title, "tags": ["a2c"], "editable": True, "schemaVersion": 39,
        "version": 1, "time": {"from": "now-1h", "to": "now"}, "refresh": "10s", "timezone": "browser",
        "graphTooltip": 1, "annotations": {"list": []},
        "links": [{"title": "a2c dashboards", "type": "dashboards", "tags": ["a2c"], "asDropdown": True,
                   "includeVars": True, "keepTime": True}],
        "templating": {"list": _variables()},
        "panels": panels,
    }


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{slug}.json": json.dumps(dashboard(slug, title, rows), indent=1) + "\n"
            for slug, (title, rows) in DASHBOARDS.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard is out of date")
    args = parser.parse_args()
    files = render()
    if args.check:
        stale = [name for name, text in files.items()
                 if not (OUT / name).exists() or (OUT / name).read_text() != text]
        extra = sorted(p.name for p in OUT.glob("*.json") if p.name not in files)
        for name in stale + extra:
            print(f"{OUT / name} is out of date: run python tools/gen_dashboards.py", file=sys.stderr)
        return 1 if stale or extra else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
