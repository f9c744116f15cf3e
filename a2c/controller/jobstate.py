"""A job as the controller sees it and decides it: its phases, its pods as their status shows them (`JobPod`),
what a reconcile is to do (`Decision`), and the conditions status carries (`set_condition`).

Data flow: `handlers` turns the pods the API lists into `JobPod`s -> `status.decide` (with `runpolicy` for
suspend and deadlines) reads them and returns a `Decision` -> `handlers` acts on it and writes its status.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from a2c import termination

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


def seconds_between(start: str, now: str) -> float:
    parse = datetime.datetime.fromisoformat
    return (parse(now.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def cannot_start(pods: list[JobPod]) -> JobPod | None:
    """A trainer whose last run ended with EXIT_CANNOT_START: its configuration can never run."""
    return next((p for p in pods if p.exit_code == termination.EXIT_CANNOT_START), None)


def ready_count(pods: list[JobPod], trainers: int) -> int:
    return len([p for p in pods if p.ready and not p.deleting and 0 <= p.ordinal < trainers])
