"""commands.py: `a2c render` prints valid objects, `a2c controller` is wired, and neither pulls in torch."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import kubernetes_validate
import pytest
import yaml

from a2c import cli
from tests.cluster.apiserver import APIServer
from tests.controller.conftest import CONTROLLER, CONTROLLER_TOKEN, NS
from tests.support.procs import free_port, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]


def a2c(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "a2c", *args], cwd=ROOT, input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_render_cartpole_prints_valid_objects() -> None:
    out = a2c("render", "examples/cartpole.yaml")
    assert out.returncode == 0, out.stderr
    objs = list(yaml.safe_load_all(out.stdout))
    assert [o["kind"] for o in objs] == ["ConfigMap", "Service", "StatefulSet", "StatefulSet"]
    for obj in objs:
        for version in ("1.28", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(obj, version, strict=True)
    assert {o["metadata"]["namespace"] for o in objs} == {"default"}


def test_render_refuses_what_is_not_an_a2cjob() -> None:
    out = a2c("render", "-", stdin="apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")
    assert out.returncode == 2 and "not an A2CJob" in out.stderr


def test_commands_are_registered_with_the_cli() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["controller", "--namespace", "ml", "--resync-s", "5"])
    assert (args.namespace, args.resync_s) == ("ml", 5.0) and callable(args.func)
    assert callable(parser.parse_args(["render", "job.yaml"]).func)


def test_the_controller_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "from a2c import cli\n"
        "from a2c.controller import commands, handlers, kube, loop, probe, resources, spec, status\n"
        "cli.build_parser().parse_args(['controller'])\n"
        "commands.render_file(open('examples/cartpole.yaml').read())\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def _controller(kubeconfig: pathlib.Path, pod: str, metrics_port: int, log: pathlib.Path) -> subprocess.Popen[str]:
    """`a2c controller` as the chart runs it: namespaced, leader election on, the pod's name from the downward API."""
    env = {**os.environ, "POD_NAME": pod, "POD_NAMESPACE": NS}
    return subprocess.Popen([sys.executable, "-m", "a2c", "controller", "--kubeconfig", str(kubeconfig), "--namespace",
                             NS, "--metrics-port", str(metrics_port), "--resync-s", "1"], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:  # not listening (yet)
        return 0


def _holder(apiserver: APIServer) -> str:
    lease = apiserver.get("coordination.k8s.io/v1", "Lease", NS, "a2c-controller")
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def test_a2c_controller_runs_against_an_api_server_and_stops_on_sigterm(apiserver: APIServer, admin: Any,
                                                                         tmp_path: pathlib.Path) -> None:
    """The operator's entrypoint as a process, as the chart's ServiceAccount under the chart's Role:
    kubeconfig -> Lease -> watch -> children -> status; /healthz; SIGTERM -> exit 0."""
    from a2c.controller import kube

    kubeconfig = apiserver.kubeconfig(tmp_path / "kubeconfig", CONTROLLER_TOKEN)
    port = free_port()
    proc = _controller(kubeconfig, "ctrl-a", port, tmp_path / "controller.log")
    try:
        admin.request("POST", kube.path("a2c.dev/v1alpha1", "A2CJob", NS), body={
            "apiVersion": "a2c.dev/v1alpha1", "kind": "A2CJob", "spec": {},
            "metadata": {"name": "cp", "namespace": NS}})
        apiserver.wait_for(lambda: len(apiserver.objects("apps/v1", "StatefulSet", NS)) == 2 and
                           "status" in (apiserver.get("a2c.dev/v1alpha1", "A2CJob", NS, "cp") or {}), timeout=60)
        job = apiserver.get("a2c.dev/v1alpha1", "A2CJob", NS, "cp")
        assert job is not None and job["status"]["phase"] == "Pending"  # no trainer pod runs here
        assert _holder(apiserver).startswith("ctrl-a_")
        assert _get(f"http://127.0.0.1:{port}/healthz") == 200
        mine = [r for r in apiserver.requests() if r.user == CONTROLLER]
        refused = [r for r in mine if r.code in (401, 403)]
        assert mine and not refused, refused  # the chart's Role grants every call (404s: GET before create)
        pod_watches = {r.resource for r in mine if r.verb == "watch"}
        assert pod_watches == {"pods", "a2cjobs"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, (tmp_path / "controller.log").read_text()


@pytest.mark.slow
def test_two_replicas_one_leader_and_a_failover(apiserver: APIServer, admin: Any, tmp_path: pathlib.Path) -> None:
    """Two controllers: only the Lease holder acts; the standby is healthy and takes over when the leader dies."""
    from a2c.controller import kube

    kubeconfig = apiserver.kubeconfig(tmp_path / "kubeconfig", CONTROLLER_TOKEN)
    ports = {"ctrl-a": free_port(), "ctrl-b": free_port()}
    procs = {pod: _controller(kubeconfig, pod, port, tmp_path / f"{pod}.log") for pod, port in ports.items()}
    try:
        apiserver.wait_for(lambda: _holder(apiserver), timeout=60)
        leader = _holder(apiserver).split("_")[0]
        standby = next(p for p in procs if p != leader)
        wait_for(lambda: _get(f"http://127.0.0.1:{ports[standby]}/healthz") == 200, 30, "the standby's /healthz")
        assert "leads" not in (tmp_path / f"{standby}.log").read_text()
        procs[leader].kill()  # a node failure: no goodbye, the lease just stops being renewed
        procs[leader].wait(10)
        admin.request("POST", kube.path("a2c.dev/v1alpha1", "A2CJob", NS), body={
            "apiVersion": "a2c.dev/v1alpha1", "kind": "A2CJob", "spec": {},
            "metadata": {"name": "cp", "namespace": NS}})
        apiserver.wait_for(lambda: _holder(apiserver).startswith(standby + "_"), timeout=60)
        apiserver.wait_for(lambda: len(apiserver.objects("apps/v1", "StatefulSet", NS)) == 2, timeout=30)
        assert "leads" in (tmp_path / f"{standby}.log").read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)


def test_healthz_fails_when_the_reconcile_loop_is_stuck(api: Any) -> None:
    """The controller's livenessProbe: a loop stuck in a reconcile (a hung API call, a deadlock) answers 503,
    while /metrics, served by another thread, would still answer."""
    import threading

    from a2c.controller import handlers, loop
    from a2c.observe import metrics

    release = threading.Event()

    class Stuck(handlers.Reconciler):
        def reconcile(self, namespace: str, name: str, poll: bool = True) -> str:
            release.wait(30)
            return "unchanged"

    runner = loop.Loop(Stuck(api), namespace=NS, resync_s=0.2)
    port = metrics.serve(0, "127.0.0.1", checks={"/healthz": lambda: "" if runner.healthy(1.0) else "stuck"})
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        assert _get(f"http://127.0.0.1:{port}/healthz") == 200
        runner.enqueue((NS, "cp"))  # the worker goes into a reconcile that does not come back
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz") == 503, 10, "/healthz to fail")
        assert _get(f"http://127.0.0.1:{port}/metrics") == 200
        release.set()
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz") == 200, 10, "/healthz to recover")
    finally:
        release.set()
        runner.shutdown()
        thread.join(5)
