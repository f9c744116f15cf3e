"""The few Kubernetes API calls the controller makes, as plain dicts over the official client.

Data flow: `handlers` reads jobs and trainer pods, applies rendered children, deletes trainer pods for a
gang restart, patches job status and creates Events, all through `Kube`. Objects stay dicts end to end
(they were rendered as dicts), so the REST paths are built here from apiVersion + kind.

Apply is idempotent without server-side apply: each child carries the JSON it was last applied from
(`a2c.dev/last-applied`); an unchanged child costs one GET, a changed one a JSON merge patch computed
from that annotation, so fields removed from the rendering are removed from the object too. A field someone
edited by hand (`kubectl edit` of a StatefulSet's replicas, its pod template's env, a Service's ports) is set
back on the next pass: every field we render is compared with the live object (what the API server adds or
keeps that we do not render is left alone), and the ones that differ are patched back. It never adopts:
a child whose controller ownerReference names another uid is replaced or waited for (`Kube.apply`).
"""

from __future__ import annotations

import builtins
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client

from a2c.controller import patches
from a2c.controller import spec as jobspec

log = logging.getLogger(__name__)

LAST_APPLIED = "a2c.dev/last-applied"
PLURALS = {
    ("v1", "ConfigMap"): "configmaps", ("v1", "Service"): "services", ("v1", "Pod"): "pods",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims", ("v1", "Event"): "events",
    ("apps/v1", "StatefulSet"): "statefulsets", (jobspec.API_VERSION, jobspec.KIND): jobspec.PLURAL,
    ("scheduling.x-k8s.io/v1alpha1", "PodGroup"): "podgroups",  # the scheduler-plugins' coscheduling
    ("scheduling.volcano.sh/v1beta1", "PodGroup"): "podgroups",
}


CONFLICT = 409


class NotFoundError(Exception):
    pass


class ForeignOwnerError(Exception):
    """A child's name is taken by an object another controller owns."""


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with `controller: true`, if any."""
    return next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


def path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{ns}/{PLURALS[(api_version, kind)]}" + (f"/{name}" if name else "")


class Kube:
    """REST calls through `kubernetes.client.ApiClient` (auth and TLS from the loaded configuration)."""

    def __init__(self, api: client.ApiClient | None = None, timeout_s: float = 10.0) -> None:
        self.api = api or client.ApiClient()
        self.timeout_s = timeout_s

    def request(self, method: str, url: str, body: Any = None, content_type: str = "application/json",
                query: dict[str, str] | None = None, stream: bool = False, timeout_s: float | None = None) -> Any:
        if body is not None:
            # JSON has no NaN or Infinity; the API server answers 400 to them. Refuse here, with the reason.
            json.dumps(body, allow_nan=False, default=str)
        _m, full, headers, payload, _p = self.api.param_serialize(
            method=method, resource_path=url, query_params=query or None, body=body,
            header_params={"Content-Type": content_type, "Accept": "application/json"}, auth_settings=["BearerToken"],
        )
        response = self.api.rest_client.request(method, full, headers=headers, body=payload,
                                                _request_timeout=timeout_s or self.timeout_s)
        if stream and response.status < 400:
            return response
        data = response.read()
        if response.status == 404:
            raise NotFoundError(url)
        if response.status >= 400:
            raise client.ApiException(status=response.status, reason=response.reason, body=data)
        return json.loads(data or b"{}")

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.request("GET", path(api_version, kind, namespace, name)))

    def list(self, api_version: str, kind: str, namespace: str | None, labels: dict[str, str]) -> list[dict[str, Any]]:
        """Objects with all of `labels` (also filtered here: a test server may ignore labelSelector)."""
        return self.list_at(api_version, kind, namespace, labels)[0]

    def list_at(self, api_version: str, kind: str, namespace: str | None,
                labels: dict[str, str]) -> tuple[builtins.list[dict[str, Any]], str]:
        """`list`, and the list's resourceVersion: the point a watch resumes from."""
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        reply = self.request("GET", path(api_version, kind, namespace),
                             query={"labelSelector": selector} if selector else None)
        items = [o for o in reply.get("items") or []
                 if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())]
        return items, str((reply.get("metadata") or {}).get("resourceVersion") or "")

    def apply(self, obj: dict[str, Any]) -> str:
        """Create `obj` or bring it to the rendering; returns 'created', 'patched', 'unchanged', or 'replacing'
        while a namesake left by an earlier owner is still going.

        A child is only ever patched if `obj`'s controller owns it. One controlled by an earlier job of the same
        name (`helm upgrade` deletes the job and creates it again at once, and the garbage collector takes its
        time), or left without an owner by an orphaning delete, is deleted (uid precondition: that object, not a
        successor) and created anew; adopting it would keep what it runs (a StatefulSet's OnDelete pods keep their
        old spec). One controlled by anything else is not ours to touch: ForeignOwnerError."""
        meta = obj["metadata"]
        desired = json.loads(json.dumps(obj))
        desired["metadata"].setdefault("annotations", {})[LAST_APPLIED] = json.dumps(obj, sort_keys=True)
        url = path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        try:
            live = self.request("GET", url)
        except NotFoundError:
            return self._create(obj, desired)
        owner = controller_of(obj)
        if owner is not None and (controller_of(live) or {}).get("uid") != owner["uid"]:
            return self._replace(obj, desired, live, owner)
        last = (live["metadata"].get("annotations") or {}).get(LAST_APPLIED)
        ours = {**obj, "metadata": {k: v for k, v in meta.items() if k != "ownerReferences"}}  # checked above
        drift = patches.restore_patch(ours, live)
        if last == desired["metadata"]["annotations"][LAST_APPLIED]:
            if drift is patches.SAME:
                return "unchanged"
            log.info("%s %s/%s was edited by hand (%s): setting it back", obj["kind"], meta["namespace"],
                     meta["name"], ", ".join(patches.changed_paths(drift)))
        before = json.loads(last) if last else {}
        before.setdefault("metadata", {}).setdefault("annotations", {})[LAST_APPLIED] = last
        patch = patches.merge_patch(before, desired)
        if drift is not patches.SAME:
            patch = patches.overlay(drift, patch)
        self.request("PATCH", url, body=patch, content_type="application/merge-patch+json")
        return "patched"

    def _create(self, obj: dict[str, Any], desired: dict[str, Any]) -> str:
        try:
            self.request("POST", path(obj["apiVersion"], obj["kind"], obj["metadata"]["namespace"]), body=desired)
        except client.ApiException as exc:
            if exc.status == CONFLICT:  # AlreadyExists: the namesake is still being deleted (finalizers)
                return "replacing"
            raise
        return "created"

    def _replace(self, obj: dict[str, Any], desired: dict[str, Any], live: dict[str, Any],
                 owner: dict[str, Any]) -> str:
        meta, theirs = live["metadata"], controller_of(live)
        predecessor = theirs is not None and (theirs.get("kind"), theirs.get("name")) == (owner["kind"], owner["name"])
        labels, ours = meta.get("labels") or {}, obj["metadata"].get("labels") or {}
        abandoned = theirs is None and all(labels.get(k) == v for k, v in ours.items())
        if not (predecessor or abandoned):
            raise ForeignOwnerError(f"{obj['kind']} {meta['name']} exists and is controlled by "
                                    f"{(theirs or {}).get('kind', 'no one')} {(theirs or {}).get('name', '')}".strip())
        if not meta.get("deletionTimestamp"):
            options = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background",
                       "preconditions": {"uid": meta["uid"]}}
            try:
                self.request("DELETE", path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]),
                             body=options)
            except NotFoundError:
                pass  # the garbage collector was first
            except client.ApiException as exc:
                if exc.status != CONFLICT:  # Conflict: the precondition failed, a successor is there already
                    raise
        return self._create(obj, desired)

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete the object (in the background: its dependents go after it); with `uid`, only that object, not a
        namesake created since (409 Conflict from the precondition: nothing to do either)."""
        body = None if uid is None else {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background",
                                         "preconditions": {"uid": uid}}
        try:
            self.request("DELETE", path(api_version, kind, namespace, name), body=body)
        except NotFoundError:
            pass  # already gone is what we wanted
        except client.ApiException as exc:
            if not (uid is not None and exc.status == CONFLICT):
                raise

    def patch_status(self, job: dict[str, Any], status: dict[str, Any]) -> None:
        """Bring the status subresource from what `job` holds to `status` (removed keys are nulled)."""
        meta = job["metadata"]
        url = path(jobspec.API_VERSION, jobspec.KIND, meta["namespace"], meta["name"]) + "/status"
        body = {"status": patches.merge_patch(job.get("status") or {}, status)}
        self.request("PATCH", url, body=body, content_type="application/merge-patch+json")

    def event(self, job: dict[str, Any], type_: str, reason: str, message: str, now: str) -> None:
        """A core/v1 Event about `job` (what `kubectl describe a2cjob` shows)."""
        meta = job["metadata"]
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": jobspec.API_VERSION, "kind": jobspec.KIND, "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid", "")},
            "type": type_, "reason": reason, "message": message[:1024], "count": 1,
            "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "a2c-controller"},
            "reportingComponent": "a2c.dev/controller", "reportingInstance": "a2c-controller",
        }
        self.request("POST", path("v1", "Event", meta["namespace"]), body=event)

    def watch(self, api_version: str, kind: str, namespace: str | None, timeout_s: float, selector: str = "",
              opened: Callable[[Any], None] = lambda _: None, resource_version: str = "") -> Iterator[dict[str, Any]]:
        """Watch events after `resource_version` until the server closes the stream or `timeout_s` passes
        without a byte (bookmarks, asked for, arrive well within it on a quiet watch).

        `opened` gets the raw urllib3 response, so another thread can shut the stream down.
        """
        query = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(max(1, int(timeout_s * 30)))}
        if resource_version:
            query["resourceVersion"] = resource_version
        if selector:
            query["labelSelector"] = selector
        response = self.request("GET", path(api_version, kind, namespace), stream=True, timeout_s=timeout_s,
                                query=query)
        opened(response.response)
        try:
            buffer = b""
            for chunk in response.response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.response.release_conn()
