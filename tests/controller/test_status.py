"""status.py: the decisions, on hand-made observations (no cluster, no clock)."""

from __future__ import annotations

import pathlib
from typing import Any

import jsonschema
import yaml

from a2c.controller import status

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def job(old: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "cp", "namespace": "ml", "uid": "u", "generation": generation},
            "spec": {"trainers": {"replicas": 2}, **spec}, "status": old or {}}


def pod(i: int, uid: str = "", restarts: int = 0, ready: bool = True) -> status.TrainerPod:
    return status.TrainerPod(name=f"cp-trainer-{i}", uid=uid or f"uid-{i}", restarts=restarts, ready=ready)


def report(phase: str = "TRAINING", **kw: Any) -> dict[str, Any]:
    return {"phase": phase, "iteration": 10, "env_steps": 1280, "mean_return": 42.5, "episodes": 30, "message": "",
            **kw}


def running(**kw: Any) -> dict[str, Any]:
    """The status after pods 0 and 1 were seen running."""
    d = status.decide(job(), [], None, T0, "h1")
    d = status.decide(job(d.status), [pod(0), pod(1)], report(), T0, "h1")
    assert d.status["phase"] == status.RUNNING and set(d.status["trainerPods"]) == {"cp-trainer-0", "cp-trainer-1"}
    d.status.update(kw)
    return d.status


def cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == type_)


def test_first_reconcile_creates_and_is_pending() -> None:
    d = status.decide(job(), [], None, T0, "h1")
    assert d.status["phase"] == status.PENDING and d.trainers == 2 and not d.stopped and not d.restart_gang
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
    assert d.restart_gang and d.status["phase"] == status.RESTARTING and d.status["gangRestarts"] == 1
    assert d.status["trainerPods"] == {} and "cp-trainer-1 restarted" in d.status["message"]
    assert d.events[0][:2] == ("Warning", "GangRestart")


def test_a_vanished_or_replaced_trainer_restarts_the_gang() -> None:
    assert status.decide(job(running()), [pod(0)], None, T1, "h1").restart_gang
    d = status.decide(job(running()), [pod(0, uid="new"), pod(1)], report(), T1, "h1")
    assert d.restart_gang and "cp-trainer-0 was replaced" in d.status["message"]


def test_a_pod_being_deleted_counts_as_gone() -> None:
    gone = status.TrainerPod("cp-trainer-1", "uid-1", 0, False, deleting=True)
    assert status.decide(job(running()), [pod(0), gone], None, T1, "h1").restart_gang


def test_repeated_gang_failures_fail_the_job() -> None:
    d = status.decide(job(running(gangRestarts=3)), [pod(0)], None, T1, "h1")
    assert d.status["phase"] == status.FAILED and d.status["reason"] == "TooManyGangRestarts"
    assert d.stopped and not d.restart_gang and cond(d.status, "Failed")["status"] == "True"
    assert cond(d.status, "Progressing")["status"] == "False"
    j = job(running(gangRestarts=1), maxGangRestarts=1)
    assert status.decide(j, [pod(0)], None, T1, "h1").status["phase"] == status.FAILED


def test_target_reached_succeeds_and_stops() -> None:
    d = status.decide(job(running()), [pod(0), pod(1)], report("SUCCEEDED", mean_return=480.0), T1, "h1")
    assert d.status["phase"] == status.SUCCEEDED and d.status["reason"] == "TargetReached" and d.stopped
    assert d.status["meanReturn"] == 480.0 and d.status["completionTime"] == T1
    assert cond(d.status, "Succeeded")["status"] == "True" and cond(d.status, "Ready")["status"] == "False"
    again = status.decide(job(d.status), [], None, T1, "h1")
    assert again.stopped and again.status["phase"] == status.SUCCEEDED and again.events == []


def test_spent_budget_also_completes_and_says_so() -> None:
    d = status.decide(job(running()), [pod(0), pod(1)], report("FINISHED"), T1, "h1")
    assert d.status["phase"] == status.SUCCEEDED and d.status["reason"] == "StepBudgetSpent"


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
               status.decide(job(running(gangRestarts=9)), [pod(0)], None, T1, "h1").status]
    for st in written:
        assert _unknown(SCHEMA, st) == []
        jsonschema.Draft4Validator(SCHEMA).validate(st)
    assert _unknown(SCHEMA, {"phase": "Running", "bogus": 1}) == ["status.bogus"]
