"""A job whose player's memory limit is too small, on the test cluster with pods as containers of the image.

The kernel's OOM killer ends the player (a real memory cgroup limit: only the container runtime has one);
the kubelet reports it (lastState.terminated: OOMKilled, exit 137) and restarts it with a back-off
(a StatefulSet's pods always restart); the trainers go on without its rollouts (a round waits at most
roundTimeoutSeconds for a player), so the job keeps running: no gang restart, no failure. The controller
names the failure in the job's status (`lastPlayerFailure`, `playerRestarts`) and in a PlayerOOMKilled Event.

Runs where the cluster's node runs containers (A2C_TEST_RUNTIME=container, as CI); skipped, with that reason,
on the process runtime, which has no memory limit to enforce.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.cluster.conftest import Chart, Cluster
from tests.cluster.journeys import JOB, phase, values


def _oom_killed(cluster: Cluster) -> list[dict[str, Any]]:
    out = []
    for pod in cluster.pods("player"):
        for c in (pod.get("status") or {}).get("containerStatuses") or []:
            ended = (c.get("lastState") or {}).get("terminated") or (c.get("state") or {}).get("terminated")
            if ended and ended.get("reason") == "OOMKilled":
                out.append({"pod": pod["metadata"]["name"], "restarts": c.get("restartCount", 0), **ended})
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_player_over_its_memory_limit_is_oom_killed_and_restarted_while_the_job_runs(cluster: Cluster) -> None:
    if cluster.node.runtime_kind != "container":
        pytest.skip("memory limits are enforced by the container runtime only (A2C_TEST_RUNTIME=container)")
    # a player cannot even import torch in 100 MiB
    small = {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"memory": "100Mi"}}
    cluster.install(Chart.render(values(players={"resources": small}, stop={"targetReturn": 10_000.0,
                                                                           "maxEnvSteps": 10**12})))
    killed = cluster.wait(lambda: [k for k in _oom_killed(cluster) if int(k["restarts"]) >= 1], 300,
                          "a player to be OOM-killed and restarted")
    assert all(k["exitCode"] == 137 for k in killed), killed
    cluster.wait(lambda: phase(cluster) == "Running", 240, "the job to run without its players")
    status = cluster.status(JOB)
    assert status["gangRestarts"] == 0 and not any(cluster.restarts("trainer").values()), cluster.describe()
    # what a user sees: the pod's last state says why, and so do the job's status and Events
    described = cluster.kubectl("describe", "pod", str(killed[0]["pod"]))
    assert "OOMKilled" in described and "137" in described, described
    failure = cluster.wait(lambda: cluster.status(JOB).get("lastPlayerFailure"), 60,
                           "the job's status to name the player's failure")
    assert failure["reason"] == "OOMKilled" and failure["exitCode"] == 137, failure
    assert int(cluster.status(JOB)["playerRestarts"]) >= 1
    job_events = cluster.kubectl("describe", "a2cjob", JOB)
    assert re.search(r"Warning\s+PlayerOOMKilled\s", job_events), job_events
    assert "players.resources.limits.memory" in job_events, job_events
    cluster.kubectl("delete", "a2cjob", JOB, "--timeout", "60s")
    cluster.wait(lambda: not cluster.pods("trainer") and not cluster.pods("player"), 90, "the pods to go")
