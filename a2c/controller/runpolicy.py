"""The run policy's bookkeeping in status: suspend and resume (`spec.suspend`), and the time a job has been
active, which activeDeadlineSeconds is measured against (time suspended or queued left out).

Data flow: `status.decide` calls `suspend` / `resume` when spec.suspend changes and `active_seconds` against
the deadline; they edit the `Decision` it is making.
"""

from __future__ import annotations

from typing import Any

from a2c.controller.jobstate import PENDING, SUSPENDED, Decision, seconds_between


def active_seconds(status: dict[str, Any], now: str) -> float:
    """How long the job has run: since its first start, less the time it spent suspended (a job created
    suspended starts when resumed). activeDeadlineSeconds is measured against this."""
    if not status.get("startTime"):
        return 0.0
    queued = seconds_between(str(status["queuedSince"]), now) if status.get("queuedSince") else 0.0
    return seconds_between(str(status["startTime"]), now) - float(status.get("suspendedSeconds") or 0) - queued


def admitted(status: dict[str, Any], now: str) -> None:
    """The trainers are no longer held by scheduling gates: the time queued counts as suspended (as Kueue's
    suspend of a Job does), and the start-up deadline starts now."""
    since = status.pop("queuedSince", None)
    if since:
        status["suspendedSeconds"] = int(status.get("suspendedSeconds") or 0) + max(
            0, round(seconds_between(str(since), now)))
        status["groupStartTime"] = now


def suspend(d: Decision, want: int, players: int, template: str, now: str) -> None:
    """spec.suspend: both StatefulSets at zero (their pods get SIGTERM; trainers write a final checkpoint), the
    children, checkpoints and status kept. Not a gang restart: nothing is counted, and no lost rank is looked for
    (`trainerPods` empty, the group unformed) until the job resumes."""
    status, old = d.status, dict(d.status)
    d.stopped = True
    d.trainers = int(old.get("trainerReplicas") or want)
    if old.get("phase") == SUSPENDED:
        return
    admitted(status, now)  # suspended while queued: the time queued so far counts once, as suspended
    if "trainerReplicas" not in old:  # created suspended: its children exist, at zero; nothing has started
        status.update(trainerReplicas=want, playerReplicas=players, gangRestarts=0, trainerTemplate=template)
        message = "created suspended: nothing runs until spec.suspend is false"
        d.events.append(("Normal", "Created", f"created {want} trainers and {players} players, suspended"))
    else:
        message = "suspended: pods removed (trainers write a final checkpoint), checkpoints and status kept"
        d.events.append(("Normal", "Suspended", message))
    status.update(phase=SUSPENDED, reason="Suspended", message=message, trainerPods={}, groupFormed=False,
                  suspendTime=now)


def resume(d: Decision, want: int, players: int, template: str, now: str) -> None:
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
