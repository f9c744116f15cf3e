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

The run policy (`spec.run_policy`): a suspended job is scaled to zero and watched for nothing (`_suspend`), a
resumed one starts a new group (`_resume`); activeDeadlineSeconds fails a job active that long (time suspended
left out); backoffLimit, where given, is the gang restart limit instead of maxGangRestarts.
"""

from __future__ import annotations

import copy
import datetime
import math
from dataclasses import dataclass, field
from typing import Any

from a2c import termination
from a2c.controller import spec as jobspec

PENDING, RUNNING, RESTARTING, SUCCEEDED, FAILED = "Pending", "Running", "Restarting", "Succeeded", "Failed"
SUSPENDED = "Suspended"
TERMINAL = (SUCCEEDED, FAILED)


@dataclass(frozen=True)
class JobPod:
    """A trainer or player pod of the job, as its status shows it."""

    name: str
    uid: str
    restarts: int
    ready: bool
    deleting: bool = False
    exit_code: int | None = None  # of the container's last termination (state or lastState), if any
    message: str = ""  # that termination's message (terminationMessagePath or the log tail)
    reason: str = ""  # that termination's reason as the kubelet gives it: OOMKilled, Error, Completed
    gated: bool = False  # held by scheduling gates (Kueue's, until it admits the job): not scheduled yet

    def ended(self) -> str:
        """How its container last ended, for a message: `OOMKilled, exit 137`."""
        return ", ".join(x for x in (self.reason, "" if self.exit_code is None else f"exit {self.exit_code}") if x)

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
    requeue_s: float | None = None  # come back to this job after this long (its deadline), whatever happens


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


def lost_trainers(seen: dict[str, dict[str, Any]], pods: list[JobPod]) -> list[str]:
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
            why.append(f"{name} restarted" + (f" ({pod.ended()})" if pod.ended() else ""))
    return why


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


def seconds_between(start: str, now: str) -> float:
    parse = datetime.datetime.fromisoformat
    return (parse(now.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def cannot_start(pods: list[JobPod]) -> JobPod | None:
    """A trainer whose last run ended with EXIT_CANNOT_START: its configuration can never run."""
    return next((p for p in pods if p.exit_code == termination.EXIT_CANNOT_START), None)


def _ready(pods: list[JobPod], trainers: int) -> int:
    return len([p for p in pods if p.ready and not p.deleting and 0 <= p.ordinal < trainers])


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
    counted = f"{_ready(pods, d.trainers)}/{d.trainers} trainers ready"
    if phase in TERMINAL:
        set_condition(conds, "Ready", False, f"Job{phase}", f"the job has {phase.lower()}: its trainers are stopped",
                      now, gen)
    elif phase == SUSPENDED:
        set_condition(conds, "Ready", False, "JobSuspended", "the job is suspended: no trainer runs", now, gen)
    elif phase == RUNNING and answering and _ready(pods, d.trainers) >= d.trainers:
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
        _suspend(d, want, players, template, now)
        _conditions(d, pods, None, polled, now, gen)
        return d

    if "trainerReplicas" not in old:
        status.update(phase=PENDING, reason="WaitingForTrainers", message=f"waiting for trainers (0/{want} ready)",
                      startTime=now, trainerReplicas=want, playerReplicas=players, gangRestarts=0, trainerPods={},
                      trainerTemplate=template, groupFormed=False, groupStartTime=now)
        d.trainers = want
        d.events.append(("Normal", "Created", f"created {want} trainers and {players} players"))
    elif old.get("phase") == SUSPENDED:
        _resume(d, want, players, template, now)
        report, final = None, False  # whatever answers now is not the resumed group
    elif not final and _active_seconds(status, now) >= (policy.active_deadline_s or math.inf):
        status.update(phase=FAILED, reason="DeadlineExceeded", completionTime=now, trainerPods={},
                      message=f"the job was active for {_active_seconds(status, now):.0f} s, over its "
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
            d.requeue_s = max(0.0, policy.active_deadline_s - _active_seconds(status, now))
    _conditions(d, pods, report, polled, now, gen)
    return d


def _active_seconds(status: dict[str, Any], now: str) -> float:
    """How long the job has run: since its first start, less the time it spent suspended (a job created
    suspended starts when resumed). activeDeadlineSeconds is measured against this."""
    if not status.get("startTime"):
        return 0.0
    queued = seconds_between(str(status["queuedSince"]), now) if status.get("queuedSince") else 0.0
    return seconds_between(str(status["startTime"]), now) - float(status.get("suspendedSeconds") or 0) - queued


def _admitted(status: dict[str, Any], now: str) -> None:
    """The trainers are no longer held by scheduling gates: the time queued counts as suspended (as Kueue's
    suspend of a Job does), and the start-up deadline starts now."""
    since = status.pop("queuedSince", None)
    if since:
        status["suspendedSeconds"] = int(status.get("suspendedSeconds") or 0) + max(
            0, round(seconds_between(str(since), now)))
        status["groupStartTime"] = now


def _suspend(d: Decision, want: int, players: int, template: str, now: str) -> None:
    """spec.suspend: both StatefulSets at zero (their pods get SIGTERM; trainers write a final checkpoint), the
    children, checkpoints and status kept. Not a gang restart: nothing is counted, and no lost rank is looked for
    (`trainerPods` empty, the group unformed) until the job resumes."""
    status, old = d.status, dict(d.status)
    d.stopped = True
    d.trainers = int(old.get("trainerReplicas") or want)
    if old.get("phase") == SUSPENDED:
        return
    _admitted(status, now)  # suspended while queued: the time queued so far counts once, as suspended
    if "trainerReplicas" not in old:  # created suspended: its children exist, at zero; nothing has started
        status.update(trainerReplicas=want, playerReplicas=players, gangRestarts=0, trainerTemplate=template)
        message = "created suspended: nothing runs until spec.suspend is false"
        d.events.append(("Normal", "Created", f"created {want} trainers and {players} players, suspended"))
    else:
        message = "suspended: pods removed (trainers write a final checkpoint), checkpoints and status kept"
        d.events.append(("Normal", "Suspended", message))
    status.update(phase=SUSPENDED, reason="Suspended", message=message, trainerPods={}, groupFormed=False,
                  suspendTime=now)


def _resume(d: Decision, want: int, players: int, template: str, now: str) -> None:
    """spec.suspend back to false: a new group from the newest checkpoint, as at creation (the start-up deadline
    counts from now; `resumedFrom` is written from trainer 0's first report once the group has formed). A job
    created suspended starts here: no checkpoint, no resumeTime, and its startTime is now."""
    status = d.status
    started = "startTime" in status
    if started:  # time suspended does not count towards activeDeadlineSeconds; there is a checkpoint to resume from
        status["suspendedSeconds"] = int(status.get("suspendedSeconds") or 0) + max(
            0, round(seconds_between(str(status.get("suspendTime") or now), now)))
        status.pop("resumedFrom", None)
        status["resumeTime"] = now
    status.pop("suspendTime", None)
    status.setdefault("startTime", now)
    status.update(phase=PENDING, reason="Resuming", trainerReplicas=want, playerReplicas=players,
                  trainerTemplate=template, trainerPods={}, groupFormed=False, groupStartTime=now,
                  message=("resuming from the newest checkpoint" if started else "starting")
                  + f": waiting for trainers (0/{want} ready)")
    d.trainers = want
    d.events.append(("Normal", "Resumed", "resumed: a new trainer group starts from the newest checkpoint"))


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
        ready = _ready(pods, d.trainers)
        gated = [p.name for p in pods if p.gated and not p.deleting]
        if gated:  # queued (Kueue admits the pods by removing its gate): no deadline runs until admission
            status.setdefault("queuedSince", now)
            status.update(trainerPods=live, reason="Queued",
                          message=f"waiting for admission: {len(gated)} trainer pods held by scheduling gates")
            return
        _admitted(status, now)
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
