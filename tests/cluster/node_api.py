"""How the test node talks to the API server: REST over the official client, and list+watch caches.

Data flow: `node.Node` makes one `Api` with its own bearer token (its requests count under its own user) and
one `Informer` per kind it acts on (pods, statefulsets, deployments, services, persistentvolumeclaims). An
informer lists once, then watches from the list's resourceVersion (bookmarks on, resumed where a stream
ended, relisted on 410 Gone), keeps the objects by (namespace, name) and calls `changed()` on every event,
which wakes the node's loop. A server that refuses watches is relisted every `poll_s` instead.
ConfigMaps and Secrets are read with a GET when a container starts, as the kubelet reads them for env.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client

from a2c.controller import kube

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class Api:
    def __init__(self, url: str, token: str, ca_file: str | None = None, timeout_s: float = 10.0) -> None:
        cfg = client.Configuration()
        cfg.host = url.rstrip("/")
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        if ca_file:
            cfg.ssl_ca_cert = ca_file
        self.client = client.ApiClient(cfg)
        self.kube = kube.Kube(self.client, timeout_s)

    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
                content_type: str = "application/json", stream: bool = False, timeout_s: float | None = None) -> Any:
        """One REST call through the controller's own client (`a2c.controller.kube`): the node speaks to the API
        server exactly as the controller does; a stream comes back as the raw urllib3 response."""
        try:
            reply = self.kube.request(method, path, body=body, content_type=content_type, query=query,
                                      stream=stream, timeout_s=timeout_s)
        except kube.NotFoundError:
            raise NotFound(path) from None
        except client.ApiException as exc:
            if exc.status == 409:
                raise Conflict(exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body) \
                    from None
            raise
        return reply.response if stream else reply

    def get(self, path: str) -> Obj | None:
        try:
            return dict(self.request("GET", path))
        except NotFound:
            return None

    def create(self, path: str, obj: Obj) -> Obj:
        return dict(self.request("POST", path, body=obj))

    def delete(self, path: str, body: Obj | None = None) -> Obj | None:
        """The server's answer: the object, still there with a deletionTimestamp when deletion is graceful."""
        with contextlib.suppress(NotFound):
            reply = self.request("DELETE", path, body=body)
            return reply if isinstance(reply, dict) else None
        return None

    def merge_patch(self, path: str, patch: Obj) -> Obj:
        return dict(self.request("PATCH", path, body=patch, content_type="application/merge-patch+json"))


def path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")


def key(obj: Obj) -> Key:
    return obj["metadata"].get("namespace") or "default", obj["metadata"]["name"]


class Informer:
    """The objects of one kind, all namespaces, kept current by list + watch."""

    def __init__(self, api: Api, api_version: str, plural: str, changed: Callable[[], None],
                 stop: threading.Event, poll_s: float = 0.5) -> None:
        self.api, self.url, self.changed, self.stop, self.poll_s = api, path(api_version, plural), changed, stop, poll_s
        self.plural = plural
        self.items: dict[Key, Obj] = {}
        self._gone: set[str | None] = set()  # uids the watch has seen deleted
        self.synced = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self.thread = threading.Thread(target=self._run, name=f"informer-{plural}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.shutdown() if hasattr(stream, "shutdown") else stream.close()
        self.thread.join(5)

    def list(self, namespace: str | None = None) -> list[Obj]:
        with self._lock:
            return [o for (ns, _), o in self.items.items() if namespace is None or ns == namespace]

    def get(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self.items.get((namespace, name))

    def put(self, obj: Obj) -> None:
        """What we just wrote, before its watch event comes back (so the next pass does not write it again).
        A reply can come back after the watch has moved past it: an object the watch saw deleted, or older
        than the cached one, is not put back (a deleted pod put back stayed in the cache for good, so its
        StatefulSet never replaced it)."""
        meta = obj.get("metadata") or {}
        with self._lock:
            if meta.get("uid") in self._gone:
                return
            cached = (self.items.get(key(obj)) or {}).get("metadata") or {}
            if cached.get("uid") == meta.get("uid") and _older(meta.get("resourceVersion"),
                                                               cached.get("resourceVersion")):
                return
            self.items[key(obj)] = obj

    def drop(self, namespace: str, name: str) -> None:
        with self._lock:
            self.items.pop((namespace, name), None)

    def _relist(self) -> str:
        listed = self.api.request("GET", self.url)
        with self._lock:
            self.items = {key(o): o for o in listed.get("items") or []}
        self.synced.set()
        self.changed()
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    def _run(self) -> None:
        version, watching = "", True
        while not self.stop.is_set():
            try:
                if not version or not watching:
                    version = self._relist()
                if not watching:
                    self.stop.wait(self.poll_s)
                    continue
                version = self._watch(version)
            except Gone:
                version = ""
            except client.ApiException as exc:
                if exc.status in (400, 405, 501):
                    log.info("%s: the server refuses watches (%s): polling every %.1fs", self.plural, exc.status,
                             self.poll_s)
                    watching = False
                else:
                    log.debug("%s watch: %s", self.plural, exc)
                    self.stop.wait(self.poll_s)
            except Exception as exc:  # dropped connections, timeouts: resume from `version`
                if not self.stop.is_set():
                    log.debug("%s watch ended: %s", self.plural, exc)
                    self.stop.wait(self.poll_s)

    def _watch(self, version: str) -> str:
        query = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "240"}
        if version and version.isdigit():
            query["resourceVersion"] = version
        stream = self.api.request("GET", self.url, query=query, stream=True, timeout_s=300)
        self._stream = stream
        try:
            buffer = b""
            for chunk in stream.stream(65536, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        version = self._apply(json.loads(line)) or version
                if self.stop.is_set():
                    break
        finally:
            self._stream = None
            stream.release_conn()
        return version

    def _apply(self, event: Obj) -> str:
        obj = event.get("object") or {}
        kind = event.get("type")
        if kind == "ERROR":
            if int(obj.get("code") or 0) == 410:
                raise Gone(obj.get("message", ""))
            raise RuntimeError(f"watch error: {obj}")
        if kind != "BOOKMARK":
            with self._lock:
                if kind == "DELETED":
                    self.items.pop(key(obj), None)
                    self._gone.add((obj.get("metadata") or {}).get("uid"))
                else:
                    self.items[key(obj)] = obj
            self.changed()
        return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _older(version: Any, than: Any) -> bool:
    """resourceVersions are opaque to clients, but this stand-in's are integers: compare them when both are."""
    return str(version).isdigit() and str(than).isdigit() and int(version) < int(than)


class Gone(Exception):
    """The watch's resourceVersion is older than the server keeps: list again."""
