"""The test API server refuses what kube-apiserver refuses and keeps its object semantics.

Each test talks to a real `APIServer` on port 0 the way the controller does (the official client through
`a2c.controller.kube.Kube`), or runs the real `kubectl` binary against it.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client

from a2c.controller import kube
from tests.cluster import api_patch, api_schema, api_select
from tests.cluster.apiserver import APIServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "deploy" / "helm" / "files" / "a2cjob-crd.yaml"
JOBS = "/apis/a2c.dev/v1alpha1/namespaces/default/a2cjobs"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_PATH.read_text()))


def job(name: str = "cartpole") -> dict[str, Any]:
    obj = dict(yaml.safe_load((ROOT / "examples" / "cartpole.yaml").read_text()))
    obj["metadata"] = {"name": name, "namespace": "default"}
    return obj


def configmap(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default", **extra},
            "data": {"k": "v"}}


def connect(server: APIServer, token: str | None = None) -> kube.Kube:
    return kube.Kube(client.ApiClient(server.client_configuration(token)), timeout_s=5.0)


@pytest.fixture
def server() -> Iterator[APIServer]:
    with APIServer(bookmark_interval_s=0.2) as srv:
        yield srv


@pytest.fixture
def api(server: APIServer) -> kube.Kube:
    return connect(server)


@pytest.fixture
def jobs(server: APIServer, api: kube.Kube) -> kube.Kube:
    """`api` with the A2CJob CRD installed."""
    api.request("POST", CRDS, body=crd())
    return api


def status_of(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(client.ApiException) as info:
        call()
    return info.value.status, json.loads(info.value.body or "{}")


def raw(server: APIServer, method: str, path: str, body: bytes, content_type: str = "application/json") -> Any:
    """A request with a hand-written body (the client would not send NaN)."""
    import urllib.error
    import urllib.request
    request = urllib.request.Request(server.url + path, data=body, method=method,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# --- JSON and decoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_non_strict_json_is_a_bad_request(server: APIServer, api: kube.Kube, text: str) -> None:
    body = json.dumps(configmap("x")).replace('"v"', text).encode()
    code, status = raw(server, "POST", "/api/v1/namespaces/default/configmaps", body)
    assert (code, status["reason"], status["kind"]) == (400, "BadRequest", "Status")
    assert server.objects("v1", "ConfigMap", "default") == []


def test_trailing_garbage_is_a_bad_request(server: APIServer) -> None:
    code, _ = raw(server, "POST", "/api/v1/namespaces/default/configmaps", json.dumps(configmap("x")).encode() + b"}")
    assert code == 400


def test_unknown_field_of_a_builtin_kind_is_refused(server: APIServer, api: kube.Kube) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "busybox:1", "foo": 1}]}}
    code, status = status_of(lambda: api.request("POST", "/api/v1/namespaces/default/pods", body=pod))
    assert code == 400 and 'unknown field "spec.containers[0].foo"' in status["message"]


def test_wrong_type_of_a_builtin_field_is_refused(api: kube.Kube) -> None:
    sts: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s", "namespace": "default"},
        "spec": {"replicas": "two", "selector": {"matchLabels": {"a": "b"}}, "serviceName": "s",
                    "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c",
                                                                                          "image": "i:1"}]}}}}
    code, status = status_of(lambda: api.request("POST", "/apis/apps/v1/namespaces/default/statefulsets", body=sts))
    assert code == 400 and "spec.replicas" in status["message"]
    sts["spec"]["replicas"] = 2
    api.request("POST", "/apis/apps/v1/namespaces/default/statefulsets", body=sts)


# --- custom resources against the real CRD -----------------------------------------------------------------


def test_custom_resource_is_defaulted_and_pruned(jobs: kube.Kube) -> None:
    body = job()
    body["spec"]["notAField"] = 1
    created = jobs.request("POST", JOBS, body=body)
    assert "notAField" not in created["spec"]
    assert created["spec"]["algorithm"]["gamma"] == 0.99  # a default the example does not set
    assert created["spec"]["trainers"]["replicas"] == 2  # what the example does set stays


def test_custom_resource_unknown_field_under_strict_validation(jobs: kube.Kube) -> None:
    body = job()
    body["spec"]["notAField"] = 1
    code, status = status_of(lambda: jobs.request("POST", JOBS, body=body, query={"fieldValidation": "Strict"}))
    assert code == 400 and 'unknown field "spec.notAField"' in status["message"]


def test_custom_resource_is_validated_against_the_schema(jobs: kube.Kube) -> None:
    body = job()
    body["spec"]["trainers"]["replicas"] = 0
    body["spec"]["imagePullPolicy"] = "Sometimes"
    code, status = status_of(lambda: jobs.request("POST", JOBS, body=body))
    assert code == 422 and status["reason"] == "Invalid"
    assert "spec.trainers.replicas" in status["message"] and "spec.imagePullPolicy" in status["message"]
    fields = {c["field"] for c in status["details"]["causes"]}
    assert {"spec.trainers.replicas", "spec.imagePullPolicy"} <= fields


def test_custom_resource_status_is_validated(jobs: kube.Kube) -> None:
    created = jobs.request("POST", JOBS, body=job())
    code, status = status_of(lambda: jobs.patch_status(created, {"phase": "Exploded"}))
    assert code == 422 and "status.phase" in status["message"]


# --- status subresource, generation, concurrency ------------------------------------------------------------


def test_main_resource_writes_ignore_status_and_status_writes_ignore_the_rest(jobs: kube.Kube) -> None:
    created = jobs.request("POST", JOBS, body={**job(), "status": {"phase": "Running"}})
    assert "status" not in created  # status on create is dropped
    url = f"{JOBS}/cartpole"
    after = jobs.request("PATCH", url, body={"spec": {"image": "a2c:0.2.0"}, "status": {"phase": "Failed"}},
                         content_type="application/merge-patch+json")
    assert after["spec"]["image"] == "a2c:0.2.0" and "status" not in after
    both = {"spec": {"image": "a2c:0.3.0"}, "status": {"phase": "Running"}}
    after = jobs.request("PATCH", url + "/status", body=both, content_type="application/merge-patch+json")
    assert after["spec"]["image"] == "a2c:0.2.0" and after["status"] == {"phase": "Running"}


def test_generation_bumps_only_on_spec_change(jobs: kube.Kube) -> None:
    created = jobs.request("POST", JOBS, body=job())
    assert created["metadata"]["generation"] == 1
    url = f"{JOBS}/cartpole"
    merge = "application/merge-patch+json"
    labelled = jobs.request("PATCH", url, body={"metadata": {"labels": {"a": "b"}}}, content_type=merge)
    assert labelled["metadata"]["generation"] == 1
    jobs.patch_status(created, {"phase": "Running"})
    assert jobs.get("a2c.dev/v1alpha1", "A2CJob", "default", "cartpole")["metadata"]["generation"] == 1
    changed = jobs.request("PATCH", url, body={"spec": {"trainers": {"replicas": 3}}}, content_type=merge)
    assert changed["metadata"]["generation"] == 2


def test_stale_resource_version_is_a_conflict(api: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    first = api.request("POST", url, body=configmap("c"))
    api.request("PUT", f"{url}/c", body={**first, "data": {"k": "new"}})
    code, status = status_of(lambda: api.request("PUT", f"{url}/c", body={**first, "data": {"k": "stale"}}))
    assert code == 409 and status["reason"] == "Conflict"
    stale_patch = {"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}, "data": {"k": "x"}}
    code, _ = status_of(lambda: api.request("PATCH", f"{url}/c", body=stale_patch,
                                            content_type="application/merge-patch+json"))
    assert code == 409
    code, status = status_of(lambda: api.request("POST", url, body=configmap("c")))
    assert code == 409 and status["reason"] == "AlreadyExists"


def test_noop_update_keeps_the_resource_version(api: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    first = api.request("POST", url, body=configmap("c"))
    again = api.request("PATCH", f"{url}/c", body={"data": {"k": "v"}}, content_type="application/merge-patch+json")
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


# --- watches ------------------------------------------------------------------------------------------------


def collect(api: kube.Kube, path: str, query: dict[str, str], until: Any,
            timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """Events of a watch until `until(events)` holds (or the stream ends)."""
    events: list[dict[str, Any]] = []
    response = api.request("GET", path, stream=True, timeout_s=timeout_s, query={"watch": "true", **query})
    try:
        buffer = b""
        for chunk in response.response.stream(1024, decode_content=True):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                events.append(json.loads(line))
            if until(events):
                break
    finally:
        response.response.close()
    return events


def test_watch_from_a_resource_version_replays_only_later_events(api: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    api.request("POST", url, body=configmap("before"))
    mark = api.request("GET", url)["metadata"]["resourceVersion"]
    api.request("POST", url, body=configmap("after"))
    api.request("DELETE", f"{url}/before")
    events = collect(api, url, {"resourceVersion": mark}, lambda ev: len(ev) >= 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "after"),
                                                                              ("DELETED", "before")]


def test_watch_without_resource_version_lists_first_then_streams(api: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    api.request("POST", url, body=configmap("old", labels={"app": "a"}))
    api.request("POST", url, body=configmap("other", labels={"app": "b"}))
    threading.Timer(0.2, lambda: api.request("POST", url, body=configmap("new", labels={"app": "a"}))).start()
    events = collect(api, url, {"labelSelector": "app=a"}, lambda ev: len(ev) >= 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "old"), ("ADDED", "new")]


def test_expired_resource_version_is_410() -> None:
    with APIServer(history=5) as server:
        api = connect(server)
        url = "/api/v1/namespaces/default/configmaps"
        for i in range(10):
            api.request("POST", url, body=configmap(f"c{i}"))
        events = collect(api, url, {"resourceVersion": "1"}, lambda ev: len(ev) >= 1)
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
        assert events[0]["object"]["reason"] == "Expired"


def test_bookmarks_arrive_when_asked_for(server: APIServer, api: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    api.request("POST", url, body=configmap("c"))
    rv = api.request("GET", url)["metadata"]["resourceVersion"]
    events = collect(api, url, {"resourceVersion": rv, "allowWatchBookmarks": "true"},
                     lambda ev: any(e["type"] == "BOOKMARK" for e in ev))
    bookmark = next(e for e in events if e["type"] == "BOOKMARK")
    assert set(bookmark["object"]) == {"kind", "apiVersion", "metadata"}
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) >= int(rv)
    plain = collect(api, url, {"resourceVersion": rv, "timeoutSeconds": "1"}, lambda ev: False)
    assert plain == []  # no bookmarks unless asked, and timeoutSeconds ends the stream


def test_stopping_the_server_ends_watches(server: APIServer, api: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    done = threading.Event()

    def watch() -> None:
        # the server closing the connection mid-stream ends it as well (any other error fails the test)
        with contextlib.suppress(urllib3.exceptions.ProtocolError):
            collect(api, url, {"resourceVersion": "1"}, lambda ev: False, timeout_s=30)
        done.set()
    threading.Thread(target=watch, daemon=True).start()
    server.wait_for(lambda: server.counts()["watch"] == 1)
    server.stop()
    assert done.wait(5), "a watch outlived the server by 5 s"


# --- garbage collection -------------------------------------------------------------------------------------


def owned(name: str, owner: dict[str, Any], **extra: Any) -> dict[str, Any]:
    ref = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
           "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    return configmap(name, ownerReferences=[ref], **extra)


def test_children_outlive_their_owner_by_the_collectors_delay(server: APIServer, jobs: kube.Kube) -> None:
    """Background deletion (the default): the owner goes now, the garbage collector comes a second or more later
    (kube-controller-manager is a separate controller), one level of owners at a time."""
    assert server.gc.delay_s >= 1.0 and server.gc.jitter > 0  # the default every other test runs with
    owner = jobs.request("POST", JOBS, body=job())
    child = jobs.request("POST", "/api/v1/namespaces/default/configmaps", body=owned("child", owner))
    jobs.request("POST", "/api/v1/namespaces/default/configmaps", body=owned("grandchild", child))
    jobs.request("POST", "/api/v1/namespaces/default/configmaps", body=configmap("unowned"))
    deleted = time.monotonic()
    jobs.delete("a2c.dev/v1alpha1", "A2CJob", "default", "cartpole")
    assert server.get("a2c.dev/v1alpha1", "A2CJob", "default", "cartpole") is None
    server.wait_for(lambda: server.get("v1", "ConfigMap", "default", "child") is None, timeout=5)
    assert time.monotonic() - deleted >= server.gc.delay_s
    server.wait_for(lambda: [o["metadata"]["name"] for o in server.objects("v1", "ConfigMap", "default")]
                    == ["unowned"], timeout=5)


def test_orphan_propagation_keeps_children(server: APIServer, jobs: kube.Kube) -> None:
    owner = jobs.request("POST", JOBS, body=job())
    jobs.request("POST", "/api/v1/namespaces/default/configmaps", body=owned("child", owner))
    marked = jobs.request("DELETE", f"{JOBS}/cartpole", body={"propagationPolicy": "Orphan"})
    assert marked["metadata"]["finalizers"] == ["orphan"] and marked["metadata"]["deletionTimestamp"]
    server.wait_for(lambda: server.get("a2c.dev/v1alpha1", "A2CJob", "default", "cartpole") is None, timeout=5)
    child = server.get("v1", "ConfigMap", "default", "child")
    assert child is not None and "ownerReferences" not in child["metadata"]


def test_foreground_deletion_keeps_the_owner_until_its_blocking_dependents_are_gone(server: APIServer,
                                                                                    jobs: kube.Kube) -> None:
    owner = jobs.request("POST", JOBS, body=job())
    cms = "/api/v1/namespaces/default/configmaps"
    jobs.request("POST", cms, body=owned("held", owner, finalizers=["a2c.dev/test"]))  # blocks until released
    jobs.request("POST", cms, body=owned("plain", owner))
    marked = jobs.request("DELETE", f"{JOBS}/cartpole", query={"propagationPolicy": "Foreground"})
    assert marked["metadata"]["finalizers"] == ["foregroundDeletion"] and marked["metadata"]["deletionTimestamp"]
    server.wait_for(lambda: server.get("v1", "ConfigMap", "default", "plain") is None, timeout=5)
    held = server.wait_for(lambda: (server.get("v1", "ConfigMap", "default", "held") or {}).get("metadata", {})
                           .get("deletionTimestamp"), timeout=5)
    assert held
    with pytest.raises(TimeoutError):  # a blocking dependent holds it: it stays
        server.wait_for(lambda: server.get("a2c.dev/v1alpha1", "A2CJob", "default", "cartpole") is None,
                        timeout=2 * server.gc.delay_s * (1 + server.gc.jitter))
    jobs.request("PATCH", f"{cms}/held", body={"metadata": {"finalizers": None}},
                 content_type="application/merge-patch+json")
    server.wait_for(lambda: server.get("a2c.dev/v1alpha1", "A2CJob", "default", "cartpole") is None, timeout=5)


def test_propagation_policy_is_validated(server: APIServer, api: kube.Kube) -> None:
    api.request("POST", "/api/v1/namespaces/default/configmaps", body=configmap("c"))
    code, body = status_of(lambda: api.request("DELETE", "/api/v1/namespaces/default/configmaps/c",
                                               body={"propagationPolicy": "Sometimes"}))
    assert code == 422 and "Unsupported value" in body["message"]
    code, body = status_of(lambda: api.request("DELETE", "/api/v1/namespaces/default/configmaps/c",
                                               body={"propagationPolicy": "Orphan", "orphanDependents": True}))
    assert code == 422 and "cannot be both set" in body["message"]
    assert server.get("v1", "ConfigMap", "default", "c") is not None


def test_finalizers_hold_deletion(server: APIServer, api: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    api.request("POST", url, body=configmap("c", finalizers=["a2c.dev/test"]))
    marked = api.request("DELETE", f"{url}/c")
    assert marked["metadata"]["deletionTimestamp"]
    api.request("PATCH", f"{url}/c", body={"metadata": {"finalizers": None}},
                content_type="application/merge-patch+json")
    assert server.get("v1", "ConfigMap", "default", "c") is None


# --- counting -----------------------------------------------------------------------------------------------


def test_requests_are_counted_by_user_and_verb() -> None:
    with APIServer(anonymous=False) as server:
        server.add_token("t-admin", "admin")
        server.add_token("t-ctl", "system:serviceaccount:default:ctl")
        admin, ctl = connect(server, "t-admin"), connect(server, "t-ctl")
        url = "/api/v1/namespaces/default/configmaps"
        admin.request("POST", url, body=configmap("c"))
        ctl.request("GET", f"{url}/c")
        ctl.request("GET", url)
        ctl.request("PATCH", f"{url}/c", body={"data": {"k": "w"}}, content_type="application/merge-patch+json")
        ctl.delete("v1", "ConfigMap", "default", "c")
        assert server.counts("system:serviceaccount:default:ctl") == {"get": 1, "list": 1, "patch": 1, "delete": 1}
        assert server.counts("admin") == {"create": 1}
        assert server.counts()["get"] == 1
        code, status = status_of(lambda: connect(server).request("GET", url))
        assert code == 401 and status["reason"] == "Unauthorized"
        code, _ = status_of(lambda: connect(server, "wrong").request("GET", url))
        assert code == 401
        server.reset_counts()
        assert server.counts() == {}


# --- RBAC ---------------------------------------------------------------------------------------------------


def test_rbac_allows_what_a_role_grants_and_denies_the_rest() -> None:
    with APIServer(anonymous=False, rbac=True) as server:
        server.add_token("t-admin", "admin")
        server.add_token("t-ctl", "system:serviceaccount:default:ctl")
        admin, ctl = connect(server, "t-admin"), connect(server, "t-ctl")
        admin.request("POST", CRDS, body=crd())
        admin.request("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", body={
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
            "rules": [{"apiGroups": ["a2c.dev"], "resources": ["a2cjobs"], "verbs": ["get", "list", "create"]},
                      {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["mine"]}]})
        admin.request("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", body={
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "ctl", "namespace": "default"}]})
        created = ctl.request("POST", JOBS, body=job())
        assert ctl.list("a2c.dev/v1alpha1", "A2CJob", "default", {})
        code, status = status_of(lambda: ctl.patch_status(created, {"phase": "Running"}))
        assert code == 403 and status["reason"] == "Forbidden"
        assert status["message"] == ('a2cjobs.a2c.dev "cartpole" is forbidden: User "system:serviceaccount:default:ctl"'
                                     ' cannot patch resource "a2cjobs/status" in API group "a2c.dev" in the namespace '
                                     '"default"')
        admin.request("POST", "/api/v1/namespaces/default/configmaps", body=configmap("mine"))
        admin.request("POST", "/api/v1/namespaces/default/configmaps", body=configmap("theirs"))
        assert ctl.get("v1", "ConfigMap", "default", "mine")
        code, _ = status_of(lambda: ctl.get("v1", "ConfigMap", "default", "theirs"))
        assert code == 403
        code, _ = status_of(lambda: ctl.request("GET", "/api/v1/namespaces/kube-system/configmaps"))
        assert code == 403  # a RoleBinding grants in its own namespace only


# --- kubectl ------------------------------------------------------------------------------------------------


def kubectl_binary() -> str | None:
    here = pathlib.Path(sys.executable).parent / "kubectl"
    return str(here) if here.exists() else shutil.which("kubectl")


@pytest.mark.skipif(kubectl_binary() is None, reason="kubectl is not installed")
def test_kubectl_against_the_server(tmp_path: pathlib.Path) -> None:
    with APIServer(tls=True, anonymous=False) as server:
        server.add_token("t-admin", "admin")
        config = server.kubeconfig(tmp_path / "kubeconfig", token="t-admin")

        def kubectl(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
            done = subprocess.run([str(kubectl_binary()), "--kubeconfig", str(config), *args],
                                  capture_output=True, text=True, timeout=60, cwd=tmp_path)
            assert (done.returncode == 0) == ok, done.stderr
            return done

        kubectl("apply", "-f", str(CRD_PATH))
        kubectl("wait", "--for=condition=established", "crd/a2cjobs.a2c.dev", "--timeout=10s")
        kubectl("apply", "-f", str(ROOT / "examples" / "cartpole.yaml"))
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({**job("bad"), "spec": {"notAField": 1}}))
        assert 'unknown field "spec.notAField"' in kubectl("apply", "-f", str(bad), ok=False).stderr
        assert "a2cjobs" in kubectl("api-resources").stdout
        table = kubectl("get", "a2cjobs").stdout
        header = table.splitlines()[0].split()
        columns = [c["name"].upper() for c in crd()["spec"]["versions"][0].get("additionalPrinterColumns", [])]
        assert header[0] == "NAME" and all(c in header for c in columns), table
        assert "cartpole" in table
        assert "No resources found" in kubectl("get", "pods").stderr
        cm = tmp_path / "cm.yaml"
        cm.write_text(yaml.safe_dump(configmap("c")))
        kubectl("apply", "-f", str(cm))
        cm.write_text(yaml.safe_dump({**configmap("c"), "data": {"other": "v"}}))
        kubectl("apply", "-f", str(cm))  # a strategic merge patch that also removes the old key
        assert (server.get("v1", "ConfigMap", "default", "c") or {}).get("data") == {"other": "v"}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
               "spec": {"containers": [{"name": "c", "image": "i:1"}]}}
        server.create(pod)
        pods = kubectl("get", "pods").stdout.splitlines()
        assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and pods[1].split()[:4] == [
            "p", "0/1", "Pending", "0"]
        live = server.get("a2c.dev/v1alpha1", "A2CJob", "default", "cartpole")
        assert live is not None
        connect(server, "t-admin").event(live, "Normal", "Started", "trainers are up", "2026-01-01T00:00:00Z")
        described = kubectl("describe", "a2cjob", "cartpole").stdout
        assert "Started" in described and "trainers are up" in described
        kubectl("delete", "a2cjob", "cartpole", "--timeout=30s")
        assert server.get("a2c.dev/v1alpha1", "A2CJob", "default", "cartpole") is None


def _kubectl_server(tmp_path: pathlib.Path) -> tuple[APIServer, Any]:
    server = APIServer(tls=True, anonymous=False).start()
    server.add_token("t-admin", "admin")
    config = server.kubeconfig(tmp_path / "kubeconfig", token="t-admin")

    def kubectl(*args: str) -> str:
        done = subprocess.run([str(kubectl_binary()), "--kubeconfig", str(config), *args],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout
    return server, kubectl


@pytest.mark.skipif(kubectl_binary() is None, reason="kubectl is not installed")
def test_kubectl_delete_cascade_foreground_background_orphan(tmp_path: pathlib.Path) -> None:
    server, kubectl = _kubectl_server(tmp_path)
    try:
        server.create(crd())
        for cascade in ("foreground", "background", "orphan"):
            owner = server.create(job())
            server.create(owned("child", owner))
            kubectl("delete", "a2cjob", "cartpole", f"--cascade={cascade}", "--timeout=30s")  # waits for the owner
            child = server.get("v1", "ConfigMap", "default", "child")
            if cascade == "foreground":  # the owner went after its child
                assert child is None
            elif cascade == "background":  # the owner went first; the collector comes later
                assert child is not None and child["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
                server.wait_for(lambda: server.get("v1", "ConfigMap", "default", "child") is None, timeout=5)
            else:
                assert child is not None and "ownerReferences" not in child["metadata"]
                kubectl("delete", "configmap", "child")
            deletes = [e for e in server.store.history if e.type == "DELETED"]
            assert [e.obj["metadata"]["name"] for e in deletes[-2:]] in (["child", "cartpole"], ["cartpole", "child"])
            requests = [r for r in server.requests() if r.verb == "delete" and r.resource == "a2cjobs"]
            assert requests[-1].code == 200
    finally:
        server.stop()


@pytest.mark.skipif(kubectl_binary() is None, reason="kubectl is not installed")
def test_kubectl_get_prints_the_columns_of_the_real_server(tmp_path: pathlib.Path) -> None:
    """events, PVCs, StatefulSets, Services as `kubectl get` shows them from kube-apiserver's Table."""
    server, kubectl = _kubectl_server(tmp_path)
    try:
        server.create({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "cp-trainer", "namespace": "default"},
                       "spec": {"clusterIP": "None", "selector": {"app": "cp"},
                                "ports": [{"name": "grpc", "port": 50051}, {"name": "ddp", "port": 29500}]}})
        server.create({"apiVersion": "apps/v1", "kind": "StatefulSet",
                       "metadata": {"name": "cp-trainer", "namespace": "default"},
                       "spec": {"replicas": 2, "serviceName": "cp-trainer", "selector": {"matchLabels": {"app": "cp"}},
                                "template": {"metadata": {"labels": {"app": "cp"}}, "spec": {"containers": [
                                    {"name": "trainer", "image": "a2c:0.1.0"}]}}}})
        server.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": "checkpoints-cp-trainer-0", "namespace": "default"},
                       "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
        server.create(crd())
        connect(server, "t-admin").event(server.create(job()), "Warning", "GangRestart", "cp-trainer-1 vanished",
                                         "2026-01-01T00:00:00Z")
        svc = kubectl("get", "services").splitlines()
        assert svc[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], svc
        assert svc[1].split()[:5] == ["cp-trainer", "ClusterIP", "None", "<none>", "50051/TCP,29500/TCP"], svc
        assert kubectl("get", "services", "-o", "wide").splitlines()[1].split()[-1] == "app=cp"
        sts = kubectl("get", "statefulsets", "-o", "wide").splitlines()
        assert sts[0].split() == ["NAME", "READY", "AGE", "CONTAINERS", "IMAGES"], sts
        assert sts[1].split()[:2] == ["cp-trainer", "0/2"] and sts[1].split()[-2:] == ["trainer", "a2c:0.1.0"], sts
        pvc = kubectl("get", "pvc").splitlines()
        assert pvc[0].split() == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS", "MODES", "STORAGECLASS",
                                  "VOLUMEATTRIBUTESCLASS", "AGE"], pvc
        assert pvc[1].split()[:2] == ["checkpoints-cp-trainer-0", "Pending"], pvc
        events = kubectl("get", "events").splitlines()
        assert events[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], events
        assert events[1].split()[1:] == ["Warning", "GangRestart", "a2cjob/cartpole", "cp-trainer-1", "vanished"]
    finally:
        server.stop()


# --- more of what the real server refuses ---------------------------------------------------------------


RULES_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.dev"},
    "spec": {"group": "test.dev", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "properties": {"spec": {
                     "type": "object",
                     "x-kubernetes-validations": [
                         {"rule": "self.min <= self.max", "message": "min must not exceed max"},
                         {"rule": "self.size == oldSelf.size", "message": "size is immutable"},
                         {"rule": "!has(self.tags) || self.tags.size() < 3", "message": "at most two tags"}],
                     "properties": {"min": {"type": "integer"}, "max": {"type": "integer"},
                                    "size": {"type": "string", "default": "small"},
                                    "tags": {"type": "array", "items": {"type": "string"}}}}}}}}]}}


@pytest.mark.skipif(not api_schema.CEL_AVAILABLE, reason="no CEL library (cel-python) installed")
def test_cel_rules_of_a_crd_are_enforced(api: kube.Kube) -> None:
    api.request("POST", CRDS, body=RULES_CRD)
    url = "/apis/test.dev/v1/namespaces/default/widgets"

    def widget(**spec: Any) -> dict[str, Any]:
        return {"apiVersion": "test.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}
    code, status = status_of(lambda: api.request("POST", url, body=widget(min=3, max=1)))
    assert code == 422 and "spec: Invalid value: \"object\": min must not exceed max" in status["message"]
    code, status = status_of(lambda: api.request("POST", url, body=widget(min=1, max=3, tags=["a", "b", "c"])))
    assert code == 422 and "at most two tags" in status["message"]
    created = api.request("POST", url, body=widget(min=1, max=3))
    assert created["spec"]["size"] == "small"  # defaulted before the rules ran
    code, status = status_of(lambda: api.request("PATCH", f"{url}/w", body={"spec": {"size": "large"}},
                                                 content_type="application/merge-patch+json"))
    assert code == 422 and "size is immutable" in status["message"]  # a transition rule sees oldSelf
    api.request("PATCH", f"{url}/w", body={"spec": {"max": 4}}, content_type="application/merge-patch+json")


def test_a_crd_that_is_not_structural_is_refused(api: kube.Kube) -> None:
    bad = json.loads(json.dumps(RULES_CRD))
    del bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["min"]["type"]
    code, status = status_of(lambda: api.request("POST", CRDS, body=bad))
    assert code == 422 and "properties[min].type: Required value" in status["message"]


def test_strategic_merge_patch_merges_containers_by_name(api: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/pods"
    api.request("POST", url, body={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                       {"name": "b", "image": "b:1"}]}})
    patched = api.request("PATCH", f"{url}/p", content_type="application/strategic-merge-patch+json",
                          body={"spec": {"containers": [{"name": "b", "image": "b:2"}]},
                                "metadata": {"labels": {"x": "y"}}})
    images = {c["name"]: c["image"] for c in patched["spec"]["containers"]}
    assert images == {"a": "a:1", "b": "b:2"} and patched["spec"]["containers"][0]["env"] == [{"name": "X",
                                                                                               "value": "1"}]
    code, status = status_of(lambda: api.request(
        "PATCH", f"{url}/p", content_type="application/strategic-merge-patch+json",
        body={"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}))
    assert code == 422 and "pod updates may not change fields" in status["message"]  # pods are mostly immutable


def test_strategic_merge_directives(api: kube.Kube, jobs: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    api.request("POST", url, body=configmap("c", labels={"a": "1", "b": "2"}, finalizers=["x/a", "x/b"]))
    patched = api.request("PATCH", f"{url}/c", content_type="application/strategic-merge-patch+json", body={
        "metadata": {"labels": {"$patch": "replace", "c": "3"}, "$deleteFromPrimitiveList/finalizers": ["x/a"]}})
    assert patched["metadata"]["labels"] == {"c": "3"} and patched["metadata"]["finalizers"] == ["x/b"]
    jobs.request("POST", JOBS, body=job())
    code, _ = status_of(lambda: jobs.request("PATCH", f"{JOBS}/cartpole", body={"spec": {}},
                                             content_type="application/strategic-merge-patch+json"))
    assert code == 415  # custom resources take no strategic merge patch


def test_json_patch(api: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    api.request("POST", url, body=configmap("c"))
    patched = api.request("PATCH", f"{url}/c", content_type="application/json-patch+json", body=[
        {"op": "test", "path": "/data/k", "value": "v"}, {"op": "add", "path": "/data/n", "value": "1"},
        {"op": "remove", "path": "/data/k"}])
    assert patched["data"] == {"n": "1"}
    code, _ = status_of(lambda: api.request("PATCH", f"{url}/c", content_type="application/json-patch+json",
                                            body=[{"op": "test", "path": "/data/n", "value": "2"}]))
    assert code == 422


def test_selectors(api: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    for name, tier in (("a", "web"), ("b", "db"), ("c", None)):
        api.request("POST", url, body=configmap(name, **({"labels": {"tier": tier}} if tier else {})))

    def names(**query: str) -> list[str]:
        return [o["metadata"]["name"] for o in api.request("GET", url, query=query)["items"]]
    assert names(labelSelector="tier in (web,db)") == ["a", "b"]
    assert names(labelSelector="tier notin (web)") == ["b", "c"]
    assert names(labelSelector="!tier") == ["c"]
    assert names(labelSelector="tier,tier!=db") == ["a"]
    assert names(fieldSelector="metadata.name=b") == ["b"]
    code, status = status_of(lambda: names(fieldSelector="data.k=v"))
    assert code == 400 and "field label not supported: data.k" in status["message"]
    code, _ = status_of(lambda: names(labelSelector="tier in (web"))
    assert code == 400


def test_watch_follows_objects_into_and_out_of_a_selection(api: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    api.request("POST", url, body=configmap("c"))
    rv = api.request("GET", url)["metadata"]["resourceVersion"]
    merge = "application/merge-patch+json"
    api.request("PATCH", f"{url}/c", body={"metadata": {"labels": {"app": "a"}}}, content_type=merge)
    api.request("PATCH", f"{url}/c", body={"metadata": {"labels": {"app": "b"}}}, content_type=merge)
    events = collect(api, url, {"resourceVersion": rv, "labelSelector": "app=a"}, lambda ev: len(ev) >= 2)
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]


def test_namespaces_must_exist_and_take_their_contents_along(server: APIServer, api: kube.Kube) -> None:
    body = configmap("c")
    body["metadata"].pop("namespace")
    code, status = raw(server, "POST", "/api/v1/namespaces/ml/configmaps", json.dumps(body).encode())
    assert code == 404 and status["message"] == 'namespaces "ml" not found'
    api.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": "ml"}})
    assert server.get("v1", "ServiceAccount", "ml", "default") is not None  # as the serviceaccount controller does
    api.request("POST", "/api/v1/namespaces/ml/configmaps", body=body)
    api.request("DELETE", "/api/v1/namespaces/ml")
    assert server.objects("v1", "ConfigMap", "ml") == [] and server.get("v1", "Namespace", "", "ml") is None


def test_deletecollection_by_label(server: APIServer, api: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    for name, app in (("a", "x"), ("b", "x"), ("c", "y")):
        api.request("POST", url, body=configmap(name, labels={"app": app}))
    api.request("DELETE", url, query={"labelSelector": "app=x"})
    assert [o["metadata"]["name"] for o in server.objects("v1", "ConfigMap", "default")] == ["c"]
    assert server.counts()["deletecollection"] == 1


def test_pods_need_their_service_account(api: kube.Kube) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"serviceAccountName": "ctl", "containers": [{"name": "c", "image": "i:1"}]}}
    code, status = status_of(lambda: api.request("POST", "/api/v1/namespaces/default/pods", body=pod))
    assert code == 403 and 'serviceaccount "ctl" not found' in status["message"]
    api.request("POST", "/api/v1/namespaces/default/serviceaccounts",
                body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ctl"}})
    created = api.request("POST", "/api/v1/namespaces/default/pods", body=pod)
    assert created["status"]["phase"] == "Pending" and created["spec"]["restartPolicy"] == "Always"


def statefulset(name: str, labels: dict[str, str], template_labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"serviceName": name, "replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": template_labels},
                                  "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}}


def test_statefulset_rules(api: kube.Kube) -> None:
    url = "/apis/apps/v1/namespaces/default/statefulsets"
    code, status = status_of(lambda: api.request("POST", url, body=statefulset("s", {"a": "1"}, {"a": "2"})))
    assert code == 422 and "`selector` does not match template `labels`" in status["message"]
    api.request("POST", url, body=statefulset("s", {"a": "1"}, {"a": "1"}))
    merge = "application/merge-patch+json"
    api.request("PATCH", f"{url}/s", body={"spec": {"replicas": 3}}, content_type=merge)
    code, status = status_of(lambda: api.request("PATCH", f"{url}/s", body={"spec": {"serviceName": "t"}},
                                                 content_type=merge))
    assert code == 422 and "updates to statefulset spec for fields other than" in status["message"]


def test_names_and_labels_are_validated(api: kube.Kube) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    code, status = status_of(lambda: api.request("POST", url, body=configmap("Not_A_Name")))
    assert code == 422 and "metadata.name" in status["message"]
    code, status = status_of(lambda: api.request("POST", url, body=configmap("c", labels={"a": "x" * 64})))
    assert code == 422 and "metadata.labels" in status["message"]
    made = api.request("POST", url, body=configmap("", generateName="gen-"))
    assert made["metadata"]["name"].startswith("gen-") and len(made["metadata"]["name"]) == 9


def test_in_cluster_credentials_over_tls(tmp_path: pathlib.Path) -> None:
    from kubernetes.config import incluster_config
    with APIServer(tls=True, anonymous=False) as server:
        server.add_token("pod-token", "system:serviceaccount:default:ctl")
        folder = server.serviceaccount_dir(tmp_path / "sa", "pod-token", "default")
        cfg = client.Configuration()
        incluster_config.InClusterConfigLoader(
            token_filename=str(folder / "token"), cert_filename=str(folder / "ca.crt"),
            environ={"KUBERNETES_SERVICE_HOST": server.host, "KUBERNETES_SERVICE_PORT": str(server.port)},
        ).load_and_set(cfg)
        api = kube.Kube(client.ApiClient(cfg), timeout_s=5.0)
        assert api.request("GET", "/api/v1/namespaces/default/configmaps")["items"] == []
        assert server.counts("system:serviceaccount:default:ctl") == {"list": 1}


def test_custom_resources_take_no_unconditional_put(jobs: kube.Kube) -> None:
    created = jobs.request("POST", JOBS, body=job())
    del created["metadata"]["resourceVersion"]
    code, status = status_of(lambda: jobs.request("PUT", f"{JOBS}/cartpole", body=created))
    assert code == 422 and "metadata.resourceVersion" in status["message"]


def test_timestamps_and_quantities_must_parse(api: kube.Kube) -> None:
    event: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "reason": "R", "message": "m",
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "firstTimestamp": "yesterday"}
    code, status = status_of(lambda: api.request("POST", "/api/v1/namespaces/default/events", body=event))
    assert code == 400 and "parsing time" in status["message"]
    event["firstTimestamp"] = "2026-01-01T00:00:00Z"
    event["involvedObject"]["namespace"] = "elsewhere"
    code, status = status_of(lambda: api.request("POST", "/api/v1/namespaces/default/events", body=event))
    assert code == 422 and "does not match event.namespace" in status["message"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "i:1", "resources": {"requests": {"cpu": "lots"}}}]}}
    code, status = status_of(lambda: api.request("POST", "/api/v1/namespaces/default/pods", body=pod))
    assert code == 400 and "quantities must match" in status["message"]


# --- the pure parts -----------------------------------------------------------------------------------------


def test_strategic_merge_order_and_retain_keys() -> None:
    pod = {"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}],
                    "volumes": [{"name": "v", "emptyDir": {}}]}}
    patch = {"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}],
                      "containers": [{"name": "c", "image": "c:1"}],
                      "volumes": [{"name": "v", "$retainKeys": ["name", "configMap"], "configMap": {"name": "m"}}]}}
    out = api_patch.strategic_merge(pod, patch, {"$ref": "#/$defs/io.k8s.api.core.v1.Pod"}, api_schema.resolve)
    assert [c["name"] for c in out["spec"]["containers"]] == ["c", "b", "a"]
    assert out["spec"]["volumes"] == [{"name": "v", "configMap": {"name": "m"}}]


def test_printer_column_jsonpath() -> None:
    obj = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"},
                                                          {"type": "Other", "status": "False"}]}}
    assert api_select.jsonpath(obj, ".status.phase") == ["Running"]
    assert api_select.jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert api_select.jsonpath(obj, "{.status.conditions[*].type}") == ["Ready", "Other"]
    assert api_select.jsonpath(obj, ".status.missing") == []
