"""What the end-to-end journeys on the test cluster share: the job they install (`values`), how they read its
phase, whether the controller pod is Ready, and the controller's API traffic for jobs (its writes, its resyncs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cluster.conftest import Cluster

JOB = "cp"
ROOT = Path(__file__).resolve().parents[2]
TARGET = 475.0  # CartPole-v1 solved (mean of the last 100 episodes), as `a2c local` stops


def values(**job: Any) -> dict[str, Any]:
    """The chart's defaults with a small CartPole job: 2 trainers (DDP over gloo), 1 player each."""
    spec: dict[str, Any] = {
        "name": JOB, "trainers": {"replicas": 2}, "players": {"replicasPerTrainer": 1},
        "stop": {"targetReturn": TARGET, "maxEnvSteps": 2_000_000}, "evaluation": {"interval": 0},
        "checkpoint": {"interval": 20},
    }
    for key, value in job.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return {"job": spec}


def phase(cluster: Cluster, name: str = JOB) -> str:
    return str(cluster.status(name).get("phase") or "")


def ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def controller_ready(cluster: Cluster) -> bool:
    pods = cluster.pods("controller")
    return bool(pods) and all(ready(p) for p in pods)


def job_writes(cluster: Cluster) -> int:
    """The controller's API writes for jobs (its Lease renewals, every 2 s per replica whatever the jobs, apart)."""
    return sum(1 for r in cluster.api.requests() if r.user.endswith("-controller")
               and r.verb in ("create", "update", "patch", "delete") and r.resource != "leases")


def resyncs(cluster: Cluster) -> int:
    """The controller's lists of every A2CJob: one per resync (every --resync-s, 10 s by default: the pass that
    polls trainer 0 and would act on anything that changed), plus one whenever its job watch (re)lists."""
    return sum(1 for r in cluster.api.requests() if r.user.endswith("-controller")
               and r.verb == "list" and r.resource == "a2cjobs")
