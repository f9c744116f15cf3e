"""Prometheus metrics of every role, all named `a2c_...`.

Every series carries the same low-cardinality labels: `a2c_job` (the A2CJob or local run name: a role's
--job, env A2C_JOB), `role` (trainer, player, controller) and `rank` (trainer rank or player index).
(`job` itself is left to Prometheus, which sets it on every target.) Call `bind()` once per process, then
use `labels()` to get the child series of this process. The dashboards and alert rules in deploy/ name
these metrics; a test checks that every name they use is exported here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app, start_http_server
from prometheus_client.exposition import ThreadingWSGIServer

BASE = ("a2c_job", "role", "rank")
_base: dict[str, str] = {"a2c_job": "local", "role": "unknown", "rank": "0"}

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- players -----------------------------------------------------------------------------------------
PLAYER_ENV_STEPS = Counter("a2c_player_env_steps", "Environment steps taken by the player", BASE)
PLAYER_EPISODES = Counter("a2c_player_episodes", "Episodes finished by the player", BASE)
PLAYER_EPISODE_RETURN = Histogram(
    "a2c_player_episode_return", "Returns of finished episodes", BASE,
    buckets=(-500, -200, -100, -50, -20, -10, 0, 10, 20, 50, 100, 200, 300, 400, 475, 500, 1000, 5000),
)
PLAYER_EPISODE_LENGTH = Histogram(
    "a2c_player_episode_length", "Lengths of finished episodes", BASE,
    buckets=(10, 20, 50, 100, 200, 300, 400, 500, 1000, 2000, 10000, 100000),
)
PLAYER_STEPS_PER_SECOND = Gauge(
    "a2c_player_steps_per_second", "Environment steps per second, last rollout", BASE
)
PLAYER_UPLOAD_SECONDS = Histogram("a2c_player_upload_seconds", "Rollout upload latency", BASE, buckets=_LATENCY)
PLAYER_UPLOAD_BYTES = Counter("a2c_player_upload_bytes", "Rollout bytes uploaded", BASE)
PLAYER_UPLOAD_ERRORS = Counter("a2c_player_upload_errors", "Rollout uploads that failed", BASE + ("code",))
PLAYER_FETCH_SECONDS = Histogram(
    "a2c_player_fetch_seconds", "Weight fetch latency (incl. long-poll wait)", BASE, buckets=_LATENCY
)
PLAYER_POLICY_LAG = Gauge("a2c_player_policy_lag", "Trainer's policy version minus the version acted with", BASE)
PLAYER_POLICY_VERSION = Gauge("a2c_player_policy_version", "Policy version the player acts with", BASE)

# --- trainers ----------------------------------------------------------------------------------------
TRAINER_ITERATION = Gauge("a2c_trainer_iteration", "Training iterations completed (= policy version)", BASE)
TRAINER_SAMPLES = Counter("a2c_trainer_samples", "Samples this trainer trained on", BASE)
TRAINER_ENV_STEPS = Gauge("a2c_trainer_env_steps", "Environment steps of the whole job", BASE)
TRAINER_MEAN_RETURN = Gauge("a2c_trainer_mean_return", "Mean return of the last episodes of the whole job", BASE)
TRAINER_EPISODES = Gauge("a2c_trainer_episodes", "Episodes finished in the whole job", BASE)
TRAINER_PHASE_SECONDS = Histogram(
    "a2c_trainer_phase_seconds",
    "Seconds per iteration spent in each phase (wait_rollouts, batch, forward_backward, allreduce, optimizer, publish)",
    BASE + ("phase",), buckets=_LATENCY,
)
TRAINER_LOSS = Gauge("a2c_trainer_loss", "Loss terms of the last update", BASE + ("term",))
TRAINER_GRAD_NORM = Gauge("a2c_trainer_grad_norm", "Gradient norm before clipping", BASE)
TRAINER_LEARNING_RATE = Gauge("a2c_trainer_learning_rate", "Learning rate", BASE)
TRAINER_ROLLOUTS_ACCEPTED = Counter("a2c_trainer_rollouts_accepted", "Rollouts accepted", BASE)
TRAINER_ROLLOUTS_REFUSED = Counter("a2c_trainer_rollouts_refused", "Rollouts refused, by reason", BASE + ("reason",))
TRAINER_QUEUE_DEPTH = Gauge("a2c_trainer_queue_depth", "Rollouts waiting to be trained on", BASE)
TRAINER_ACTIVE_PLAYERS = Gauge("a2c_trainer_active_players", "Players that delivered in the last round", BASE)
TRAINER_CHECKPOINTS = Counter("a2c_trainer_checkpoints", "Checkpoints written", BASE)
GRPC_REQUESTS = Counter(
    "a2c_grpc_requests", "gRPC requests served, by method and status code", BASE + ("method", "code")
)
GRPC_REQUEST_SECONDS = Histogram(
    "a2c_grpc_request_seconds", "gRPC request latency", BASE + ("method",), buckets=_LATENCY
)

# --- periodic evaluation (trainer 0; a2c.evaluation.periodic_eval) ------------------------------------------------
EVAL_MEAN_RETURN = Gauge("a2c_eval_mean_return", "Mean return of the last greedy evaluation", BASE)
EVAL_STD_RETURN = Gauge("a2c_eval_std_return", "Standard deviation of the returns of the last evaluation", BASE)
EVAL_MEAN_LENGTH = Gauge("a2c_eval_mean_length", "Mean episode length of the last evaluation", BASE)
EVAL_ITERATION = Gauge("a2c_eval_iteration", "Iteration (policy version) of the weights last evaluated", BASE)
EVAL_ENV_STEPS = Gauge("a2c_eval_env_steps", "Environment steps of the job when the last evaluated weights were made",
                       BASE)
EVAL_SECONDS = Gauge("a2c_eval_seconds", "Seconds the last evaluation took (in the evaluator process)", BASE)
EVALUATIONS = Counter("a2c_evaluations", "Evaluations completed", BASE)
EVAL_SKIPPED = Counter("a2c_eval_skipped", "Snapshots not evaluated because a newer one came while the evaluator "
                       "was busy", BASE)
EVAL_FAILURES = Counter("a2c_eval_failures", "Evaluations lost: the evaluator process died or the evaluation raised",
                        BASE)

# --- controller --------------------------------------------------------------------------------------
CONTROLLER_RECONCILES = Counter("a2c_controller_reconciles", "Reconciles, by result", BASE + ("result",))
CONTROLLER_ERRORS = Counter("a2c_controller_errors", "Reconcile errors", BASE)
CONTROLLER_JOBS = Gauge("a2c_controller_jobs", "A2CJobs by phase", BASE + ("phase",))
# What the training operator exports for its jobs (training_operator_jobs_*_total), by the job's namespace.
CONTROLLER_JOBS_CREATED = Counter("a2c_controller_jobs_created", "A2CJobs whose children the controller created "
                                  "(their first reconcile)", BASE + ("namespace",))
CONTROLLER_JOBS_SUCCEEDED = Counter("a2c_controller_jobs_succeeded", "A2CJobs that reached Succeeded",
                                    BASE + ("namespace",))
CONTROLLER_JOBS_FAILED = Counter("a2c_controller_jobs_failed", "A2CJobs that reached Failed, by reason",
                                 BASE + ("namespace", "reason"))
CONTROLLER_JOBS_RESTARTED = Counter("a2c_controller_jobs_restarted", "Gang restarts of A2CJobs' trainers",
                                    BASE + ("namespace",))
CONTROLLER_RECONCILE_SECONDS = Histogram("a2c_controller_reconcile_seconds", "Time one reconcile of one job took",
                                         BASE, buckets=_LATENCY)
CONTROLLER_QUEUE_DEPTH = Gauge("a2c_controller_queue_depth", "Jobs waiting for a reconcile (due now or backing off)",
                               BASE)


def bind(job: str, role: str, rank: int | str) -> None:
    """Set this process's labels; call once before `labels()`."""
    _base.update(a2c_job=job, role=role, rank=str(rank))


def labels(metric: Any, **extra: str) -> Any:
    """The child series of `metric` for this process (plus any extra labels)."""
    return metric.labels(**_base, **extra)


def serve(port: int, addr: str = "0.0.0.0", checks: dict[str, Callable[[], str]] | None = None) -> int:
    """Serve /metrics on `port` (0: a free one); returns the port, or -1 when disabled.

    `checks`: more paths, each answering 200 while its function returns "" and 503 with its text otherwise:
    the controller's /healthz (liveness: a stuck reconcile loop, not just a live HTTP thread, fails it) and a
    trainer's /readyz (readiness where the kubelet's grpc probe cannot go: a TLS port)."""
    if port < 0:
        return -1
    if not checks:
        server, _thread = start_http_server(port, addr=addr)
        return int(server.server_address[1])
    metrics_app = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        check = checks.get(environ.get("PATH_INFO", ""))
        if check is None:
            return metrics_app(environ, start_response)
        problem = check()
        start_response("503 Service Unavailable" if problem else "200 OK", [("Content-Type", "text/plain")])
        return [(problem or "ok").encode() + b"\n"]

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class names it)
            pass

    httpd = make_server(addr, port, app, ThreadingWSGIServer, handler_class=Quiet)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return int(httpd.server_address[1])
