"""The server's etcd: objects by resource, one global resourceVersion counter, a bounded event history.

Every write bumps the counter and appends (rv, resource, type, object) to the history, which watches read
from: a watch from resourceVersion N replays the events after N and then waits for more. Once events have
fallen off the history, a watch from before them is answered 410 Expired, as after an etcd compaction.
Every write and removal sets `gc_wake`, on which the garbage collector (`api_gc`) waits.
"""

from __future__ import annotations

import collections
import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]  # (group, plural)


@dataclass(frozen=True)
class Event:
    rv: int
    key: Key
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None = None  # the object before a MODIFIED event


class Expired(Exception):
    """The requested resourceVersion is older than the history kept."""


class Store:
    def __init__(self, history: int = 1000) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.rv = 0
        self.objects: dict[Key, dict[tuple[str, str], dict[str, Any]]] = collections.defaultdict(dict)
        self.history: collections.deque[Event] = collections.deque(maxlen=history)
        self.compacted = 0  # newest rv no longer in the history
        self.uids: dict[str, tuple[Key, str, str]] = {}
        self.closed = False
        self.gc_wake = threading.Event()
        self.on_delete: list[Callable[[Key, dict[str, Any]], None]] = []

    def next_rv(self) -> int:
        with self.cond:
            self.rv += 1
            return self.rv

    def get(self, key: Key, namespace: str, name: str) -> dict[str, Any] | None:
        with self.cond:
            return self.objects[key].get((namespace, name))

    def items(self, key: Key, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.cond:
            objs = [o for (ns, _n), o in self.objects[key].items() if namespace is None or ns == namespace]
        return sorted(objs, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    def put(self, key: Key, obj: dict[str, Any], event_type: str) -> dict[str, Any]:
        """Store `obj` under a fresh resourceVersion and record the event; returns the stored copy."""
        with self.cond:
            meta = obj["metadata"]
            meta["resourceVersion"] = str(self.next_rv())
            stored = copy.deepcopy(obj)
            old = self.objects[key].get((meta.get("namespace", ""), meta["name"]))
            self.objects[key][(meta.get("namespace", ""), meta["name"])] = stored
            self.uids[meta["uid"]] = (key, meta.get("namespace", ""), meta["name"])
            self._record(Event(self.rv, key, event_type, copy.deepcopy(stored), old))
        self.gc_wake.set()
        return copy.deepcopy(stored)

    def remove(self, key: Key, namespace: str, name: str) -> dict[str, Any] | None:
        with self.cond:
            obj = self.objects[key].pop((namespace, name), None)
            if obj is None:
                return None
            self.uids.pop(obj["metadata"]["uid"], None)
            obj["metadata"]["resourceVersion"] = str(self.next_rv())
            self._record(Event(self.rv, key, "DELETED", copy.deepcopy(obj)))
        for hook in self.on_delete:
            hook(key, obj)
        self.gc_wake.set()
        return obj

    def _record(self, event: Event) -> None:
        if len(self.history) == self.history.maxlen:
            self.compacted = self.history[0].rv
        self.history.append(event)
        self.cond.notify_all()

    def events_after(self, key: Key, rv: int) -> list[Event]:
        """Events of `key` newer than `rv`; Expired if some of them may have been dropped."""
        with self.cond:
            if rv < self.compacted:
                raise Expired(f"too old resource version: {rv} ({self.compacted + 1})")
            return [e for e in self.history if e.rv > rv and e.key == key]

    def wait(self, timeout: float) -> None:
        with self.cond:
            if not self.closed:
                self.cond.wait(timeout)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.gc_wake.set()

    def exists(self, uid: str) -> bool:
        with self.cond:
            return uid in self.uids

    def dependents(self, uid: str) -> list[tuple[Key, dict[str, Any]]]:
        with self.cond:
            return [(key, copy.deepcopy(obj)) for key, objs in self.objects.items() for obj in objs.values()
                    if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])]
