"""The operator's main loop: level-triggered reconciles fed by watches and a periodic resync.

Data flow: two watch threads (A2CJobs; pods labelled `app.kubernetes.io/managed-by=a2c-controller`) list
once, then watch from the list's resourceVersion (with bookmarks, resuming where they left off when a stream
ends, relisting on 410 Gone) and turn the events that matter into job keys on a queue; a resync every
`resync_s` lists all jobs and reconciles each with `poll=True` (the only time trainer 0's progress is asked
for); one worker reconciles the keys one at a time (`handlers.Reconciler`), so a job is never reconciled
twice at once. A failed reconcile is logged and retried after a back-off (1 s, doubling up to `resync_s`); one
that waits for an earlier job's children to go (`waiting`) comes back after `requeue_s`: no watch tells the
controller when the garbage collector is done with them.

What does not matter, and so causes no reconcile: a job event whose generation is already observed in its
status (our own status writes come back as such events; reconciling them would write again, forever),
bookmarks. `heartbeat` is the time the worker last went round; /healthz fails when it is stale.

A watch that ends as watches do (the stream's timeout, a dropped connection, 410 Gone) is resumed quietly; one
the API server refuses (an RBAC 403, a 5xx) or that cannot reach it is logged at WARNING and retried with
back-off (0.5 s doubling up to `resync_s`), so a controller that sees nothing says why.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import urllib3
from kubernetes.client import ApiException

from a2c.controller import handlers
from a2c.controller import spec as jobspec
from a2c.observe import metrics

log = logging.getLogger(__name__)
Key = tuple[str, str]
GONE = 410
MIN_DUE_S = 0.5  # the soonest a job is due back after a pass (status times are whole seconds: never a spin)


class Expired(Exception):
    """The watch's resourceVersion is older than the server keeps: list again."""


class Loop:
    def __init__(self, reconciler: handlers.Reconciler, namespace: str | None = None, resync_s: float = 10.0,
                 requeue_s: float = 1.0) -> None:
        self.reconciler = reconciler
        self.kube = reconciler.kube
        self.namespace = namespace
        self.resync_s, self.requeue_s = resync_s, requeue_s
        self.watch_retry_s = 0.5  # the first wait before watching again after a failure (doubling to resync_s)
        self._later: dict[Key, float] = {}  # key -> monotonic time to reconcile it again
        self._failures: dict[Key, int] = {}
        self.stop = threading.Event()
        self.heartbeat = time.monotonic()
        self._pending: dict[Key, bool] = {}  # key -> poll trainer 0 when reconciling it
        self._wake = threading.Condition()
        self._streams: list[Any] = []

    def shutdown(self) -> None:
        """Stop the loop and close the open watch streams (so their threads and connections end now)."""
        self.stop.set()
        with self._wake:
            self._wake.notify()
        for stream in list(self._streams):
            try:
                stream.shutdown() if hasattr(stream, "shutdown") else stream.close()
            except Exception as exc:
                log.debug("closing a watch stream: %s", exc)

    def enqueue(self, key: Key, poll: bool = False) -> None:
        with self._wake:
            self._pending[key] = self._pending.get(key, False) or poll
            self._depth()
            self._wake.notify()

    def _depth(self) -> None:
        """The queue-depth gauge: jobs due for a reconcile now, or backing off after a failed one (a job only due
        back at its deadline or TTL is not waiting)."""
        metrics.labels(metrics.CONTROLLER_QUEUE_DEPTH).set(len(self._pending.keys() | self._failures.keys()))

    def healthy(self, max_age_s: float) -> bool:
        """The worker went round within `max_age_s` (it does at least every resync_s when nothing happens)."""
        return time.monotonic() - self.heartbeat <= max_age_s

    def _watch(self, api_version: str, kind: str, key_of: Any, selector: str = "") -> None:
        labels = dict(pair.split("=", 1) for pair in selector.split(",")) if selector else {}
        version, failures = "", 0
        while not self.stop.is_set():
            try:
                if not version:  # (re)list: every object counts as changed, then watch from here
                    items, version = self.kube.list_at(api_version, kind, self.namespace, labels)
                    for obj in items:
                        self._offer(obj, key_of, "ADDED", kind)
                events = self.kube.watch(api_version, kind, self.namespace, timeout_s=max(90.0, 3 * self.resync_s),
                                         selector=selector, opened=self._streams.append, resource_version=version)
                for event in events:
                    version = self._handle(event, key_of, kind) or version
                    if self.stop.is_set():
                        return
                failures = 0  # the stream ended as streams do (the server's timeoutSeconds): watch on
            except Expired:
                log.info("watch %s: resourceVersion %s expired; listing again", kind, version)
                version = ""
            except Exception as exc:
                if self.stop.is_set():
                    return  # shutdown() closed the stream
                if quiet(exc):  # a quiet stream timed out, or a connection dropped: resume from `version`
                    log.debug("watch %s ended: %s", kind, exc)
                    failures = 0
                else:  # refused (an RBAC 403, a 5xx), unreachable, or nonsense: say so, and back off
                    failures += 1
                    log.warning("watch %s failed (%d in a row; retrying in %.1f s): %s", kind, failures,
                                backoff(failures, self.watch_retry_s, self.resync_s), describe(exc))
                self.stop.wait(backoff(failures, self.watch_retry_s, self.resync_s))
            finally:
                self._streams[:] = [s for s in self._streams if not getattr(s, "closed", False)]

    def _handle(self, event: dict[str, Any], key_of: Any, kind: str) -> str:
        """Act on one watch event; returns the resourceVersion it brings ('' if none)."""
        obj = event.get("object") or {}
        if event.get("type") == "ERROR":
            if int(obj.get("code") or 0) == GONE:
                raise Expired(obj.get("message", ""))
            raise RuntimeError(f"watch error: {obj.get('message', obj)}")
        if event.get("type") != "BOOKMARK":
            self._offer(obj, key_of, str(event.get("type")), kind)
        return str((obj.get("metadata") or {}).get("resourceVersion") or "")

    def _offer(self, obj: dict[str, Any], key_of: Any, type_: str, kind: str) -> None:
        if type_ == "MODIFIED" and kind == jobspec.KIND and _observed(obj):
            return  # a status write (ours) or a metadata change: nothing to act on
        key = key_of(obj)
        if key is not None:
            self.enqueue(key)

    def _resync(self) -> None:
        try:
            for job in self.kube.list(jobspec.API_VERSION, jobspec.KIND, self.namespace, {}):
                self.enqueue((job["metadata"].get("namespace") or "default", job["metadata"]["name"]), poll=True)
        except Exception as exc:
            log.warning("listing A2CJobs failed: %s", exc)

    def run(self) -> None:
        """Reconcile until `stop` is set."""
        watches = [
            ("a2cjobs", (jobspec.API_VERSION, jobspec.KIND, _job_key)),
            ("pods", ("v1", "Pod", _pod_key, "app.kubernetes.io/managed-by=a2c-controller")),
        ]
        for name, args in watches:
            threading.Thread(target=self._watch, args=args, name=f"watch-{name}", daemon=True).start()
        next_resync = 0.0
        while not self.stop.is_set():
            self.heartbeat = time.monotonic()
            if time.monotonic() >= next_resync:
                self._resync()
                next_resync = time.monotonic() + self.resync_s
            with self._wake:
                wake_at = min([next_resync, *self._later.values()])
                if not self._pending:
                    self._wake.wait(timeout=max(0.0, wake_at - time.monotonic()))
                for key, when in list(self._later.items()):
                    if when <= time.monotonic():
                        del self._later[key]
                        self._pending.setdefault(key, False)
                keys, self._pending = sorted(self._pending.items()), {}
                self._depth()
            for key, poll in keys:
                if self.stop.is_set():
                    break
                self._reconcile(key, poll)

    def _reconcile(self, key: Key, poll: bool) -> None:
        try:
            result = self.reconciler.reconcile(*key, poll=poll)
            log.debug("reconciled %s/%s (poll=%s): %s", *key, poll, result)
            self._failures.pop(key, None)
            due = self.reconciler.due.pop(key, None)  # a deadline or TTL: back then, not at a later resync
            if result == "waiting":
                due = min(due if due is not None else self.requeue_s, self.requeue_s)
            if due is not None:
                self._later[key] = min(self._later.get(key, float("inf")), time.monotonic() + max(due, MIN_DUE_S))
        except Exception:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            delay = min(self.resync_s, self.requeue_s * 2 ** (failures - 1))
            log.exception("reconcile %s/%s failed; retrying in %.0f s", *key, delay)
            self._later[key] = time.monotonic() + delay
        with self._wake:
            self._depth()


def quiet(exc: BaseException) -> bool:
    """A watch that ended the way watches end: its connection timed out when nothing was sent, or was dropped
    (the API server restarted, a load balancer closed an idle stream). Anything else is worth a WARNING."""
    return isinstance(exc, (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError,
                            TimeoutError, ConnectionResetError))


def backoff(failures: int, first_s: float, cap_s: float) -> float:
    """Seconds before the next watch after `failures` failures in a row (`first_s` after a quiet end)."""
    return min(max(cap_s, first_s), first_s * 2 ** max(failures - 1, 0))


def describe(exc: BaseException) -> str:
    """The API server's answer in a line (`ApiException`'s str is several, with every header)."""
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or b"{}").get("message", "")
        except (ValueError, AttributeError):
            message = str(exc.body or "")[:300]
        return f"{exc.status} {exc.reason}: {message}".strip(": ")
    return f"{type(exc).__name__}: {exc}"


def _observed(job: dict[str, Any]) -> bool:
    meta, status = job.get("metadata") or {}, job.get("status") or {}
    generation = meta.get("generation")
    return (generation is not None and status.get("observedGeneration") == generation
            and not meta.get("deletionTimestamp"))


def _job_key(obj: dict[str, Any]) -> Key | None:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "default", meta["name"]) if meta.get("name") else None


def _pod_key(obj: dict[str, Any]) -> Key | None:
    meta = obj.get("metadata") or {}
    job = (meta.get("labels") or {}).get("a2c.dev/job")
    return (meta.get("namespace") or "default", job) if job else None
