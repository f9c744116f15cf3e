"""The operator's main loop: level-triggered reconciles fed by watches and a periodic resync.

Data flow: two watch threads (A2CJobs; pods labelled `app.kubernetes.io/managed-by=a2c-controller`)
turn every event into a job key on a queue; a resync lists all jobs every `resync_s` (this is also when
trainer 0's progress is polled); one worker reconciles the keys one at a time (`handlers.Reconciler`),
so a job is never reconciled twice at once. A failed reconcile is logged and retried on the next
resync. Watches reconnect on their own; a missed event is caught by the next resync.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from a2c.controller import handlers
from a2c.controller import spec as jobspec

log = logging.getLogger(__name__)
Key = tuple[str, str]


class Loop:
    def __init__(self, reconciler: handlers.Reconciler, namespace: str | None = None, resync_s: float = 10.0) -> None:
        self.reconciler = reconciler
        self.kube = reconciler.kube
        self.namespace = namespace
        self.resync_s = resync_s
        self.stop = threading.Event()
        self._pending: set[Key] = set()
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

    def enqueue(self, key: Key) -> None:
        with self._wake:
            self._pending.add(key)
            self._wake.notify()

    def _watch(self, api_version: str, kind: str, key_of: Any, selector: str = "") -> None:
        while not self.stop.is_set():
            try:
                events = self.kube.watch(api_version, kind, self.namespace, timeout_s=self.resync_s,
                                         selector=selector, opened=self._streams.append)
                for event in events:
                    key = key_of(event.get("object") or {})
                    if key is not None:
                        self.enqueue(key)
                    if self.stop.is_set():
                        return
            except Exception as exc:  # timeouts and dropped connections: reconnect
                log.debug("watch %s ended: %s", kind, exc)
                self.stop.wait(0.5)
            finally:
                self._streams[:] = [s for s in self._streams if not getattr(s, "closed", False)]

    def _resync(self) -> None:
        labels: dict[str, str] = {}
        try:
            for job in self.kube.list(jobspec.API_VERSION, jobspec.KIND, self.namespace, labels):
                self.enqueue((job["metadata"].get("namespace") or "default", job["metadata"]["name"]))
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
            if time.monotonic() >= next_resync:
                self._resync()
                next_resync = time.monotonic() + self.resync_s
            with self._wake:
                if not self._pending:
                    self._wake.wait(timeout=max(0.0, next_resync - time.monotonic()))
                keys, self._pending = sorted(self._pending), set()
            for namespace, name in keys:
                if self.stop.is_set():
                    break
                try:
                    result = self.reconciler.reconcile(namespace, name)
                    log.debug("reconciled %s/%s: %s", namespace, name, result)
                except Exception:
                    log.exception("reconcile %s/%s failed; retrying at the next resync", namespace, name)


def _job_key(obj: dict[str, Any]) -> Key | None:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "default", meta["name"]) if meta.get("name") else None


def _pod_key(obj: dict[str, Any]) -> Key | None:
    meta = obj.get("metadata") or {}
    job = (meta.get("labels") or {}).get("a2c.dev/job")
    return (meta.get("namespace") or "default", job) if job else None
