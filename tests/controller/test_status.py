"""status.py: the decisions, on hand-made observations (no cluster, no clock)."""

from __future__ import annotations

import math
import pathlib
from typing import Any

import jsonschema
import yaml

from a2c.controller import jobstate, status

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def job(old: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "cp", "namespace": "ml", "uid": "u", "generation": generation},
            "spec": {"trainers": {"replicas": 2}, **spec}, "status": old or {}}


def pod(i: int, uid: str = "", restarts: int = 0, ready: bool = True) -> jobstate.JobPod:
    return jobstate.JobPod(name=f"cp-trainer-{i}", uid=uid or f"uid-{i}", restarts=restarts, ready=ready)


def report(phase: str = "TRAINING", **kw: Any) -> dict[str, Any]:
    return {"phase": phase, "iteration": 10, "env_steps": 1280, "mean_return": 42.5, "episodes": 30, "message": "",
            **kw}


def running(**kw: Any) -> dict[str, Any]:
    """The status after pods 0 and 1 were seen running."""
    d = status.decide(job(), [], None, T0, "h1")
    d = status.decide(job(d.status), [pod(0), pod(1)], report(), T0, "h1")
    assert d.status["phase"] == jobstate.RUNNING and set(d.status["trainerPods"]) == {"cp-trainer-0", "cp-trainer-1"}
    d.status.update(kw)
    return d.status


def cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == type_)


def test_first_reconcile_creates_and_is_pending() -> None:
    d = status.decide(job(), [], None, T0, "h1")
    assert d.status["phase"] == jobstate.PENDING and d.trainers == 2 and not d.stopped and not d.restart_gang
    assert d.status["trainerReplicas"] == 2 and d.status["playerReplicas"] == 2 and d.status["observedGeneration"] == 1
    assert [e[1] for e in d.events] == ["Created"]
    assert cond(d.status, "Ready")["status"] == "False" and cond(d.status, "Progressing")["status"] == "True"


def test_progress_comes_from_trainer_0_and_ready_needs_every_trainer() -> None:
    st = running()
    assert (st["iteration"], st["envSteps"], st["meanReturn"], st["episodes"]) == (10, 1280, 42.5, 30)
    assert cond(st, "Ready")["status"] == "True"
    d = status.decide(job(st), [pod(0), pod(1, ready=False)], report(), T1, "h1")
    assert cond(d.status, "Ready")["status"] == "False" and not d.restart_gang


def test_conditions_move_their_transition_time_only_when_they_flip() -> None:
    st = running()
    d = status.decide(job(st), [pod(0), pod(1)], report(iteration=11), T1, "h1")
    assert cond(d.status, "Ready")["lastTransitionTime"] == T0 and d.status["iteration"] == 11
    assert d.events == []


def test_a_restarted_trainer_restarts_the_gang() -> None:
    d = status.decide(job(running()), [pod(0), pod(1, restarts=1)], report(), T1, "h1")
    assert d.restart_gang and d.status["phase"] == jobstate.RESTARTING and d.status["gangRestarts"] == 1
    assert d.status["trainerPods"] == {} and "cp-trainer-1 restarted" in d.status["message"]
    assert d.events[0][:2] == ("Warning", "GangRestart")


def test_a_vanished_or_replaced_trainer_restarts_the_gang() -> None:
    assert status.decide(job(running()), [pod(0)], None, T1, "h1").restart_gang
    d = status.decide(job(running()), [pod(0, uid="new"), pod(1)], report(), T1, "h1")
    assert d.restart_gang and "cp-trainer-0 was replaced" in d.status["message"]


def test_a_pod_being_deleted_counts_as_gone() -> None:
    gone = jobstate.JobPod("cp-trainer-1", "uid-1", 0, False, deleting=True)
    assert status.decide(job(running()), [pod(0), gone], None, T1, "h1").restart_gang


def test_repeated_gang_failures_fail_the_job() -> None:
    d = status.decide(job(running(gangRestarts=3)), [pod(0)], None, T1, "h1")
    assert d.status["phase"] == jobstate.FAILED and d.status["reason"] == "TooManyGangRestarts"
    assert d.stopped and not d.restart_gang and cond(d.status, "Failed")["status"] == "True"
    assert cond(d.status, "Progressing")["status"] == "False"
    j = job(running(gangRestarts=1), maxGangRestarts=1)
    assert status.decide(j, [pod(0)], None, T1, "h1").status["phase"] == jobstate.FAILED


def test_target_reached_succeeds_and_stops() -> None:
    d = status.decide(job(running()), [pod(0), pod(1)], report("SUCCEEDED", mean_return=480.0), T1, "h1")
    assert d.status["phase"] == jobstate.SUCCEEDED and d.status["reason"] == "TargetReached" and d.stopped
    assert d.status["meanReturn"] == 480.0 and d.status["completionTime"] == T1
    assert cond(d.status, "Succeeded")["status"] == "True" and cond(d.status, "Ready")["status"] == "False"
    again = status.decide(job(d.status), [], None, T1, "h1")
    assert again.stopped and again.status["phase"] == jobstate.SUCCEEDED and again.events == []


def test_spent_budget_also_completes_and_says_so() -> None:
    d = status.decide(job(running()), [pod(0), pod(1)], report("FINISHED"), T1, "h1")
    assert d.status["phase"] == jobstate.SUCCEEDED and d.status["reason"] == "StepBudgetSpent"


def test_a_new_trainer_count_reforms_the_group_without_counting_a_failure() -> None:
    d = status.decide(job(running(), generation=2, trainers={"replicas": 3}), [pod(0), pod(1)], report(), T1, "h1")
    assert d.restart_gang and d.trainers == 3 and d.status["trainerReplicas"] == 3
    assert d.status["gangRestarts"] == 0 and d.status["observedGeneration"] == 2
    assert d.events[0][1] == "Reforming"


def test_player_scaling_does_not_touch_the_trainers() -> None:
    j = job(running(), generation=2, players={"replicasPerTrainer": 4})
    d = status.decide(j, [pod(0), pod(1)], report(), T1, "h1")
    assert not d.restart_gang and d.status["playerReplicas"] == 8 and d.trainers == 2
    assert d.events[0][1] == "ScaledPlayers"


def test_a_changed_trainer_template_reforms_the_group_without_counting_a_failure() -> None:
    d = status.decide(job(running(), generation=2), [pod(0), pod(1)], report(), T1, "h2")
    assert d.restart_gang and d.status["trainerTemplate"] == "h2" and d.status["gangRestarts"] == 0
    assert "trainer spec changed" in d.status["message"] and "from scratch" in d.status["message"]
    again = status.decide(job(d.status, generation=2), [], None, T1, "h2")
    assert not again.restart_gang


CRD = pathlib.Path(__file__).resolve().parents[2] / "deploy/helm/files/a2cjob-crd.yaml"
SCHEMA = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


def _unknown(schema: dict[str, Any], value: Any, path: str = "status") -> list[str]:
    """Fields the API server would prune from `value` (not declared in the structural schema)."""
    if isinstance(value, dict) and "properties" in schema:
        out = []
        for key, sub in value.items():
            if key not in schema["properties"]:
                out.append(f"{path}.{key}")
            else:
                out += _unknown(schema["properties"][key], sub, f"{path}.{key}")
        return out
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return [p for k, v in value.items() for p in _unknown(schema["additionalProperties"], v, f"{path}.{k}")]
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [p for i, v in enumerate(value) for p in _unknown(schema["items"], v, f"{path}[{i}]")]
    return []


def test_every_status_field_written_survives_the_crd_schema() -> None:
    written = [running(), status.decide(job(running()), [pod(0)], None, T1, "h1").status,
               status.decide(job(running()), [pod(0), pod(1)], report("SUCCEEDED"), T1, "h1").status,
               status.decide(job(running(gangRestarts=9)), [pod(0)], None, T1, "h1").status,
               status.decide(job(status.decide(job(), [], None, T0, "h1").status), [pod(0, ready=False)], None,
                             T1, "h1").status]
    for st in written:
        assert _unknown(SCHEMA, st) == []
        jsonschema.Draft4Validator(SCHEMA).validate(st)
    assert _unknown(SCHEMA, {"phase": "Running", "bogus": 1}) == ["status.bogus"]


# --- what a real cluster does (issue: the Kubernetes path as a real cluster behaves) --------------------------


def test_a_final_report_beats_a_restart_seen_in_the_same_pass() -> None:
    """A trainer that finished may exit and be restarted by its StatefulSet before we look: success stands."""
    d = status.decide(job(running()), [pod(0), pod(1, restarts=1)], report("SUCCEEDED", mean_return=480.0), T1, "h1")
    assert d.status["phase"] == jobstate.SUCCEEDED and not d.restart_gang and d.stopped
    assert d.status["gangRestarts"] == 0 and [e[1] for e in d.events] == ["Succeeded"]
    later = status.decide(job(d.status), [pod(0, restarts=2), pod(1, restarts=3)], None, T1, "h1")
    assert later.status["phase"] == jobstate.SUCCEEDED and not later.restart_gang and later.events == []


def test_no_non_finite_number_reaches_status() -> None:
    """mean_return is NaN until the first episode ends; JSON has no NaN (kube-apiserver answers 400)."""
    import json

    unknown = {k: v for k, v in running().items() if k != "meanReturn"}  # no episode has ended yet
    fresh = status.decide(job(unknown), [pod(0), pod(1)], report(mean_return=math.nan, episodes=0), T1, "h1")
    assert "meanReturn" not in fresh.status and fresh.status["iteration"] == 10
    d = status.decide(job(running()), [pod(0), pod(1)], report(mean_return=math.nan), T1, "h1")
    assert d.status["meanReturn"] == 42.5  # the last known mean stays
    json.dumps(d.status, allow_nan=False)
    done = status.decide(job(running()), [pod(0), pod(1)], report("FINISHED", mean_return=math.inf), T1, "h1")
    assert done.status["meanReturn"] == 42.5 and "42.5" in done.status["message"]
    json.dumps(done.status, allow_nan=False)


def test_progress_never_goes_backwards_but_to_the_checkpoint_resumed_from() -> None:
    """A re-forming group reports zeros while STARTING: status keeps what it knew; the one step back allowed is to
    the checkpoint the group resumed from, and status says so."""
    before = running(iteration=1902, envSteps=486_912, episodes=900, meanReturn=180.5)
    lost = status.decide(job(before), [pod(0), pod(1, restarts=1)], None, T1, "h1")
    assert lost.restart_gang and lost.status["phase"] == jobstate.RESTARTING
    seen = [lost.status]
    for r in (report("STARTING", iteration=0, env_steps=0, episodes=0, mean_return=math.nan),
              report("STARTING", iteration=1880, env_steps=481_280, episodes=880, mean_return=math.nan),
              report("TRAINING", iteration=1890, env_steps=483_840, episodes=885, mean_return=170.0),
              report("TRAINING", iteration=1910, env_steps=488_960, episodes=905, mean_return=181.0)):
        seen.append(status.decide(job(seen[-1]), [pod(0, uid="n0"), pod(1, uid="n1")], r, T1, "h1").status)
    assert [s["iteration"] for s in seen] == [1902, 1902, 1880, 1890, 1910]
    assert [s["envSteps"] for s in seen] == [486_912, 486_912, 481_280, 483_840, 488_960]
    assert [s.get("meanReturn") for s in seen] == [180.5, 180.5, 180.5, 170.0, 181.0]
    assert seen[2]["resumedFrom"] == {"iteration": 1880, "envSteps": 481_280, "previousIteration": 1902, "time": T1}
    assert seen[3]["phase"] == jobstate.RUNNING
    assert "resumed from the checkpoint at iteration 1880" in seen[3]["message"]
    assert "resumed" not in seen[4]["message"] and seen[4]["resumedFrom"]["iteration"] == 1880
    assert _unknown(SCHEMA, seen[2]) == []


def test_at_the_end_no_condition_contradicts_the_phase() -> None:
    d = status.decide(job(running()), [pod(0), pod(1)], report("SUCCEEDED", mean_return=480.0), T1, "h1")
    ready = cond(d.status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "JobSucceeded"
    assert "trainers ready" not in ready["message"] and "succeeded" in ready["message"]
    assert cond(d.status, "Progressing")["status"] == "False" and cond(d.status, "Succeeded")["status"] == "True"
    bad = status.invalid(job(running()), "spec.trainers.replicas: must be >= 1", T1)
    assert bad["phase"] == jobstate.FAILED and bad["reason"] == "InvalidSpec"
    assert [(c["type"], c["status"]) for c in bad["conditions"]] == [
        ("Ready", "False"), ("Progressing", "False"), ("Succeeded", "False"), ("Failed", "True")]
    assert cond(bad, "Ready")["reason"] == "JobFailed" and cond(bad, "Failed")["reason"] == "InvalidSpec"


def test_polled_and_watch_driven_passes_agree_so_an_unchanged_status_is_not_rewritten() -> None:
    """Pending, trainer 0 not answering: the watch-driven pass (no poll) keeps what the last poll found about
    trainer 0 instead of flipping the message back; lastTransitionTime moves only when a status flips."""
    pending = status.decide(job(), [], None, T0, "h1").status
    pods = [pod(0, ready=False), pod(1, ready=False)]
    polled = status.decide(job(pending), pods, None, T1, "h1").status
    assert cond(polled, "Ready")["message"] == "0/2 trainers ready; trainer 0 not answering"
    assert cond(polled, "Ready")["lastTransitionTime"] == T0  # False before, False now: no transition
    later = "2026-01-01T00:02:00Z"
    watched = status.decide(job(polled), pods, None, later, "h1", polled=False).status
    assert watched == polled
    assert status.decide(job(watched), pods, None, later, "h1").status == polled
    up = status.decide(job(polled), [pod(0), pod(1)], report(), later, "h1").status
    assert cond(up, "Ready")["status"] == "True" and cond(up, "Ready")["lastTransitionTime"] == later


def test_a_reconcile_without_a_poll_changes_nothing_on_a_running_job() -> None:
    """Watch events (our own status writes among them) must not cause another write: no poll, same status."""
    st = running()
    d = status.decide(job(st), [pod(0), pod(1)], None, T1, "h1", polled=False)
    assert d.status == st and d.events == [] and not d.restart_gang
    polled = status.decide(job(st), [pod(0), pod(1)], None, T1, "h1")  # asked, and trainer 0 did not answer
    ready = cond(polled.status, "Ready")
    assert ready["status"] == "False" and "not answering" in ready["message"]


def test_restarts_while_the_group_forms_are_waiting_not_failures() -> None:
    """Pods start at different times (image pulls, node scale-up): ranks that time out waiting restart."""
    d = status.decide(job(), [], None, T0, "h1")
    for restarts in range(1, 6):  # more than maxGangRestarts, and never counted
        d = status.decide(job(d.status), [pod(0, ready=False), pod(1, restarts=restarts, ready=False)],
                          report("STARTING"), T1, "h1")
        assert not d.restart_gang and d.status["gangRestarts"] == 0 and d.status["phase"] == jobstate.PENDING
    assert d.status["message"] == "waiting for trainers (0/2 ready)" and d.status["reason"] == "WaitingForTrainers"
    d = status.decide(job(d.status), [pod(0), pod(1, restarts=5)], report(), T1, "h1")
    assert d.status["groupFormed"] is True and d.status["phase"] == jobstate.RUNNING
    d = status.decide(job(d.status), [pod(0), pod(1, restarts=6)], report(), T1, "h1")
    assert d.restart_gang and d.status["gangRestarts"] == 1 and d.status["groupFormed"] is False


def test_a_formed_group_is_running_before_trainer_0_is_asked() -> None:
    """Every rank Ready is Running (a watch event, no poll of trainer 0 in it): a job that solves between two
    resync polls still shows Pending -> Running -> Succeeded, as `kubectl get a2cj -w` watches it."""
    d = status.decide(job(), [], None, T0, "h1")
    d = status.decide(job(d.status), [pod(0), pod(1)], None, T1, "h1")
    assert (d.status["phase"], d.status["reason"], d.status["groupFormed"]) == (jobstate.RUNNING, "GroupFormed", True)
    assert d.status["message"] == "all 2 trainers ready"
    assert ("Normal", "Running", "all 2 trainers ready") in d.events
    again = status.decide(job(d.status), [pod(0), pod(1)], report("TRAINING"), T1, "h1")
    assert again.status["phase"] == jobstate.RUNNING and not any(e[1] == "Running" for e in again.events)
    done = status.decide(job(again.status), [pod(0), pod(1)], report("SUCCEEDED"), T1, "h1")
    assert done.status["phase"] == jobstate.SUCCEEDED


def test_a_group_that_never_forms_fails_at_its_startup_deadline() -> None:
    d = status.decide(job(trainers={"replicas": 2, "startupTimeoutSeconds": 30}), [], None, T0, "h1")
    pods = [pod(0), pod(1, ready=False)]
    early = status.decide(job(d.status, trainers={"replicas": 2, "startupTimeoutSeconds": 30}), pods, None,
                          "2026-01-01T00:00:20Z", "h1")
    assert early.status["phase"] == jobstate.PENDING and "1/2 ready" in early.status["message"]
    late = status.decide(job(d.status, trainers={"replicas": 2, "startupTimeoutSeconds": 30}), pods, None, T1, "h1")
    assert late.status["phase"] == jobstate.FAILED and late.status["reason"] == "StartupTimeout" and late.stopped
    assert "1/2 trainers ready after 60 s" in late.status["message"]


def test_a_trainer_that_cannot_start_fails_the_job_with_its_message() -> None:
    """Exit code 3 (termination.EXIT_CANNOT_START): the same error on every restart, so no restart loop."""
    broken = jobstate.JobPod("cp-trainer-0", "uid-0", 1, False, exit_code=3,
                               message="trainer cannot start: NameNotFound: Environment `Nope` doesn't exist.")
    d = status.decide(job(status.decide(job(), [], None, T0, "h1").status), [broken, pod(1, ready=False)], None,
                      T1, "h1")
    assert d.status["phase"] == jobstate.FAILED and d.status["reason"] == "TrainerCannotStart" and d.stopped
    assert "Environment `Nope` doesn't exist" in d.status["message"]
    assert d.events[0][:2] == ("Warning", "TrainerCannotStart")
    crashed = jobstate.JobPod("cp-trainer-1", "uid-1", 1, True, exit_code=1, message="lost peer")
    other = status.decide(job(running()), [pod(0), crashed], None, T1, "h1")
    assert other.restart_gang and other.status["phase"] == jobstate.RESTARTING  # any other crash: a gang restart


def player(i: int, restarts: int = 0, reason: str = "", exit_code: int | None = None) -> jobstate.JobPod:
    return jobstate.JobPod(name=f"cp-player-{i}", uid=f"p-{i}", restarts=restarts, ready=True, reason=reason,
                         exit_code=exit_code)


def test_an_oom_killed_player_is_named_in_status_and_a_warning_once_and_the_job_goes_on() -> None:
    trainers = [pod(0), pod(1)]
    d = status.decide(job(running()), trainers, report(), T0, "h1", player_pods=[player(0), player(1)])
    assert d.status["playerRestarts"] == 0 and d.status["playerPods"] == {"cp-player-0": 0, "cp-player-1": 0}
    assert "lastPlayerFailure" not in d.status and d.events == []

    killed = [player(0), player(1, restarts=1, reason="OOMKilled", exit_code=137)]
    d = status.decide(job(d.status), trainers, report(), T1, "h1", player_pods=killed)
    assert d.status["phase"] == jobstate.RUNNING and not d.restart_gang and d.status["gangRestarts"] == 0
    assert d.status["playerRestarts"] == 1
    assert d.status["lastPlayerFailure"] == {"pod": "cp-player-1", "reason": "OOMKilled", "exitCode": 137,
                                             "restarts": 1, "time": T1}
    [(type_, reason, message)] = d.events
    assert (type_, reason) == ("Warning", "PlayerOOMKilled")
    assert "cp-player-1" in message and "OOMKilled, exit 137" in message
    assert "players.resources.limits.memory" in message

    # the next pass sees the same restart count: no second Event, nothing to write
    again = status.decide(job(d.status), trainers, report(), T1, "h1", player_pods=killed)
    assert again.events == [] and again.status == d.status

    # the pod is replaced (its count starts from 0 again): the job's total stays, no Event
    replaced = status.decide(job(d.status), trainers, report(), T1, "h1", player_pods=[player(0), player(1)])
    assert replaced.events == [] and replaced.status["playerRestarts"] == 1
    assert replaced.status["playerPods"] == {"cp-player-0": 0, "cp-player-1": 0}


def test_a_player_that_exits_with_an_error_is_a_restart_not_an_oom_kill() -> None:
    st = status.decide(job(running()), [pod(0), pod(1)], report(), T0, "h1", player_pods=[player(0)]).status
    d = status.decide(job(st), [pod(0), pod(1)], report(), T1, "h1",
                      player_pods=[player(0, restarts=2, reason="Error", exit_code=1)])
    assert [e[:2] for e in d.events] == [("Warning", "PlayerRestarted")]
    assert d.status["lastPlayerFailure"]["reason"] == "Error" and d.status["playerRestarts"] == 2


def test_a_trainer_killed_for_memory_says_so_in_the_gang_restart() -> None:
    oom = jobstate.JobPod("cp-trainer-1", "uid-1", 1, True, exit_code=137, reason="OOMKilled")
    d = status.decide(job(running()), [pod(0), oom], report(), T1, "h1")
    assert d.restart_gang and "cp-trainer-1 restarted (OOMKilled, exit 137)" in d.status["message"]


def test_player_failures_fit_the_crds_status_schema() -> None:
    st = status.decide(job(running()), [pod(0), pod(1)], report(), T0, "h1", player_pods=[player(0)]).status
    st = status.decide(job(st), [pod(0), pod(1)], report(), T1, "h1",
                       player_pods=[player(0, restarts=1, reason="OOMKilled", exit_code=137)]).status
    for key in ("playerRestarts", "playerPods", "lastPlayerFailure"):  # else the API server prunes them
        assert key in SCHEMA["properties"], key
    jsonschema.validate(st, SCHEMA)
