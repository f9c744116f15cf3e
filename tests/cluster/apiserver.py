"""A strict stand-in for kube-apiserver, in-process, for tests: `with APIServer() as server: ...`.

It speaks the real REST protocol over HTTP(S) so the official client, `kubectl` and a pod using in-cluster
credentials all talk to it unchanged, and refuses what the real server refuses: non-strict JSON (NaN,
Infinity, trailing bytes), unknown or mistyped fields of built-in kinds, custom resources that fail their
CRD's schema or CEL rules, stale resourceVersions, writes RBAC does not grant. It also plays the parts
of kube-controller-manager a controller relies on: garbage collection of owned objects, finalizers,
a `default` ServiceAccount per namespace.

Layout: this module owns HTTP (routing, auth, counting, watch streaming); `api_rest` the REST semantics;
`api_store` objects, resourceVersions and the event history; `api_kinds` discovery; `api_schema`,
`api_builtin` validation; `api_patch`, `api_select`, `api_rbac`, `api_tls` one concern each.

Not emulated: server-side apply, dryRun, /scale, /log, /exec, pagination (limit/continue are ignored),
protobuf and YAML bodies, admission webhooks, API priority and fairness, events.k8s.io.
"""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import api_kinds, api_rbac, api_rest, api_select, api_store, api_tls
from tests.cluster.api_kinds import Resource
from tests.cluster.api_rest import ApiError

VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0", "gitCommit": "test", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25", "compiler": "gc", "platform": "linux/amd64"}


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
                 bookmark_interval_s: float = 1.0, gc_delay_s: float = 0.05) -> None:
        self.host, self.port, self.tls, self.anonymous, self.rbac = host, port, tls, anonymous, rbac
        self.bookmark_interval_s, self.gc_delay_s = bookmark_interval_s, gc_delay_s
        self.store = api_store.Store(history)
        self.rest = api_rest.Rest(self.store, auto_namespaces, graceful_pods)
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
        handler = type("Handler", (_Handler,), {"api": self})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        if self.cert is not None:
            self._httpd.socket = self.cert.context().wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._threads = [threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                          name="apiserver", daemon=True),
                         threading.Thread(target=self._collect_garbage, name="apiserver-gc", daemon=True)]
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

    def _collect_garbage(self) -> None:
        while not self.store.closed:
            self.store.gc_wake.wait(0.5)
            self.store.gc_wake.clear()
            if self.store.closed:
                return
            time.sleep(self.gc_delay_s)
            while self.rest.collect_garbage():
                pass

    def _record(self, user: str, verb: str, resource: str, namespace: str, name: str, code: int) -> None:
        with self._lock:
            self._counts[(user, verb)] += 1
            self._requests.append(Request(user, verb, resource, namespace, name, code))

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)


class _Reply(Exception):
    def __init__(self, code: int, body: Any) -> None:
        super().__init__(code)
        self.code, self.body = code, body


def _strict_json(raw: bytes, strict: bool) -> Any:
    def constant(name: str) -> Any:
        raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out and strict:
                raise ValueError(f'strict decoding error: duplicate field "{key}"')
            out[key] = value
        return out
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=constant, object_pairs_hook=pairs)
    except (ValueError, UnicodeDecodeError) as exc:
        message = str(exc).split(":")[0] if "Extra data" in str(exc) else str(exc)
        raise ApiError(400, "BadRequest", f"json parse error: {message}") from exc


class _Handler(BaseHTTPRequestHandler):
    api: APIServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.api._track(self.connection, True)

    def finish(self) -> None:
        self.api._track(self.connection, False)
        with contextlib.suppress(OSError, ssl.SSLError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # --- plumbing -------------------------------------------------------------------------------------

    def _send(self, code: int, body: Any) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, allow_nan=False).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if isinstance(body, bytes) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(length) if length else b""

    def _user(self) -> str:
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer":  # the scheme is case-insensitive (the in-cluster loader sends "bearer")
            user = self.api.tokens.get(token.strip())
            if user is not None:
                return user
        elif not auth and self.api.anonymous:
            return "system:anonymous"
        raise _Reply(401, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": "Unauthorized", "reason": "Unauthorized", "code": 401})

    def _serve(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/") if p]
        raw = self._body()
        user, verb, target = "", "get", (url.path, "", "")
        try:
            user = self._user()
            route = self._route(method, parts, query)
            if route is None:
                self.api._record(user, "get", url.path, "", "", 200)
                return self._send(200, self._non_resource(parts))
            res, ns, name, sub, verb = route
            target = (res.plural + (f"/{sub}" if sub else ""), ns, name)
            self._authorize(user, verb, res, target)
            if verb == "watch":
                self.api._record(user, verb, *target, 200)
                return self._watch(res, ns, query)
            code, body = self._dispatch(res, ns, name, sub, verb, raw, query)
        except _Reply as reply:
            code, body = reply.code, reply.body
        except ApiError as err:
            code, body = err.code, err.status()
        if user:
            self.api._record(user, verb, *target, code)
        self._send(code, body)

    def _route(self, method: str, parts: list[str],
               query: dict[str, str]) -> tuple[Resource, str, str, str, str] | None:
        if parts[:2] == ["api", "v1"] and len(parts) > 2:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) > 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        watch = rest[0] == "watch"
        rest = rest[1:] if watch else rest
        ns = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in self.api.rest.resources:
            ns, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        res = self.api.rest.find(group, version, rest[0])
        name, sub = (rest + ["", ""])[1:3]
        if (ns and not res.namespaced) or (sub and not (sub == "status" and res.status)) or \
                (res.namespaced and not ns and method != "GET"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET":
            verb = "get" if name else "watch" if watch or query.get("watch") in ("true", "1") else "list"
        elif method == "DELETE":
            verb = "delete" if name else "deletecollection"
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]
            if (verb == "create") == bool(name):
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                                                        "resource")
        return res, ns, name, sub, verb

    def _authorize(self, user: str, verb: str, res: Resource, target: tuple[str, str, str]) -> None:
        if not self.api.rbac or not (user.startswith("system:serviceaccount:") or user == "system:anonymous"):
            return
        attrs = api_rbac.Attributes(user, api_rbac.groups_of(user), verb, res.group, *target)
        rest = self.api.rest

        def items(plural: str, ns: str | None) -> list[dict[str, Any]]:
            return self.api.store.items(("rbac.authorization.k8s.io", plural), ns)

        def lookup(plural: str, ns: str, name: str, group: str) -> dict[str, Any] | None:
            return rest.store.get((group, plural), ns, name)
        if not api_rbac.allowed(attrs, items, lookup):
            raise ApiError(403, "Forbidden", api_rbac.forbidden_message(attrs),
                           {"name": target[2], "group": res.group, "kind": res.plural})

    def _non_resource(self, parts: list[str]) -> Any:
        served = self.api.rest.served()
        if parts == ["version"]:
            return VERSION
        if parts in (["healthz"], ["livez"], ["readyz"]):
            return b"ok"
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                    "serverAddress": f"{self.api.host}:{self.api.port}"}]}
        if parts == ["api", "v1"]:
            return api_kinds.resource_list([r for r in served if not r.group], "v1")
        if parts == ["apis"]:
            return api_kinds.group_list(served)
        if len(parts) == 2 and parts[0] == "apis":
            members = [r for r in served if r.group == parts[1]]
            if members:
                return api_kinds.group(parts[1], members)
        if len(parts) == 3 and parts[0] == "apis":
            members = [r for r in served if r.group == parts[1] and r.version == parts[2]]
            if members:
                return api_kinds.resource_list(members, f"{parts[1]}/{parts[2]}")
        if parts == ["openapi", "v3"]:
            return api_kinds.openapi_root(served)
        if parts[:2] == ["openapi", "v3"]:
            document = api_kinds.openapi_document(served, "/".join(parts[2:]))
            if document is not None:
                return document
        if not parts:
            return {"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]}
        raise _Reply(404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": "the server could not find the requested resource", "reason": "NotFound",
                           "details": {}, "code": 404})

    def _dispatch(self, res: Resource, ns: str, name: str, sub: str, verb: str, raw: bytes,
                  query: dict[str, str]) -> tuple[int, Any]:
        rest, validation = self.api.rest, query.get("fieldValidation", "")
        if validation not in ("", "Strict", "Warn", "Ignore"):
            raise ApiError(400, "BadRequest", f"fieldValidation must be one of Ignore, Warn or Strict, got "
                                              f"{validation}")
        if query.get("dryRun"):
            raise ApiError(400, "BadRequest", "dryRun is not supported by the test API server")
        content_type = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if verb in ("create", "update") and content_type != "application/json":
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                                        "accepted media types include: application/json")
        body = _strict_json(raw, validation == "Strict") if raw.strip() else None
        if verb == "get":
            return 200, self._shape(res, [rest.get(res, ns, name)], single=True)
        if verb == "list":
            with self.api.store.cond:  # the items and the list's resourceVersion are one snapshot
                items = rest.select(res, ns or None, query.get("labelSelector", ""), query.get("fieldSelector", ""))
                rv = str(self.api.store.rv)
            return 200, self._shape(res, items, single=False, rv=rv)
        if verb == "create":
            if body is None:
                raise ApiError(400, "BadRequest", "request body must not be empty")
            return 201, rest.create(res, ns, body, validation)
        if verb == "update":
            return 200, rest.update(res, ns, name, body, sub, validation)
        if verb == "patch":
            return 200, rest.patch(res, ns, name, body, content_type, sub, validation)
        options = body if isinstance(body, dict) else {}
        for key in ("propagationPolicy", "gracePeriodSeconds"):
            if key in query:
                options[key] = int(query[key]) if key == "gracePeriodSeconds" else query[key]
        if verb == "delete":
            return 200, rest.delete(res, ns, name, options)
        victims = rest.select(res, ns or None, query.get("labelSelector", ""), query.get("fieldSelector", ""))
        for obj in victims:
            with contextlib.suppress(ApiError):
                rest.delete(res, ns, obj["metadata"]["name"], options)
        return 200, self._shape(res, victims, single=False)

    def _accept(self) -> str:
        accept = self.headers.get("Accept", "")
        first = accept.split(",")[0]
        if "as=Table" in first:
            return "Table"
        if "as=PartialObjectMetadata" in first:
            return "Partial"
        return "json"

    def _shape(self, res: Resource, items: list[dict[str, Any]], single: bool, rv: str = "") -> dict[str, Any]:
        rv = rv or str(self.api.store.rv)
        shape = self._accept()
        if shape == "Table":
            include = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("includeObject", ["Metadata"])
            return api_select.table(items, list(res.columns) if res.columns is not None else None, res.plural,
                                    include[-1], items[0]["metadata"]["resourceVersion"] if single else rv)
        if shape == "Partial":
            items = [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}
                     for o in items]
            if single:
                return items[0]
            return {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"resourceVersion": rv}, "items": items}
        if single:
            return items[0]
        return {"apiVersion": res.api_version, "kind": f"{res.kind}List", "metadata": {"resourceVersion": rv},
                "items": items}

    # --- watch ----------------------------------------------------------------------------------------

    def _watch(self, res: Resource, ns: str, query: dict[str, str]) -> None:
        rest, store = self.api.rest, self.api.store
        match = rest.matcher(res, query.get("labelSelector", ""), query.get("fieldSelector", ""))
        start = query.get("resourceVersion", "")
        if start not in ("", "0") and not start.isdigit():
            raise ApiError(400, "BadRequest", f'invalid resource version "{start}"')
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        initial_events = query.get("sendInitialEvents") in ("true", "1")
        if initial_events and not (bookmarks and query.get("resourceVersionMatch") == "NotOlderThan"):
            raise ApiError(422, "Invalid", "sendInitialEvents requires allowWatchBookmarks=true and "
                                           "resourceVersionMatch=NotOlderThan")
        if query.get("resourceVersionMatch") and not initial_events:
            raise ApiError(422, "Invalid", "resourceVersionMatch is forbidden for watch unless sendInitialEvents "
                                           "is provided")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def in_scope(obj: dict[str, Any]) -> bool:
            return not ns or obj["metadata"].get("namespace") == ns

        if start in ("", "0") or initial_events:
            with store.cond:
                last = store.rv
                current = [o for o in store.items(res.key, ns or None) if match(o)]
            initial = [("ADDED", rest.output(res, o)) for o in current]
            if initial_events:  # the streaming list ends with a bookmark that says so
                initial.append(("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version, "metadata": {
                    "resourceVersion": str(last), "annotations": {"k8s.io/initial-events-end": "true"}}}))
        else:
            last, initial = int(start), []
        if not self._emit(res, initial):
            return
        next_bookmark = time.monotonic() + self.api.bookmark_interval_s
        while time.monotonic() < deadline:
            with store.cond:
                if store.closed:
                    break
                try:
                    events = store.events_after(res.key, last)
                except api_store.Expired as exc:
                    self._emit(res, [("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                                "status": "Failure", "message": str(exc), "reason": "Expired",
                                                "code": 410})])
                    break
                synced = store.rv
                if not events and time.monotonic() < next_bookmark:
                    store.cond.wait(max(0.0, min(next_bookmark, deadline) - time.monotonic()))
                    continue
            out = []
            for event in events:
                last = event.rv
                was = event.old is not None and in_scope(event.old) and match(event.old)
                if in_scope(event.obj) and match(event.obj):
                    entered = event.type == "MODIFIED" and not was
                    out.append(("ADDED" if entered else event.type, rest.output(res, event.obj)))
                elif event.type == "MODIFIED" and was:
                    out.append(("DELETED", rest.output(res, event.obj)))  # it left the selection
            if bookmarks and time.monotonic() >= next_bookmark and not events:
                last = max(last, synced)
                out.append(("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                         "metadata": {"resourceVersion": str(last)}}))
            if time.monotonic() >= next_bookmark:
                next_bookmark = time.monotonic() + self.api.bookmark_interval_s
            if not self._emit(res, out):
                return
        with contextlib.suppress(OSError, ssl.SSLError):
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        self.close_connection = True

    def _emit(self, res: Resource, events: list[tuple[str, dict[str, Any]]]) -> bool:
        """Write events, one JSON line per chunk; False once the client has gone."""
        table = self._accept() == "Table"
        try:
            for kind, obj in events:
                if table and kind in ("ADDED", "MODIFIED", "DELETED"):
                    obj = api_select.table([obj], list(res.columns) if res.columns is not None else None,
                                           res.plural, "Metadata", obj["metadata"]["resourceVersion"])
                line = json.dumps({"type": kind, "object": obj}, allow_nan=False).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()
            return True
        except (OSError, ssl.SSLError):
            self.close_connection = True
            return False


@contextlib.contextmanager
def serving(**kwargs: Any) -> Iterator[APIServer]:
    """`with serving(tls=True) as server:` — an APIServer started and stopped around the block."""
    with APIServer(**kwargs) as server:
        yield server


