"""Deciding a job's status and what to do about it: pure, given what was observed.

Data flow: `handlers.reconcile` observes the trainer pods (`TrainerPod`) and trainer 0's Status reply
(`probe.trainer_status`, a plain dict), calls `decide(job, pods, report, now)`, and acts on the
`Decision`: render the children (stopped or not, at which trainer count), delete the trainer pods for
a gang restart, emit the Events, write the status. The previous status is the controller's memory (it
survives controller restarts): `trainerPods` remembers each trainer pod's uid and restart count so a
lost rank is noticed even if the pod came back before we looked.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from a2c.controller import spec as jobspec

PENDING, RUNNING, RESTARTING, SUCCEEDED, FAILED = "Pending", "Running", "Restarting", "Succeeded", "Failed"
TERMINAL = (SUCCEEDED, FAILED)


@dataclass(frozen=True)
class TrainerPod:
    name: str
    uid: str
    restarts: int
    ready: bool
    deleting: bool = False

    @property
    def ordinal(self) -> int:
        suffix = self.name.rsplit("-", 1)[-1]
        return int(suffix) if suffix.isdigit() else -1


@dataclass
class Decision:
    status: dict[str, Any]
    trainers: int  # trainer replicas to render
    stopped: bool = False  # scale both StatefulSets to zero (keep Service, ConfigMap, checkpoints)
    restart_gang: bool = False  # delete every trainer pod so the group re-forms from the checkpoint
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def set_condition(
    conditions: list[dict[str, Any]], type_: str, status: bool, reason: str, message: str, now: str, generation: int
) -> None:
    """Upsert one condition (API convention); lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    for cond in conditions:
        if cond["type"] == type_:
            if cond["status"] != value:
                cond["lastTransitionTime"] = now
            cond.update(status=value, reason=reason, message=message, observedGeneration=generation)
            return
    conditions.append({"type": type_, "status": value, "reason": reason, "message": message,
                       "lastTransitionTime": now, "observedGeneration": generation})


def lost_trainers(seen: dict[str, dict[str, Any]], pods: list[TrainerPod]) -> list[str]:
    """Why the gang is broken: a trainer pod we saw is gone, was replaced (new uid) or restarted."""
    now = {p.name: p for p in pods if not p.deleting}
    why = []
    for name, before in sorted(seen.items()):
        pod = now.get(name)
        if pod is None:
            why.append(f"{name} vanished")
        elif pod.uid != before.get("uid"):
            why.append(f"{name} was replaced")
        elif pod.restarts > int(before.get("restarts", 0)):
            why.append(f"{name} restarted")
    return why


def _progress(status: dict[str, Any], report: dict[str, Any]) -> None:
    status.update(iteration=int(report["iteration"]), envSteps=int(report["env_steps"]),
                  meanReturn=float(report["mean_return"]), episodes=int(report["episodes"]))


def _conditions(d: Decision, pods: list[TrainerPod], report: dict[str, Any] | None, now: str, gen: int) -> None:
    status = d.status
    conds = status.setdefault("conditions", [])
    phase, reason, message = status["phase"], status.get("reason", ""), status.get("message", "")
    ready = phase == RUNNING and report is not None and len([p for p in pods if p.ready]) >= d.trainers
    set_condition(conds, "Ready", ready, "TrainersReady" if ready else "TrainersNotReady",
                  f"{len([p for p in pods if p.ready])}/{d.trainers} trainers ready"
                  + ("" if report is not None else "; trainer 0 not answering"), now, gen)
    set_condition(conds, "Progressing", phase not in TERMINAL, reason or phase, message, now, gen)
    set_condition(conds, "Succeeded", phase == SUCCEEDED, reason if phase == SUCCEEDED else "NotSucceeded",
                  message if phase == SUCCEEDED else "", now, gen)
    set_condition(conds, "Failed", phase == FAILED, reason if phase == FAILED else "NotFailed",
                  message if phase == FAILED else "", now, gen)


def decide(
    job: dict[str, Any], pods: list[TrainerPod], report: dict[str, Any] | None, now: str, template: str
) -> Decision:
    """The new status of `job` and the actions that make the cluster match it.

    `template` identifies the trainer pod template the spec renders (`resources.trainer_template_hash`).
    """
    spec = jobspec.with_defaults(job.get("spec"))
    gen = int(job["metadata"].get("generation") or 0)
    old = job.get("status") or {}
    status = copy.deepcopy(old)
    status["observedGeneration"] = gen
    want = int(spec["trainers"]["replicas"])
    players = want * int(spec["players"]["replicasPerTrainer"])
    d = Decision(status=status, trainers=int(old.get("trainerReplicas") or want))

    if old.get("phase") in TERMINAL:  # final: keep it scaled down, leave the record as it was
        d.stopped = True
        return d

    if "trainerReplicas" not in old:
        status.update(phase=PENDING, reason="Created", message="children created", startTime=now,
                      trainerReplicas=want, playerReplicas=players, gangRestarts=0, trainerPods={},
                      trainerTemplate=template)
        d.trainers = want
        d.events.append(("Normal", "Created", f"created {want} trainers and {players} players"))
    elif int(old["trainerReplicas"]) != want or old.get("trainerTemplate", template) != template:
        resized = int(old["trainerReplicas"]) != want
        what = f"trainers {old['trainerReplicas']} -> {want}" if resized else "trainer spec changed"
        persistent = spec["checkpoint"]["persistent"]
        resume = "from the checkpoint" if persistent else "from scratch (no persistent checkpoint)"
        status.update(phase=RESTARTING, reason="Reforming", trainerReplicas=want, playerReplicas=players,
                      trainerPods={}, trainerTemplate=template, message=f"{what}: re-forming the group {resume}")
        d.trainers, d.restart_gang = want, True
        d.events.append(("Normal", "Reforming", status["message"]))
    else:
        if int(old.get("playerReplicas") or players) != players:
            status["playerReplicas"] = players
            d.events.append(("Normal", "ScaledPlayers", f"players {old.get('playerReplicas')} -> {players}"))
        lost = lost_trainers(old.get("trainerPods") or {}, pods)
        restarts = int(old.get("gangRestarts") or 0) + (1 if lost else 0)
        if lost and restarts > int(spec["maxGangRestarts"]):
            status.update(phase=FAILED, reason="TooManyGangRestarts", completionTime=now, trainerPods={},
                          message=f"{'; '.join(lost)}: gang restart {restarts} exceeds maxGangRestarts")
            d.stopped = True
            d.events.append(("Warning", "Failed", status["message"]))
        elif lost:
            status.update(phase=RESTARTING, reason="GangRestart", gangRestarts=restarts, trainerPods={},
                          message=f"{'; '.join(lost)}: restarting all trainers from the checkpoint ({restarts})")
            d.restart_gang = True
            d.events.append(("Warning", "GangRestart", status["message"]))
        else:
            status["trainerTemplate"] = template
            status["trainerPods"] = {p.name: {"uid": p.uid, "restarts": p.restarts}
                                     for p in pods if not p.deleting and 0 <= p.ordinal < d.trainers}

    if report is not None and not d.restart_gang and status["phase"] != FAILED:
        _progress(status, report)
        if report["phase"] in ("SUCCEEDED", "FINISHED"):
            reached = report["phase"] == "SUCCEEDED"
            status.update(phase=SUCCEEDED, completionTime=now,
                          reason="TargetReached" if reached else "StepBudgetSpent",
                          message=(f"mean return {status['meanReturn']:.1f} reached the target" if reached else
                                   f"step budget spent at mean return {status['meanReturn']:.1f}")
                          + "; players stopped, checkpoints kept")
            d.stopped = True
            d.events.append(("Normal", "Succeeded", status["message"]))
        elif report["phase"] in ("STARTING", "TRAINING", "STOPPING"):
            if status["phase"] != RUNNING:
                d.events.append(("Normal", "Running", f"trainer 0 reports {report['phase']}"))
            status.update(phase=RUNNING, reason=report["phase"].capitalize(),
                          message=report.get("message") or f"iteration {status['iteration']}")
    _conditions(d, pods, report, now, gen)
    return d
