"""Deciding a job's status and what to do about it: pure, given what was observed.

Data flow: `handlers.reconcile` observes the trainer pods (`JobPod`) and trainer 0's Status reply
(`probe.trainer_status`, a plain dict), calls `decide(job, pods, report, now)`, and acts on the
`Decision`: render the children (stopped or not, at which trainer count), delete the trainer pods for
a gang restart, emit the Events, write the status. The previous status is the controller's memory (it
survives controller restarts): `trainerPods` remembers each trainer pod's uid and restart count so a
lost rank is noticed even if the pod came back before we looked.

Rules a real cluster forces on us: a trainer group forms only once every rank is Ready (pods start at
different times: image pulls, GPU node scale-up), so restarts before that are waiting, not failures, bounded
by `spec.trainers.startupTimeoutSeconds`; a final report (SUCCEEDED / FINISHED) beats anything else seen in
the same pass; a trainer that exited with `termination.EXIT_CANNOT_START` fails the job at once; no
non-finite number ever goes into status (JSON has none).

The run policy (`spec.run_policy`): a suspended job is scaled to zero and watched for nothing
(`runpolicy.suspend`), a resumed one starts a new group (`runpolicy.resume`); activeDeadlineSeconds fails
a job active that long (time suspended left out); backoffLimit, where given, is the gang restart limit
instead of maxGangRestarts.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from a2c.controller import runpolicy
from a2c.controller import spec as jobspec
from a2c.controller.jobstate import (
    FAILED,
    PENDING,
    RESTARTING,
    RUNNING,
    SUCCEEDED,
    SUSPENDED,
    TERMINAL,
    Decision,
    JobPod,
    cannot_start,
    lost_trainers,
    ready_count,
    seconds_between,
    set_condition,
)


def _progress(status: dict[str, Any], report: dict[str, Any], now: str) -> None:
    """Trainer 0's progress into `status`, never backwards but to the checkpoint a re-formed group resumed from.

    A (re-)forming group reports zeros until rank 0 has loaded its checkpoint (STARTING): the last known progress
    stays, and a new job (`helm upgrade` makes one) shows none until its group has resumed. Once the report is
    below what status holds, the group resumed from an older checkpoint (the iteration is the policy version,
    monotonic within a run): that step back is taken and said in `resumedFrom`."""
    iteration, known = int(report["iteration"]), int(status.get("iteration") or 0)
    if iteration == 0 and report["phase"] == "STARTING":
        return  # not resumed (or started) yet: nothing to say, least of all zeros over what status knows
    resuming = "resumeTime" in status and "resumedFrom" not in status  # `resume` took the old one out
    if resuming and not status.get("groupFormed"):
        return  # the resumed group has not formed: what answers may still be the suspended group's last words
    if iteration < known or resuming:
        status["resumedFrom"] = {"iteration": iteration, "envSteps": int(report["env_steps"]),
                                 "previousIteration": known, "time": now}
    status.update(iteration=iteration, envSteps=int(report["env_steps"]), episodes=int(report["episodes"]))
    mean = float(report["mean_return"])
    if math.isfinite(mean) and int(report["episodes"]) > 0:  # NaN until an episode ends: JSON has no NaN (400)
        status["meanReturn"] = mean  # else the last known mean stays (a resumed group has no window yet)


def resumed_note(status: dict[str, Any]) -> str:
    """What a Running message adds while the group runs on from a checkpoint older than the progress it had."""
    back = status.get("resumedFrom")
    if not back or int(status.get("iteration") or 0) >= int(back["previousIteration"]):
        return ""
    return f" (resumed from the checkpoint at iteration {back['iteration']}, was {back['previousIteration']})"


NOT_ANSWERING = "TrainerNotAnswering"


def _conditions(d: Decision, pods: list[JobPod], report: dict[str, Any] | None, polled: bool, now: str,
                gen: int) -> None:
    """Ready, Progressing, Succeeded, Failed as the API conventions have them: each one says one thing, reason
    and message agree with the status, and a pass that learned nothing new writes the same words (a watch-driven
    pass does not ask trainer 0: what the last poll found about it stands)."""
    status = d.status
    conds = status.setdefault("conditions", [])
    phase, reason, message = status["phase"], status.get("reason", ""), status.get("message", "")
    before = next((c for c in conds if c["type"] == "Ready"), None)
    answering = report is not None if polled else not (before and before.get("reason") == NOT_ANSWERING)
    counted = f"{ready_count(pods, d.trainers)}/{d.trainers} trainers ready"
    if phase in TERMINAL:
        set_condition(conds, "Ready", False, f"Job{phase}", f"the job has {phase.lower()}: its trainers are stopped",
                      now, gen)
    elif phase == SUSPENDED:
        set_condition(conds, "Ready", False, "JobSuspended", "the job is suspended: no trainer runs", now, gen)
    elif phase == RUNNING and answering and ready_count(pods, d.trainers) >= d.trainers:
        set_condition(conds, "Ready", True, "TrainersReady", counted, now, gen)
    elif not answering:
        set_condition(conds, "Ready", False, NOT_ANSWERING, f"{counted}; trainer 0 not answering", now, gen)
    else:
        set_condition(conds, "Ready", False, "TrainersNotReady", counted, now, gen)
    set_condition(conds, "Progressing", phase not in (*TERMINAL, SUSPENDED), reason or phase, message, now, gen)
    if phase == SUSPENDED:  # as a Kubernetes Job has it: there once the job has been suspended, True while it is
        set_condition(conds, "Suspended", True, "JobSuspended", message, now, gen)
    elif any(c["type"] == "Suspended" for c in conds):
        set_condition(conds, "Suspended", False, "JobResumed", "spec.suspend is false: the job runs", now, gen)
    set_condition(conds, "Succeeded", phase == SUCCEEDED, reason if phase == SUCCEEDED else "NotSucceeded",
                  message if phase == SUCCEEDED else "", now, gen)
    set_condition(conds, "Failed", phase == FAILED, reason if phase == FAILED else "NotFailed",
                  message if phase == FAILED else "", now, gen)


def invalid(job: dict[str, Any], why: str, now: str) -> dict[str, Any]:
    """The status of a job whose spec cannot be rendered: Failed (InvalidSpec), every condition saying so."""
    gen = int(job["metadata"].get("generation") or 0)
    d = Decision(status=dict(copy.deepcopy(job.get("status") or {}), phase=FAILED, reason="InvalidSpec",
                             message=why, observedGeneration=gen), trainers=0, stopped=True)
    _conditions(d, [], None, False, now, gen)
    return d.status


def decide(
    job: dict[str, Any], pods: list[JobPod], report: dict[str, Any] | None, now: str, template: str,
    polled: bool = True, player_pods: list[JobPod] | None = None, spec: dict[str, Any] | None = None,
) -> Decision:
    """The new status of `job` and the actions that make the cluster match it.

    `template` identifies the trainer pod template the spec renders (`resources.trainer_template_hash`).
    `polled`: trainer 0 was asked for `report` (the periodic resync); a reconcile caused by a watch event
    does not ask, and then leaves progress and the Ready condition as they were. `player_pods`: the job's player
    pods, whose restarts (the kubelet restarts them; the job goes on) status counts and names. `spec`: the job's
    spec with its defaults filled in (else filled here).
    """
    spec = jobspec.with_defaults(job.get("spec")) if spec is None else spec
    gen = int(job["metadata"].get("generation") or 0)
    old = job.get("status") or {}
    status = copy.deepcopy(old)
    status["observedGeneration"] = gen
    want = int(spec["trainers"]["replicas"])
    players = want * int(spec["players"]["replicasPerTrainer"])
    d = Decision(status=status, trainers=int(old.get("trainerReplicas") or want))
    report = report if polled else None
    final = report is not None and report["phase"] in ("SUCCEEDED", "FINISHED")

    if old.get("phase") in TERMINAL:  # final: keep it scaled down, leave the record as it was
        d.stopped = True
        return d
    policy = jobspec.run_policy(spec)
    if policy.suspend:
        runpolicy.suspend(d, want, players, template, now)
        _conditions(d, pods, None, polled, now, gen)
        return d

    if "trainerReplicas" not in old:
        status.update(phase=PENDING, reason="WaitingForTrainers", message=f"waiting for trainers (0/{want} ready)",
                      startTime=now, trainerReplicas=want, playerReplicas=players, gangRestarts=0, trainerPods={},
                      trainerTemplate=template, groupFormed=False, groupStartTime=now)
        d.trainers = want
        d.events.append(("Normal", "Created", f"created {want} trainers and {players} players"))
    elif old.get("phase") == SUSPENDED:
        runpolicy.resume(d, want, players, template, now)
        report, final = None, False  # whatever answers now is not the resumed group
    elif not final and runpolicy.active_seconds(status, now) >= (policy.active_deadline_s or math.inf):
        status.update(phase=FAILED, reason="DeadlineExceeded", completionTime=now, trainerPods={},
                      message=f"the job was active for {runpolicy.active_seconds(status, now):.0f} s, over its "
                              f"activeDeadlineSeconds {policy.active_deadline_s}; checkpoints kept")
        d.stopped = True
        d.events.append(("Warning", "DeadlineExceeded", status["message"]))
    elif not final and (int(old["trainerReplicas"]) != want or old.get("trainerTemplate", template) != template):
        resized = int(old["trainerReplicas"]) != want
        what = f"trainers {old['trainerReplicas']} -> {want}" if resized else "trainer spec changed"
        persistent = spec["checkpoint"]["persistent"]
        resume = "from the checkpoint" if persistent else "from scratch (no persistent checkpoint)"
        status.update(phase=RESTARTING, reason="Reforming", trainerReplicas=want, playerReplicas=players,
                      trainerPods={}, trainerTemplate=template, groupFormed=False, groupStartTime=now,
                      message=f"{what}: re-forming the group {resume}")
        d.trainers, d.restart_gang = want, True
        d.events.append(("Normal", "Reforming", status["message"]))
    else:
        if int(old.get("playerReplicas") or players) != players:
            status["playerReplicas"] = players
            d.events.append(("Normal", "ScaledPlayers", f"players {old.get('playerReplicas')} -> {players}"))
        status["trainerTemplate"] = template
        if not final:
            _watch_group(d, spec, pods, now)

    if report is not None and not d.restart_gang and status["phase"] != FAILED:
        _progress(status, report, now)
        if final:
            reached = report["phase"] == "SUCCEEDED"
            mean = f"{status['meanReturn']:.1f}" if "meanReturn" in status else "n/a"
            status.update(phase=SUCCEEDED, completionTime=now,
                          reason="TargetReached" if reached else "StepBudgetSpent",
                          message=(f"mean return {mean} reached the target" if reached else
                                   f"step budget spent at mean return {mean}")
                          + "; players stopped, checkpoints kept")
            d.stopped = True
            d.events.append(("Normal", "Succeeded", status["message"]))
        elif report["phase"] in ("STARTING", "TRAINING", "STOPPING") and status.get("groupFormed", True):
            if status["phase"] != RUNNING:
                d.events.append(("Normal", "Running", f"trainer 0 reports {report['phase']}"))
            status.update(phase=RUNNING, reason=report["phase"].capitalize(),
                          message=(report.get("message") or (f"iteration {status['iteration']}" if "iteration" in status
                                                              else f"trainer 0 is {report['phase'].lower()}"))
                          + resumed_note(status))
    if status.get("phase") not in TERMINAL:
        _watch_players(d, player_pods or [], now)
        if policy.active_deadline_s is not None:  # the loop comes back at the deadline, not the next resync
            d.requeue_s = max(0.0, policy.active_deadline_s - runpolicy.active_seconds(status, now))
    _conditions(d, pods, report, polled, now, gen)
    return d


def _watch_players(d: Decision, players: list[JobPod], now: str) -> None:
    """A player that restarts costs its trainer's share of a few rounds, not the job: the kubelet restarts it and
    training goes on. Status keeps each player pod's restart count (`playerPods`), the job's total
    (`playerRestarts`, which a replaced pod does not lower) and how the newest failure ended
    (`lastPlayerFailure`); a Warning names each new one, with the limit to raise when the kernel killed it for
    memory."""
    status = d.status
    seen = {str(k): int(v) for k, v in (status.get("playerPods") or {}).items()}
    live = {p.name: p.restarts for p in players if not p.deleting}
    for p in sorted(players, key=lambda p: p.name):
        if p.deleting or p.restarts <= seen.get(p.name, 0):
            continue
        oom = p.reason == "OOMKilled"
        status["lastPlayerFailure"] = {"pod": p.name, "reason": p.reason or "Error", "restarts": p.restarts,
                                       "time": now, **({} if p.exit_code is None else {"exitCode": p.exit_code})}
        message = (f"player {p.name} restarted ({p.ended() or 'exited'}; {p.restarts} restarts)"
                   + ("; the kernel killed it at its memory limit: raise players.resources.limits.memory" if oom
                      else ""))
        d.events.append(("Warning", "PlayerOOMKilled" if oom else "PlayerRestarted", message))
    if live != seen and (live or seen):  # a replaced pod starts again from 0: the total only grows
        added = sum(max(0, n - seen.get(name, 0)) for name, n in live.items())
        status["playerPods"] = live
        status["playerRestarts"] = int(status.get("playerRestarts") or 0) + added


def _watch_group(d: Decision, spec: dict[str, Any], pods: list[JobPod], now: str) -> None:
    """Until every rank has been Ready, wait (up to the start-up deadline); after that, a lost rank is a gang
    failure. A trainer that can never start fails the job at once, formed or not."""
    status, old = d.status, dict(d.status)
    live = {p.name: {"uid": p.uid, "restarts": p.restarts}
            for p in pods if not p.deleting and 0 <= p.ordinal < d.trainers}
    broken = cannot_start(pods)
    if broken is not None:
        why = broken.message.strip() or f"{broken.name} exited with code {broken.exit_code}"
        status.update(phase=FAILED, reason="TrainerCannotStart", completionTime=now, trainerPods={},
                      message=f"{broken.name}: {why}"[:1024])
        d.stopped = True
        d.events.append(("Warning", "TrainerCannotStart", status["message"]))
        return
    if not old.get("groupFormed", True):
        ready = ready_count(pods, d.trainers)
        gated = [p.name for p in pods if p.gated and not p.deleting]
        if gated:  # queued (Kueue admits the pods by removing its gate): no deadline runs until admission
            status.setdefault("queuedSince", now)
            status.update(trainerPods=live, reason="Queued",
                          message=f"waiting for admission: {len(gated)} trainer pods held by scheduling gates")
            return
        runpolicy.admitted(status, now)
        if ready >= d.trainers:  # the group has formed: training runs (a short job may end before a poll)
            status.update(groupFormed=True, trainerPods=live, phase=RUNNING, reason="GroupFormed",
                          message=f"all {d.trainers} trainers ready")
            d.events.append(("Normal", "Running", status["message"]))
            return
        waited = seconds_between(str(status.get("groupStartTime") or now), now)
        limit = float(spec["trainers"]["startupTimeoutSeconds"])
        if waited > limit:
            status.update(phase=FAILED, reason="StartupTimeout", completionTime=now, trainerPods={},
                          message=f"only {ready}/{d.trainers} trainers ready after {waited:.0f} s "
                                  f"(startupTimeoutSeconds {limit:g})")
            d.stopped = True
            d.events.append(("Warning", "StartupTimeout", status["message"]))
            return
        status.update(trainerPods=live, reason="WaitingForTrainers",
                      message=f"waiting for trainers ({ready}/{d.trainers} ready)")
        return
    lost = lost_trainers(old.get("trainerPods") or {}, pods)
    restarts = int(old.get("gangRestarts") or 0) + (1 if lost else 0)
    policy = jobspec.run_policy(spec)
    if lost and restarts > policy.backoff_limit:
        status.update(phase=FAILED, reason="TooManyGangRestarts", completionTime=now, trainerPods={},
                      message=f"{'; '.join(lost)}: gang restart {restarts} exceeds {policy.backoff_field} "
                              f"{policy.backoff_limit}")
        d.stopped = True
        d.events.append(("Warning", "Failed", status["message"]))
    elif lost:
        status.update(phase=RESTARTING, reason="GangRestart", gangRestarts=restarts, trainerPods={},
                      groupFormed=False, groupStartTime=now,
                      message=f"{'; '.join(lost)}: restarting all trainers from the checkpoint ({restarts})")
        d.restart_gang = True
        d.events.append(("Warning", "GangRestart", status["message"]))
    else:
        status["trainerPods"] = live
