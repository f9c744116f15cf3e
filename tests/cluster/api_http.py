"""The HTTP side of the test API server: routing, authentication, RBAC, bodies, watch streaming.

One `Handler` per connection (a thread each, HTTP/1.1 keep-alive). A request is authenticated (bearer
token, or anonymous when allowed), routed to a resource and a verb as kube-apiserver's request-info
resolver does, counted, authorized, then served by `api_rest`; a watch is streamed here from the store's
event history, one JSON object per chunk.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from tests.cluster import api_kinds, api_rbac, api_select, api_store
from tests.cluster.api_kinds import Resource
from tests.cluster.api_rest import ApiError

if TYPE_CHECKING:
    from tests.cluster.apiserver import APIServer

VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0", "gitCommit": "test", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25", "compiler": "gc", "platform": "linux/amd64"}


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


class Handler(BaseHTTPRequestHandler):
    api: APIServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.api.track_connection(self.connection, True)

    def finish(self) -> None:
        self.api.track_connection(self.connection, False)
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
                self.api.record_request(user, "get", url.path, "", "", 200)
                return self._send(200, self._non_resource(parts))
            res, ns, name, sub, verb = route
            target = (res.plural + (f"/{sub}" if sub else ""), ns, name)
            self._authorize(user, verb, res, target)
            if verb == "watch":
                self.api.record_request(user, verb, *target, 200)
                return self._watch(res, ns, query)
            code, body = self._dispatch(res, ns, name, sub, verb, raw, query)
        except _Reply as reply:
            code, body = reply.code, reply.body
        except ApiError as err:
            code, body = err.code, err.status()
        if user:
            self.api.record_request(user, verb, *target, code)
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
