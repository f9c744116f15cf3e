"""commands.py: `a2c render` prints valid objects, `a2c controller` is wired, and neither pulls in torch."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import kubernetes_validate
import yaml

from a2c import cli

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


def test_a2c_controller_runs_against_an_api_server_and_stops_on_sigterm(kmock_server: Any, tmp_path: Any) -> None:
    """The operator's entrypoint as a process: kubeconfig -> watch -> children -> SIGTERM -> exit 0."""
    from kubernetes import client

    from a2c.controller import kube

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": kmock_server.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "u"}}],
    }))
    api = kube.Kube(client.ApiClient(client.Configuration(host=kmock_server.url)))
    proc = subprocess.Popen([sys.executable, "-m", "a2c", "controller", "--kubeconfig", str(kubeconfig),
                             "--metrics-port", "0", "--resync-s", "1"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        api.request("POST", kube.path("a2c.dev/v1alpha1", "A2CJob", "ml"), body={
            "apiVersion": "a2c.dev/v1alpha1", "kind": "A2CJob", "spec": {},
            "metadata": {"name": "cp", "namespace": "ml", "uid": "u-1", "generation": 1}})
        deadline = time.monotonic() + 30
        # the controller creates the children first and writes the status after: wait for both
        while time.monotonic() < deadline and (len(api.list("apps/v1", "StatefulSet", "ml", {})) < 2 or
                                               "status" not in api.get("a2c.dev/v1alpha1", "A2CJob", "ml", "cp")):
            time.sleep(0.2)
        assert sorted(o["metadata"]["name"] for o in api.list("apps/v1", "StatefulSet", "ml", {})) == [
            "cp-player", "cp-trainer"]
        assert api.get("a2c.dev/v1alpha1", "A2CJob", "ml", "cp")["status"]["phase"] == "Pending"  # nobody answers
        # the kubeconfig's credentials are sent, and the pod watch asks only for our pods
        writes = [r for method in ("post", "patch") for r in kmock_server.handler[method]]
        ours = [r for r in writes if r.resource.plural != "a2cjobs" or r.subresource == "status"]  # not the test's
        assert len(ours) >= 4 and all(r.headers.get("Authorization") == "Bearer t" for r in ours)
        watches = [r for r in kmock_server.handler["get"] if r.params.get("watch") == "true"]
        assert {r.params.get("labelSelector") for r in watches if "/pods" in str(r.url)} == {
            "app.kubernetes.io/managed-by=a2c-controller"}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
