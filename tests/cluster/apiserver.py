"""A strict stand-in for kube-apiserver, in-process, for tests: `with APIServer() as server: ...`.

It speaks the real REST protocol over HTTP(S) so the official client, `kubectl` and a pod using in-cluster
credentials all talk to it unchanged, and refuses what the real server refuses: non-strict JSON (NaN,
Infinity, trailing bytes), unknown or mistyped fields of built-in kinds, custom resources that fail their
CRD's schema or CEL rules, stale resourceVersions, writes RBAC does not grant. It also plays the parts
of kube-controller-manager a controller relies on: garbage collection of owned objects (`api_gc`: slow,
asynchronous, with background, foreground and orphan propagation), finalizers, a `default` ServiceAccount per
namespace.

Layout: this module owns the server's life cycle and what tests read; `api_http` the HTTP side (routing,
authentication, RBAC, watch streaming); `api_rest` the REST semantics; `api_store` objects,
resourceVersions and the event history; `api_kinds` discovery; `api_schema` and `api_builtin` validation;
`api_patch`, `api_select`, `api_rbac`, `api_tls` one concern each.

Not emulated: server-side apply, dryRun, /scale, /log, /exec, pagination (limit/continue are ignored),
protobuf and YAML bodies, admission webhooks, API priority and fairness, events.k8s.io.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import api_gc, api_http, api_rest, api_store, api_tls


@dataclass(frozen=True)
class Request:
    """One served request, as an audit log line would record it."""
    user: str
    verb: str
    resource: str  # "pods", "a2cjobs/status", or the URL path of a non-resource request
    namespace: str
    name: str
    code: int


class APIServer:
    """kube-apiserver for tests. Constructor flags choose how much of a real cluster's policy applies."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: bool = False, anonymous: bool = True,
                 rbac: bool = False, namespaces: tuple[str, ...] = ("default", "kube-system"),
                 auto_namespaces: bool = False, graceful_pods: bool = False, history: int = 1000,
                 bookmark_interval_s: float = 1.0, gc_delay_s: float = 1.0, gc_jitter: float = 0.5) -> None:
        """`gc_delay_s`, `gc_jitter`: the garbage collector acts on an object `gc_delay_s` x (1 to 1 + `gc_jitter`)
        after it became its target (kube-controller-manager's collector is a separate controller: seconds, on a
        busy cluster; nothing may rely on it being quick)."""
        self.host, self.port, self.tls, self.anonymous, self.rbac = host, port, tls, anonymous, rbac
        self.bookmark_interval_s = bookmark_interval_s
        self.store = api_store.Store(history)
        self.rest = api_rest.Rest(self.store, auto_namespaces, graceful_pods)
        self.gc = api_gc.Collector(self.rest, gc_delay_s, gc_jitter)
        self.initial_namespaces = namespaces
        self.tokens: dict[str, str] = {}
        self.cert = api_tls.issue(host) if tls else None
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> APIServer:
        for ns in self.initial_namespaces:
            self.rest.create(self.rest.ns_res, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        handler = type("Handler", (api_http.Handler,), {"api": self})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        if self.cert is not None:
            self._httpd.socket = self.cert.context().wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._threads = [threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                          name="apiserver", daemon=True),
                         threading.Thread(target=self.gc.run, name="apiserver-gc", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: open watches end at once, connections are closed."""
        self.store.close()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self._lock:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> APIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        assert self.cert is not None, "APIServer(tls=True) has a CA"
        return self.cert.ca_pem

    # --- credentials ----------------------------------------------------------------------------------

    def add_token(self, token: str, user: str) -> None:
        """Accept `Authorization: Bearer <token>` as `user` (`system:serviceaccount:<ns>:<name>` for a pod)."""
        self.tokens[token] = user

    def kubeconfig(self, path: str | Path, token: str | None = None) -> Path:
        """Write a kubeconfig for `kubectl --kubeconfig` and `kubernetes.config.load_kube_config`."""
        path = Path(path)
        cluster: dict[str, Any] = {"server": self.url}
        if self.cert is not None:
            ca = path.with_name(path.name + ".ca.crt")
            ca.write_bytes(self.cert.ca_pem)
            cluster["certificate-authority"] = str(ca)
        user: dict[str, Any] = {"token": token} if token else {}
        config = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
                  "clusters": [{"name": "test", "cluster": cluster}], "users": [{"name": "test", "user": user}],
                  "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test",
                                                            "namespace": "default"}}]}
        path.write_text(yaml.safe_dump(config))
        return path

    def client_configuration(self, token: str | None = None, folder: str | Path | None = None) -> Any:
        """A `kubernetes.client.Configuration` for this server (the CA goes to a file in `folder` with TLS)."""
        from kubernetes import client
        cfg = client.Configuration(host=self.url)
        if token:
            cfg.api_key = {"BearerToken": token}
            cfg.api_key_prefix = {"BearerToken": "Bearer"}
        if self.cert is not None:
            ca = Path(folder or tempfile.mkdtemp(prefix="apiserver-ca-")) / "ca.crt"
            ca.write_bytes(self.cert.ca_pem)
            cfg.ssl_ca_cert = str(ca)
        return cfg

    def serviceaccount_dir(self, folder: str | Path, token: str, namespace: str) -> Path:
        """A /var/run/secrets/kubernetes.io/serviceaccount lookalike: token, ca.crt, namespace."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "token").write_text(token)
        (folder / "namespace").write_text(namespace)
        if self.cert is not None:
            (folder / "ca.crt").write_bytes(self.cert.ca_pem)
        return folder

    # --- what tests read ------------------------------------------------------------------------------

    def counts(self, user: str | None = None) -> collections.Counter[str]:
        """Requests by verb (get/list/watch/create/update/patch/delete/deletecollection), of `user` or all."""
        with self._lock:
            out: collections.Counter[str] = collections.Counter()
            for (who, verb), n in self._counts.items():
                if user is None or who == user:
                    out[verb] += n
            return out

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._requests.clear()

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Objects of a kind straight from the store (as that version serves them), sorted by namespace/name."""
        res = self.rest.by_kind(api_version, kind)
        return [self.rest.output(res, o) for o in self.store.items(res.key, namespace)]

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        res = self.rest.by_kind(api_version, kind)
        obj = self.store.get(res.key, namespace if res.namespaced else "", name)
        return None if obj is None else self.rest.output(res, obj)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object as an admin would (validated like any request); returns it as stored."""
        res = self.rest.by_kind(obj["apiVersion"], obj["kind"])
        return self.rest.create(res, obj["metadata"].get("namespace", "default") if res.namespaced else "", obj)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Poll `predicate` on every store change until it returns something truthy; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            with self.store.cond:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s")
                self.store.cond.wait(min(left, 0.1))

    # --- internals ------------------------------------------------------------------------------------

    def record_request(self, user: str, verb: str, resource: str, namespace: str, name: str, code: int) -> None:
        with self._lock:
            self._counts[(user, verb)] += 1
            self._requests.append(Request(user, verb, resource, namespace, name, code))

    def track_connection(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)
