"""Reconcile one A2CJob: observe, decide, apply, act, report. Thin: the logic is in `status` and `resources`.

Data flow: `loop` calls `Reconciler.reconcile(namespace, name)` on every watch event and on every resync.
It reads the job and its trainer pods (`kube`), asks trainer 0 for progress (`probe`), lets
`status.decide` choose, applies the children `resources.render` gives for that decision, deletes the
trainer pods when the gang must restart (their StatefulSet recreates them, all at once: Parallel), emits
Events and writes the status subresource. Running it twice in a row changes nothing the second time.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

import grpc

from a2c import metrics
from a2c.controller import kube, probe, resources, status
from a2c.controller import spec as jobspec

log = logging.getLogger(__name__)
PHASES = (status.PENDING, status.RUNNING, status.RESTARTING, status.SUCCEEDED, status.FAILED)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: UP017 (py3.10)


def trainer_pods(items: list[dict[str, Any]]) -> list[status.TrainerPod]:
    pods = []
    for pod in items:
        meta, st = pod["metadata"], pod.get("status") or {}
        containers = st.get("containerStatuses") or []
        pods.append(status.TrainerPod(
            name=meta["name"], uid=meta.get("uid", ""), deleting=bool(meta.get("deletionTimestamp")),
            restarts=sum(int(c.get("restartCount", 0)) for c in containers),
            ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []),
        ))
    return sorted(pods, key=lambda p: p.ordinal)


class Reconciler:
    """Everything one reconcile needs; `address` picks the trainer 0 to poll (injectable for tests)."""

    def __init__(self, api: kube.Kube, address: Callable[[dict[str, Any]], str] | None = None,
                 probe_timeout_s: float = 2.0, clock: Callable[[], str] = now_iso,
                 tls: grpc.ChannelCredentials | None = None) -> None:
        self.kube = api
        self.tls = tls  # for jobs with spec.tls (the controller reads no Secrets: it is given its own files)
        self.address = address or (lambda job: probe.address(job["metadata"]["name"], job["metadata"]["namespace"],
                                                             jobspec.GRPC_PORT))
        self.probe_timeout_s = probe_timeout_s
        self.clock = clock

    def reconcile(self, namespace: str, name: str) -> str:
        """One level-triggered pass over one job; returns what happened (for logs, metrics and tests)."""
        metrics.bind(name, "controller", 0)
        try:
            job = self.kube.get(jobspec.API_VERSION, jobspec.KIND, namespace, name)
        except kube.NotFoundError:
            return "gone"  # deleted: its children go with it (ownerReferences), nothing to do
        job["metadata"].setdefault("namespace", namespace)
        try:
            result = self._reconcile(job)
        except Exception:
            metrics.labels(metrics.CONTROLLER_ERRORS).inc()
            metrics.labels(metrics.CONTROLLER_RECONCILES, result="error").inc()
            raise
        metrics.labels(metrics.CONTROLLER_RECONCILES, result=result).inc()
        return result

    def _reconcile(self, job: dict[str, Any]) -> str:
        meta, now = job["metadata"], self.clock()
        try:
            jobspec.validate_name(meta["name"])
            jobspec.trainer_config(meta["name"], meta["namespace"], jobspec.with_defaults(job.get("spec")))
        except (ValueError, KeyError, TypeError) as exc:
            return self._invalid(job, str(exc), now)
        selector = resources.selector(meta["name"], "trainer")
        pods = trainer_pods(self.kube.list("v1", "Pod", meta["namespace"], selector))
        terminal = (job.get("status") or {}).get("phase") in status.TERMINAL
        report = None if terminal else self._probe(job)
        decision = status.decide(job, pods, report, now, resources.trainer_template_hash(job))

        changed = [self.kube.apply(obj) for obj in resources.render(job, decision.stopped, decision.trainers)]
        if decision.restart_gang:
            for pod in pods:  # the StatefulSet recreates them together; they resume from the checkpoint
                self.kube.delete("v1", "Pod", meta["namespace"], pod.name)
        for type_, reason, message in decision.events:
            self.kube.event(job, type_, reason, message, now)
        status_changed = decision.status != (job.get("status") or {})
        if status_changed:
            self.kube.patch_status(job, decision.status)
        phase = decision.status.get("phase", "")
        for p in PHASES:
            metrics.labels(metrics.CONTROLLER_JOBS, phase=p).set(1 if p == phase else 0)
        if decision.restart_gang:
            return "restarted"
        return "changed" if status_changed or any(c != "unchanged" for c in changed) else "unchanged"

    def _probe(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """Trainer 0's report; a job with spec.tls is asked over TLS, or not at all without credentials."""
        if not jobspec.with_defaults(job.get("spec"))["tls"]["secretName"]:
            return probe.trainer_status(self.address(job), self.probe_timeout_s)
        if self.tls is None:
            log.warning("job %s: its trainers speak TLS, but the controller has no --tls-ca: no progress is read",
                        job["metadata"]["name"])
            return None
        return probe.trainer_status(self.address(job), self.probe_timeout_s, self.tls)

    def _invalid(self, job: dict[str, Any], why: str, now: str) -> str:
        old = job.get("status") or {}
        if old.get("phase") == status.FAILED and old.get("reason") == "InvalidSpec":
            return "unchanged"
        new = dict(old, phase=status.FAILED, reason="InvalidSpec", message=why,
                   observedGeneration=int(job["metadata"].get("generation") or 0))
        conds = list(old.get("conditions") or [])
        status.set_condition(conds, "Failed", True, "InvalidSpec", why, now, new["observedGeneration"])
        new["conditions"] = conds
        self.kube.event(job, "Warning", "InvalidSpec", why, now)
        self.kube.patch_status(job, new)
        return "invalid"
