"""Reconcile one A2CJob: observe, decide, apply, act, report. Thin: the logic is in `status` and `resources`.

Data flow: `loop` calls `Reconciler.reconcile(namespace, name, poll)` on watch events that matter
(poll=False) and on every resync (poll=True). It reads the job and its trainer pods (`kube`), asks trainer 0
for progress (`probe`, on resyncs only), lets `status.decide` choose, applies the children
`resources.render` gives for that decision, deletes the trainer pods when the gang must restart (their
StatefulSet recreates them, all at once: Parallel), writes the status subresource, then emits the Events.
Running it twice in a row changes nothing the second time. A finished job whose runPolicy.ttlSecondsAfterFinished
has passed is deleted here; one with a deadline or a TTL ahead is put in `due`, for the loop to come back then.
The operator's job counters move here, at the transitions the status write records (`_count`).

What fails how: a spec the controller cannot run (`validation.InvalidSpecError`, from `validation.checked_spec`)
fails the job, with the reason in its status and an Event; anything else that goes wrong (the API server refuses
us, a bug of ours) raises, and the loop logs it with its traceback and retries the job with back-off: the user's
job is not marked Failed for our mistake. The spec's defaults are filled once per pass and handed down.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from a2c.controller import jobstate, kube, probe, resources, status, validation
from a2c.controller import spec as jobspec
from a2c.observe import metrics

log = logging.getLogger(__name__)
PHASES = (jobstate.PENDING, jobstate.RUNNING, jobstate.RESTARTING, jobstate.SUSPENDED, jobstate.SUCCEEDED,
          jobstate.FAILED)
Key = tuple[str, str]


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: UP017 (py3.10)


def _last_termination(containers: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest `terminated` record of the pod's containers (the current state, else lastState)."""
    for c in containers:
        for where in ("state", "lastState"):
            terminated = (c.get(where) or {}).get("terminated")
            if terminated:
                return dict(terminated)
    return {}


def job_pods(items: list[dict[str, Any]]) -> list[jobstate.JobPod]:
    pods = []
    for pod in items:
        meta, st = pod["metadata"], pod.get("status") or {}
        containers = st.get("containerStatuses") or []
        ended = _last_termination(containers)
        pods.append(jobstate.JobPod(
            name=meta["name"], uid=meta.get("uid", ""), deleting=bool(meta.get("deletionTimestamp")),
            restarts=sum(int(c.get("restartCount", 0)) for c in containers),
            ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []),
            exit_code=int(ended["exitCode"]) if "exitCode" in ended else None,
            message=str(ended.get("message") or ""), reason=str(ended.get("reason") or ""),
            gated=bool((pod.get("spec") or {}).get("schedulingGates")),
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
        # (namespace, name) -> seconds after which to reconcile the job again whatever happens (a deadline, a
        # TTL); the loop takes it after each reconcile.
        self.due: dict[Key, float] = {}

    def reconcile(self, namespace: str, name: str, poll: bool = True) -> str:
        """One level-triggered pass over one job; returns what happened (for logs, metrics and tests).

        `poll`: ask trainer 0 for progress (the periodic resync does; a watch event does not, so our own
        status writes, which come back as watch events, cause no further writes). The process's metric labels
        are bound once, by `a2c controller`; the jobs-by-phase gauge names each job itself."""
        started = time.perf_counter()
        try:
            try:
                job = self.kube.get(jobspec.API_VERSION, jobspec.KIND, namespace, name)
            except kube.NotFoundError:
                _forget(name)
                return "gone"  # deleted: its children go with it (ownerReferences), nothing to do
            job["metadata"].setdefault("namespace", namespace)
            try:
                result = self._reconcile(job, poll)
            except Exception:
                metrics.labels(metrics.CONTROLLER_ERRORS).inc()
                metrics.labels(metrics.CONTROLLER_RECONCILES, result="error").inc()
                raise
            metrics.labels(metrics.CONTROLLER_RECONCILES, result=result).inc()
            return result
        finally:
            metrics.labels(metrics.CONTROLLER_RECONCILE_SECONDS).observe(time.perf_counter() - started)

    def _reconcile(self, job: dict[str, Any], poll: bool) -> str:
        meta, now = job["metadata"], self.clock()
        try:
            spec = validation.checked_spec(job)  # the defaults, filled once for this pass
        except validation.InvalidSpecError as exc:
            return self._invalid(job, str(exc), now)
        if meta.get("deletionTimestamp"):
            # Being deleted (a foreground delete waits for the children to go): create, patch, restart nothing.
            return "deleting"
        old = job.get("status") or {}
        if self._expired(job, old, jobspec.run_policy(spec).ttl_after_finished_s, now):
            return "expired"
        pods = job_pods(self._own_pods(job, "trainer"))
        terminal = old.get("phase") in jobstate.TERMINAL
        # Nothing runs (or what runs is going) in a finished or suspended job: its players and trainer 0 are not
        # asked about.
        quiet = terminal or old.get("phase") == jobstate.SUSPENDED or jobspec.run_policy(spec).suspend
        players = [] if quiet else job_pods(self._own_pods(job, "player"))  # their restarts, in status
        report = self._probe(job, spec) if poll and not quiet else None
        decision = status.decide(job, pods, report, now, resources.trainer_template_hash(job, spec), polled=poll,
                                 player_pods=players, spec=spec)

        children = resources.render(job, decision.stopped, decision.trainers, spec=spec)
        changed = []
        for obj in children:
            try:
                changed.append(self.kube.apply(obj))
            except kube.NotFoundError:
                if obj["kind"] != "PodGroup":
                    raise
                # The cluster does not serve the gang scheduler's kind: the user's choice cannot run here.
                return self._invalid(job, f"spec.schedulingPolicy.scheduler is {spec['schedulingPolicy']['scheduler']}"
                                          f", but this cluster serves no {obj['apiVersion']} PodGroup: install that "
                                          "scheduler, or create the job again with another", now)
        if "replacing" in changed:
            # An earlier job's namesake child is still going: write nothing yet, the loop comes back soon.
            return "waiting"
        if decision.restart_gang:
            for pod in pods:  # the StatefulSet recreates them together; they resume from the checkpoint
                self.kube.delete("v1", "Pod", meta["namespace"], pod.name)
        status_changed = decision.status != old
        if status_changed:
            self.kube.patch_status(job, decision.status)
            _count(meta["namespace"], old, decision.status)
        if decision.requeue_s is not None:
            self.due[(meta["namespace"], meta["name"])] = decision.requeue_s
        # Events only once the status they announce is written: a refused write (retried at the next pass)
        # must not post the same Event again and again.
        for type_, reason, message in decision.events:
            self.kube.event(job, type_, reason, message, now)
        phase = decision.status.get("phase", "")
        for p in PHASES:
            _jobs_gauge(meta["name"], p).set(1 if p == phase else 0)
        if self._expired(job, decision.status, jobspec.run_policy(spec).ttl_after_finished_s, now):
            return "expired"  # (ttlSecondsAfterFinished 0: as soon as it finished; else it is due back then)
        if decision.restart_gang:
            return "restarted"
        return "changed" if status_changed or any(c != "unchanged" for c in changed) else "unchanged"

    def _own_pods(self, job: dict[str, Any], component: str) -> list[dict[str, Any]]:
        """The pods of this job's own `component` ("trainer", "player") StatefulSet. An earlier job of the same
        name (`helm upgrade`) leaves pods with the same labels until the garbage collector removes them: they are
        not this job's. Pods with no controller are counted (a StatefulSet adopts them)."""
        meta = job["metadata"]
        items = self.kube.list("v1", "Pod", meta["namespace"], resources.selector(meta["name"], component))
        try:
            sts = self.kube.get("apps/v1", "StatefulSet", meta["namespace"], f"{meta['name']}-{component}")
        except kube.NotFoundError:
            sts = None
        ours = sts is not None and (kube.controller_of(sts) or {}).get("uid") == meta.get("uid")
        sts_uid = sts["metadata"]["uid"] if sts is not None and ours else None

        def owned(pod: dict[str, Any]) -> bool:
            ref = kube.controller_of(pod)
            return ref is None or (sts_uid is not None and ref.get("uid") == sts_uid)
        return [p for p in items if owned(p)]

    def _probe(self, job: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any] | None:
        """Trainer 0's report; a job with spec.tls is asked over TLS, or not at all without credentials."""
        if not spec["tls"]["secretName"]:
            return probe.trainer_status(self.address(job), self.probe_timeout_s)
        if self.tls is None:
            log.warning("job %s: its trainers speak TLS, but the controller has no --tls-ca: no progress is read",
                        job["metadata"]["name"])
            return None
        return probe.trainer_status(self.address(job), self.probe_timeout_s, self.tls)

    def _invalid(self, job: dict[str, Any], why: str, now: str) -> str:
        old = job.get("status") or {}
        ttl = _raw_ttl(job)
        if old.get("phase") == jobstate.FAILED and old.get("reason") == "InvalidSpec":
            return "expired" if self._expired(job, old, ttl, now) else "unchanged"
        new = status.invalid(job, why, now)
        self.kube.patch_status(job, new)
        _count(job["metadata"]["namespace"], old, new)
        self.kube.event(job, "Warning", "InvalidSpec", why, now)
        self._expired(job, new, ttl, now)  # (schedules the TTL; a job only just failed has not expired)
        return "invalid"

    def _expired(self, job: dict[str, Any], st: dict[str, Any], ttl: int | None, now: str) -> bool:
        """runPolicy.ttlSecondsAfterFinished: a job that finished (Succeeded or Failed) that long ago is deleted,
        and its children with it (their ownerReferences); its checkpoint PVCs, owned by nothing, stay. One that
        has not expired yet is due back at its expiry. The delete names the job's uid: a namesake created since
        is not touched."""
        finished = finished_at(st)
        if ttl is None or finished is None:
            return False
        meta = job["metadata"]
        left = ttl - jobstate.seconds_between(finished, now)
        if left > 0:
            self.due[(meta["namespace"], meta["name"])] = left
            return False
        log.info("job %s/%s finished at %s: deleting it (ttlSecondsAfterFinished %d)", meta["namespace"],
                 meta["name"], finished, ttl)
        self.kube.delete(jobspec.API_VERSION, jobspec.KIND, meta["namespace"], meta["name"], uid=meta.get("uid"))
        _forget(meta["name"])
        return True


def finished_at(st: dict[str, Any]) -> str | None:
    """When a finished job finished: its completionTime, else when its Succeeded or Failed condition turned True
    (an InvalidSpec failure has no completionTime); None for a job that has not finished."""
    if st.get("phase") not in jobstate.TERMINAL:
        return None
    if st.get("completionTime"):
        return str(st["completionTime"])
    return next((str(c["lastTransitionTime"]) for c in st.get("conditions") or []
                 if c.get("type") in ("Succeeded", "Failed") and c.get("status") == "True"), None)


def _raw_ttl(job: dict[str, Any]) -> int | None:
    """spec.runPolicy.ttlSecondsAfterFinished of a job whose spec is invalid otherwise, where it is readable."""
    spec = job.get("spec")
    policy = spec.get("runPolicy") if isinstance(spec, dict) else None
    ttl = policy.get("ttlSecondsAfterFinished") if isinstance(policy, dict) else None
    return ttl if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl >= 0 else None


def _count(namespace: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    """The operator's job counters (as the training operator exports them), each at its transition, once: the
    status it is read from has just been written, and the next pass sees the same phase on both sides."""
    if "trainerReplicas" not in old and "trainerReplicas" in new:
        metrics.labels(metrics.CONTROLLER_JOBS_CREATED, namespace=namespace).inc()
    phase = new.get("phase")
    if phase != old.get("phase") and phase == jobstate.SUCCEEDED:
        metrics.labels(metrics.CONTROLLER_JOBS_SUCCEEDED, namespace=namespace).inc()
    if phase != old.get("phase") and phase == jobstate.FAILED:
        metrics.labels(metrics.CONTROLLER_JOBS_FAILED, namespace=namespace, reason=str(new.get("reason") or "")).inc()
    restarts = int(new.get("gangRestarts") or 0) - int(old.get("gangRestarts") or 0)
    if restarts > 0:  # a gang restart after a lost rank; a re-form for a spec change or a suspend is not one
        metrics.labels(metrics.CONTROLLER_JOBS_RESTARTED, namespace=namespace).inc(restarts)


def _jobs_gauge(job: str, phase: str) -> Any:
    """One series per job (1 at its phase): `sum by (phase)` counts the jobs in each phase."""
    return metrics.CONTROLLER_JOBS.labels(a2c_job=job, role="controller", rank="0", phase=phase)


def _forget(job: str) -> None:
    """A deleted job leaves the jobs-by-phase gauge."""
    for p in PHASES:
        metrics.CONTROLLER_JOBS.remove(job, "controller", "0", p)  # (one it never had is no error)
