"""The test node's container runtime: pods as podman containers of the built image, as the kubelet runs them.

Each test runs pods from the image deploy/image/build.sh builds (`a2c:<version>`) on a node with
runtime="container", and checks what a cluster would enforce and the process runtime cannot: the security
context (read-only root, uid 10001, no capabilities, no privilege escalation), fsGroup on volumes, the
image's ENTRYPOINT, memory limits (an OOM kill is reported as OOMKilled, exit 137), signals through the
runtime. The `host_untouched` fixture checks that a node leaves nothing behind: no container, namespace,
link or bridge of its run, no iptables rule, ip_forward as it was.

Without the image, or with one built from other source than the checkout's: skipped locally with how to build
it; failed where A2C_TEST_RUNTIME=container (CI), which promises the image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import netns, node, node_api, node_container
from tests.cluster.apiserver import APIServer

Obj = dict[str, Any]
NS = "default"
ROOT = Path(__file__).resolve().parents[2]
VERSION = next(line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines()
               if line.startswith("version = "))
IMAGE = f"a2c:{VERSION}"
# The chart's and the controller's security context (deploy/helm/values.yaml, a2c/controller/resources.py).
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}


def require_image() -> None:
    node.require_root()
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    label = "" if missing else subprocess.run(
        ["podman", "image", "inspect", "--format", f'{{{{index .Labels "{node_container.SOURCE_LABEL}"}}}}', IMAGE],
        capture_output=True, text=True).stdout.strip()
    if label == node_container.source_digest():
        return
    why = f"{IMAGE} was built from other source than this checkout's" if label else \
        f"no {IMAGE} from deploy/image/build.sh in podman's store" + (f" ({', '.join(missing)} missing)" if missing
                                                                      else "")
    why += ": deploy/image/build.sh builds it"
    if os.environ.get(node_container.RUNTIME_ENV) == "container":
        pytest.fail(f"{node_container.RUNTIME_ENV}=container but {why}")
    pytest.skip(why)


def host_state(run: str | None = None) -> Obj:
    """What a node run could leave on the host: its containers, namespaces and links; podman's bridges;
    the firewall; ip_forward."""
    links = [line.split(":")[1].strip().split("@")[0]
             for line in netns.ip("-o", "link", "show").stdout.splitlines()]
    firewall = ""
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            out = subprocess.run([tool], capture_output=True, text=True).stdout
            firewall += "\n".join(line for line in out.splitlines() if not line.startswith("#"))
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        forward = f.read().strip()
    state: Obj = {"ip_forward": forward, "firewall": firewall,
                  "podman_bridges": sorted(n for n in links if n.startswith(("podman", "cni-podman")))}
    if run:
        state["containers"] = subprocess.run(
            ["podman", "ps", "--all", "--filter", f"label={node_container.LABEL}={run}", "--format", "{{.Names}}"],
            capture_output=True, text=True).stdout.split()
        state["netns"] = [n for n in netns.ip("netns", "list").stdout.split() if run in n]
        state["links"] = [n for n in links if run in n]
    return state


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[APIServer, node.Node, node_api.Api]]:
    require_image()
    before = host_state()
    with APIServer(tls=True) as api:
        (tmp_path / "ca.crt").write_bytes(api.ca_pem)
        api.add_token("admin-token", "test:admin")
        admin = node_api.Api(api.url, "admin-token", str(tmp_path / "ca.crt"))
        n = node.Node(api.url, ca_pem=api.ca_pem.decode(), add_token=api.add_token, runtime="container")
        with n:
            assert n.net is not None
            run = n.net.run
            yield api, n, admin
        assert not n.errors, n.errors
    after = host_state(run)
    assert after == {**before, "containers": [], "netns": [], "links": []}, (before, after)


def pod(name: str, *containers: Obj, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"containers": list(containers), "terminationGracePeriodSeconds": 2, **spec}}


def statuses(api: APIServer, name: str) -> dict[str, Obj]:
    found = (api.get("v1", "Pod", NS, name) or {}).get("status") or {}
    return {c["name"]: c for c in found.get("containerStatuses") or []}


def terminated(api: APIServer, name: str, container: str) -> Obj | None:
    return (statuses(api, name).get(container, {}).get("state") or {}).get("terminated")


INSPECT = textwrap.dedent("""
    import json, os, socket
    out = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups())}
    with open("/proc/self/status") as f:
        out.update(line.split(":\\t") for line in f.read().splitlines()
                   if line.startswith(("Cap", "NoNewPrivs")))
    for path in ("/root-write", "/tmp/ok", "/data/ok"):
        try:
            with open(path, "w") as f:
                f.write("x")
            out[path] = "written"
        except OSError as exc:
            out[path] = exc.strerror
    out["data_gid"] = os.stat("/data/ok").st_gid if out["/data/ok"] == "written" else None
    out["config"] = open("/config/greeting").read()
    out["secret"] = open("/secret/key").read()
    out["token"] = bool(open("/var/run/secrets/kubernetes.io/serviceaccount/token").read())
    out["env"] = os.environ.get("GREETING")
    out["hostname"] = socket.gethostname()
    out["own_name_in_hosts"] = any(socket.gethostname() in line.split()[1:] for line in open("/etc/hosts"))
    print(json.dumps(out), flush=True)
    with open("/dev/termination-log", "w") as f:
        f.write("inspected")
    raise SystemExit(3)
""")


def test_security_context_volumes_env_and_the_images_entrypoint(cluster: tuple[APIServer, node.Node,
                                                                              node_api.Api]) -> None:
    api, n, _ = cluster
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": NS},
                "data": {"greeting": "hello"}})
    api.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec", "namespace": NS},
                "stringData": {"key": "s3cret"}})
    api.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": NS},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    inspect = {"name": "inspect", "image": IMAGE, "command": ["python3", "-c", INSPECT],
               "env": [{"name": "GREETING", "value": "hi"}], "securityContext": CONTAINER_SECURITY,
               "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
               "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "data", "mountPath": "/data"},
                                {"name": "cfg", "mountPath": "/config"}, {"name": "sec", "mountPath": "/secret"}]}
    # no `command`: the image's ENTRYPOINT (a2c) runs with `args` in place of its CMD
    entry = {"name": "entry", "image": IMAGE, "args": ["--help"], "securityContext": CONTAINER_SECURITY}
    volumes = [{"name": "tmp", "emptyDir": {}}, {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
               {"name": "cfg", "configMap": {"name": "cfg"}},
               {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o440}}]
    api.create(pod("sec", inspect, entry, restartPolicy="Never", securityContext=POD_SECURITY, volumes=volumes))
    n.wait(lambda: terminated(api, "sec", "inspect") and terminated(api, "sec", "entry"), 90,
           "both containers to end")
    ended = terminated(api, "sec", "inspect")
    assert ended is not None
    assert (ended["exitCode"], ended["reason"], ended.get("message")) == (3, "Error", "inspected"), ended
    seen = json.loads(n.logs(NS, "sec", "inspect").strip().splitlines()[-1])
    assert (seen["uid"], seen["gid"]) == (10001, 10001) and 10001 in seen["groups"], seen
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(seen[caps], 16) == 0, (caps, seen[caps])
    assert seen["NoNewPrivs"] == "1"
    assert seen["/root-write"] == "Read-only file system", seen
    assert seen["/tmp/ok"] == "written" and seen["/data/ok"] == "written" and seen["data_gid"] == 10001, seen
    assert (seen["config"], seen["secret"], seen["token"], seen["env"]) == ("hello", "s3cret", True, "hi"), seen
    assert seen["hostname"] == "sec" and seen["own_name_in_hosts"], seen
    entry_ended = terminated(api, "sec", "entry")
    assert entry_ended is not None and entry_ended["exitCode"] == 0, entry_ended
    assert "usage: a2c" in n.logs(NS, "sec", "entry"), n.logs(NS, "sec", "entry")


def test_a_container_over_its_memory_limit_is_oom_killed_and_restarted(cluster: tuple[APIServer, node.Node,
                                                                                     node_api.Api]) -> None:
    api, n, _ = cluster
    conmons_file = os.path.join(os.getcwd(), "oom")  # conmon marks an OOM kill with a file in its working dir
    before = os.stat(conmons_file).st_mtime_ns if os.path.exists(conmons_file) else None
    hog = {"name": "hog", "image": IMAGE, "securityContext": CONTAINER_SECURITY,
           "command": ["python3", "-c", "b = bytearray(512 << 20)\nprint('never', flush=True)"],
           "resources": {"limits": {"memory": "64Mi"}}}
    api.create(pod("hog", hog, securityContext=POD_SECURITY))
    status = n.wait(lambda: (s := statuses(api, "hog").get("hog")) and s["restartCount"] >= 1 and s, 90,
                    "the hog to be OOM-killed and restarted")
    last = status["lastState"].get("terminated") or (status["state"] or {}).get("terminated")
    assert last is not None and (last["reason"], last["exitCode"]) == ("OOMKilled", 137), status
    assert "never" not in n.logs(NS, "hog", previous=True)
    after = os.stat(conmons_file).st_mtime_ns if os.path.exists(conmons_file) else None
    assert after == before, "the OOM kill left a file `oom` in the test's working directory"


def test_signals_reach_the_container_and_exec_probes_run_inside(cluster: tuple[APIServer, node.Node,
                                                                              node_api.Api]) -> None:
    api, n, _ = cluster
    code = textwrap.dedent("""
        import signal, sys, time
        def stop(*_):
            print("got SIGTERM", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        open("/tmp/ready", "w").close()
        time.sleep(600)
    """)
    c = {"name": "c", "image": IMAGE, "command": ["python3", "-c", code], "securityContext": CONTAINER_SECURITY,
         "env": [{"name": "A2C_PROBE", "value": "here"}],
         "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
         "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1}}
    api.create(pod("sig", c, restartPolicy="Never", securityContext=POD_SECURITY,
                   volumes=[{"name": "tmp", "emptyDir": {}}]))
    n.wait(lambda: statuses(api, "sig").get("c", {}).get("ready"), 60, "the exec readiness probe to pass")
    pid = n.pid(NS, "sig")  # the container's process itself, as the host sees it
    assert pid is not None and b"A2C_PROBE=here" in Path(f"/proc/{pid}/environ").read_bytes()
    import signal

    n.kill(NS, "sig", signal.SIGTERM)
    ended = n.wait(lambda: terminated(api, "sig", "c"), 30, "the container to stop")
    assert ended["exitCode"] == 0 and "got SIGTERM" in n.logs(NS, "sig"), (ended, n.logs(NS, "sig"))


def test_what_the_kubelet_refuses_to_start(cluster: tuple[APIServer, node.Node, node_api.Api]) -> None:
    api, n, _ = cluster
    root = {"name": "c", "image": IMAGE, "args": ["--help"], "securityContext": {"runAsUser": 0}}
    api.create(pod("root", root, securityContext={"runAsNonRoot": True}))
    missing = {"name": "c", "image": "a2c:no-such-tag", "args": ["--help"]}
    api.create(pod("missing", missing))

    def waiting(name: str) -> Obj | None:
        return (statuses(api, name).get("c", {}).get("state") or {}).get("waiting")

    n.wait(lambda: (waiting("root") or {}).get("reason") == "CreateContainerConfigError"
           and (waiting("missing") or {}).get("reason") == "ErrImageNeverPull", 30, "both pods to be refused")
    assert "runAsNonRoot" in (waiting("root") or {})["message"]
    assert "a2c:no-such-tag" in (waiting("missing") or {})["message"]


def test_sweep_removes_the_containers_of_a_dead_run(tmp_path: Path) -> None:
    """A node killed before stop() leaves its containers running (they do not die with the agent, as processes
    do): the next node's sweep removes those of runs whose lock is gone, and none of a live run."""
    require_image()
    dead = "zzzzz1"  # no lock held: a crashed run
    name = f"a2c-sweep-test-{os.getpid()}"
    engine = node_container.Engine(str(tmp_path), dead)
    started = engine.podman("run", "--detach", "--name", name, "--label", f"{node_container.LABEL}={dead}",
                            "--pull=never", "--network=none", "--entrypoint", '["sleep", "600"]', IMAGE)
    assert started.returncode == 0, started.stderr
    try:
        gone = node.sweep()
        assert f"container {name}" in gone, gone
        assert name not in engine.names()
    finally:
        engine.podman("rm", "--force", "--time", "0", name)


def test_an_image_built_from_other_source_is_refused(cluster: tuple[APIServer, node.Node, node_api.Api],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale image would run code the tests never read: build.sh labels the image with its source's digest,
    and the node refuses an image whose digest is not the checkout's (here: the checkout "changed")."""
    api, n, _ = cluster
    monkeypatch.setattr(node_container, "source_digest", lambda: "0" * 64)
    api.create(pod("stale", {"name": "c", "image": IMAGE, "args": ["--help"]}))
    waiting = n.wait(lambda: (statuses(api, "stale").get("c", {}).get("state") or {}).get("waiting", {}).get(
        "reason") == "ErrImageNeverPull" and statuses(api, "stale")["c"]["state"]["waiting"], 30, "the refusal")
    assert "built from other source" in waiting["message"], waiting
