"""kube-controller-manager's garbage collector, as a separate and slow actor beside the stand-in API server.

Data flow: `Rest.delete` only marks what kube-apiserver marks (a `foregroundDeletion` or `orphan` finalizer
and a deletionTimestamp; a background delete removes the owner at once); this collector, a thread of
`APIServer`, then acts on the store as the real one does (pkg/controller/garbagecollector): each object it
has to act on waits `delay_s` (times 1 to 1 + `jitter`) from the moment it became a target, so children
outlive their owner by a second or more, as on a real cluster where Helm and controllers do not wait for them.

What it does, per object (an owner is "solid" when it exists and is not being deleted in the foreground):
- no solid owner left (all absent, or waiting for their dependents): delete it, in the foreground if an
  owner waits for it and it has dependents of its own, else in the background;
- some owners solid, some absent: drop the dangling ownerReferences;
- `orphan` finalizer on a deleting object: remove its uid from its dependents' ownerReferences, then the
  finalizer;
- `foregroundDeletion` finalizer on a deleting object: once no dependent with `blockOwnerDeletion` is left,
  remove the finalizer (the object then goes).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import threading
import time
from typing import Any

from tests.cluster import api_store
from tests.cluster.api_rest import ApiError, Rest, meta_ns

log = logging.getLogger(__name__)
FOREGROUND, ORPHAN = "foregroundDeletion", "orphan"
Target = tuple[str, str]  # (uid, what to do)


class Collector:
    def __init__(self, rest: Rest, delay_s: float, jitter: float) -> None:
        self.rest, self.store = rest, rest.store
        self.delay_s, self.jitter = delay_s, jitter
        self._due: dict[Target, float] = {}  # target -> monotonic time it may be acted on
        self._random = random.Random()

    def run(self, stopped: threading.Event | None = None) -> None:
        """Until the store closes: look for targets on every change, act on those whose delay has passed."""
        while not self.store.closed and not (stopped and stopped.is_set()):
            now = time.monotonic()
            wait = max(0.01, min([t - now for t in self._due.values()] + [0.5]))
            self.store.gc_wake.wait(wait)
            self.store.gc_wake.clear()
            if self.store.closed:
                return
            try:
                self.step()
            except Exception:  # a bug here must show in the log, not silently end garbage collection
                log.exception("garbage collector pass failed")

    def step(self) -> int:
        """One pass: note new targets, act on the due ones; returns how many acted."""
        targets = self._targets()
        now = time.monotonic()
        self._due = {t: self._due.get(t, now + self.delay_s * (1 + self._random.uniform(0, self.jitter)))
                     for t in targets}
        acted = 0
        for target, due in sorted(self._due.items(), key=lambda item: item[1]):
            if due <= now:
                del self._due[target]
                with contextlib.suppress(ApiError):  # raced with a client: the next pass sees the new state
                    acted += self._act(*target)
        return acted

    def _targets(self) -> set[Target]:
        out: set[Target] = set()
        with self.store.cond:
            for objs in self.store.objects.values():
                for obj in objs.values():
                    meta = obj["metadata"]
                    uid = meta["uid"]
                    if meta.get("deletionTimestamp"):
                        for finalizer in (FOREGROUND, ORPHAN):
                            if finalizer in (meta.get("finalizers") or []):
                                out.add((uid, finalizer))
                    refs = meta.get("ownerReferences") or []
                    if refs and not meta.get("deletionTimestamp"):  # a deleting object is on its way already
                        solid = [r for r in refs if self._solid(r)]
                        if not solid:
                            out.add((uid, "delete"))
                        elif len(solid) < len(refs) and any(not self.store.exists(r.get("uid", "")) for r in refs):
                            out.add((uid, "dangling"))
        return out

    def _solid(self, ref: dict[str, Any]) -> bool:
        owner = self._by_uid(str(ref.get("uid", "")))
        if owner is None:
            return False
        meta = owner[1]["metadata"]
        return not (meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or []))

    def _by_uid(self, uid: str) -> tuple[api_store.Key, dict[str, Any]] | None:
        with self.store.cond:
            where = self.store.uids.get(uid)
            if where is None:
                return None
            obj = self.store.get(*where)
            return (where[0], obj) if obj is not None else None

    def _act(self, uid: str, what: str) -> int:
        with self.rest.lock:
            found = self._by_uid(uid)
            if found is None:
                return 0
            key, obj = found[0], copy.deepcopy(found[1])
            res = self.rest.storage(key)
            if res is None:
                return 0
            meta = obj["metadata"]
            if what == "delete":
                waiting = any(self._by_uid(str(r.get("uid", ""))) is not None
                              for r in meta.get("ownerReferences") or [])
                policy = "Foreground" if waiting and self.store.dependents(uid) else "Background"
                self.rest.delete(res, meta_ns(obj), meta["name"], {"propagationPolicy": policy,
                                                                  "preconditions": {"uid": uid}})
                return 1
            if what == "dangling":
                meta["ownerReferences"] = [r for r in meta["ownerReferences"] if self.store.exists(r.get("uid", ""))]
                self.store.put(key, obj, "MODIFIED")
                return 1
            if what == ORPHAN:
                self.rest.orphan(uid)
            elif what == FOREGROUND:
                blocking = [d for _k, d in self.store.dependents(uid)
                            if any(r.get("uid") == uid and r.get("blockOwnerDeletion")
                                   for r in d["metadata"]["ownerReferences"])]
                if blocking:
                    return 0  # they are being deleted (their own targets); look again on the next change
            self.rest.drop_finalizer(res, obj, what)
            return 1
