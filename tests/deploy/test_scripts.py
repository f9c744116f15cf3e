"""deploy/kind: the cluster config, the end-to-end script and the CI workflow that runs it.

There is no Docker, kind or cluster here, so e2e.sh runs against stub `docker`, `kind`, `kubectl` and
`helm` commands that record their arguments: that checks the order of the steps, the flags they get, and
that a failure dumps diagnostics and exits non-zero. That the steps work on a real cluster is for the
`kind` workflow to show.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from . import chartlib

ROOT = chartlib.ROOT
KIND = ROOT / "deploy" / "kind"
E2E = KIND / "e2e.sh"
SCRIPTS = sorted((ROOT / "deploy").rglob("*.sh"))
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yaml"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.access(script, os.X_OK), f"{script} is not executable"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: apt-get install shellcheck"
    proc = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_kind_cluster_has_the_nodes_the_kind_values_select() -> None:
    cluster = yaml.safe_load((KIND / "cluster.yaml").read_text())
    assert cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4" and cluster["kind"] == "Cluster"
    roles = [n["role"] for n in cluster["nodes"]]
    assert roles.count("control-plane") == 1
    worker_labels = [n.get("labels", {}) for n in cluster["nodes"] if n["role"] == "worker"]
    values = chartlib.values_file(KIND / "values.yaml")
    for role in ("trainers", "players"):
        selector = values["job"][role]["nodeSelector"]
        assert any(selector.items() <= labels.items() for labels in worker_labels), role


def test_kind_workflow_runs_the_script_on_the_configured_cluster() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "kind.yaml").read_text())
    steps = workflow["jobs"]["e2e"]["steps"]
    kind_step = next(s for s in steps if s.get("uses", "").startswith("helm/kind-action@"))
    config = ROOT / kind_step["with"]["config"]
    assert config.exists()
    cluster_name = yaml.safe_load(config.read_text())["name"]
    assert kind_step["with"]["cluster_name"] == cluster_name
    run = next(s for s in steps if s.get("run") == "deploy/kind/e2e.sh")
    assert run["env"]["CLUSTER_NAME"] == cluster_name
    assert any(s.get("uses", "").startswith("azure/setup-helm@") for s in steps)
    assert any(s.get("if") == "failure()" and "upload-artifact" in s.get("uses", "") for s in steps)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_pin_action_versions(workflow: Path) -> None:
    data = yaml.safe_load(workflow.read_text())
    for job in data["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert "@" in step["uses"] and not step["uses"].endswith("@main"), step["uses"]


def test_deploy_workflow_installs_shellcheck_and_runs_these_tests() -> None:
    text = (ROOT / ".github" / "workflows" / "deploy.yaml").read_text()
    assert "apt-get install -y shellcheck" in text and "pytest tests/deploy" in text


# --- e2e.sh against stub tools ------------------------------------------------------------------------

STUB = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
case "$(basename "$0") $*" in
  "docker save --output "*) [[ -z "${STUB_SAVE_RC:-}" ]] || exit "$STUB_SAVE_RC"; echo archive > "$3" ;;
  "kind load image-archive "*) [[ -f "$3" && ! -p "$3" ]] && echo "archive is a file: $(cat "$3")" >> "$STUB_LOG" ;;
  "kind get clusters") echo a2c ;;
  "kubectl -n a2c get a2cjobs -l app.kubernetes.io/instance=a2c -o name") echo a2cjob.a2c.dev/a2c ;;
  *"jsonpath={.status.phase}"*) echo "${STUB_PHASE:-Running}" ;;
  *"jsonpath={.status.iteration}"*) echo "${STUB_ITERATION:-7}" ;;
  *"jsonpath={.status.message}"*) echo "gang restarts exhausted" ;;
  "kubectl -n a2c get pods -o name") echo pod/a2c-trainer-0 ;;
  "helm test"*) exit "${STUB_HELM_TEST_RC:-0}" ;;
esac
exit 0
"""


def run_e2e(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "kind", "kubectl", "helm"):
        stub = bin_dir / tool
        stub.write_text(STUB)
        stub.chmod(0o755)
    log = tmp_path / "calls.log"
    (tmp_path / "tmp").mkdir()
    environ = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_LOG": str(log), "HOME": str(tmp_path),
               "LOG_DIR": str(tmp_path / "logs"), "TMPDIR": str(tmp_path / "tmp"), **env}
    proc = subprocess.run(["bash", str(E2E)], capture_output=True, text=True, env=environ, timeout=60)
    return proc, log.read_text().splitlines() if log.exists() else []


def test_e2e_steps_in_order(tmp_path: Path) -> None:
    proc, calls = run_e2e(tmp_path)
    assert proc.returncode == 0, proc.stderr

    def index(prefix: str) -> int:
        return next(i for i, c in enumerate(calls) if c.startswith(prefix))
    build, save, load = index("docker build"), index("docker save --output"), index("kind load image-archive")
    install, test = index("helm upgrade --install a2c"), index("helm test a2c")
    assert build < save < load < install < test
    assert f"-t a2c:0.1.0-kind {ROOT}" in calls[build]
    assert "--build-arg" not in calls[build]
    for flag in ("--wait", "--create-namespace", f"--values {KIND}/values.yaml", "--set image.tag=0.1.0-kind",
                 f"{ROOT}/deploy/helm"):
        assert flag in calls[install], flag
    assert not (tmp_path / "logs").exists()  # diagnostics only on failure
    assert not any(c.startswith("kind create cluster") for c in calls)  # the cluster existed


def test_e2e_loads_the_image_as_an_archive_file(tmp_path: Path) -> None:
    """`kind load docker-image` fails with Docker's containerd image store: the script saves the image to a
    temporary file (kind opens it once per node, so not a pipe) and loads that, then removes it."""
    proc, calls = run_e2e(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not any(c.startswith("kind load docker-image") for c in calls)
    save = next(c for c in calls if c.startswith("docker save"))
    _docker, _save, _output, archive, image = save.split()
    assert image == "a2c:0.1.0-kind"
    assert archive.startswith(f"{tmp_path / 'tmp'}/") and archive.endswith(".tar")
    load = calls.index(f"kind load image-archive {archive} --name a2c")
    assert calls[load + 1] == "archive is a file: archive"  # it existed, as a regular file, when kind read it
    assert not list((tmp_path / "tmp").iterdir()), "the archive is removed afterwards"


def test_e2e_stops_when_the_image_cannot_be_saved(tmp_path: Path) -> None:
    proc, calls = run_e2e(tmp_path, STUB_SAVE_RC="1")
    assert proc.returncode != 0 and "failed (exit 1)" in proc.stderr, proc.stderr
    assert not any(c.startswith(("kind load", "helm upgrade")) for c in calls)
    assert not list((tmp_path / "tmp").iterdir())
    assert (tmp_path / "logs" / "cluster.txt").exists()


def test_e2e_passes_the_torch_index_to_the_build(tmp_path: Path) -> None:
    proc, calls = run_e2e(tmp_path, TORCH_INDEX_URL="http://127.0.0.1:9/simple")
    assert proc.returncode == 0, proc.stderr
    assert any("--build-arg TORCH_INDEX_URL=http://127.0.0.1:9/simple" in c for c in calls)


@pytest.mark.parametrize(("env", "message"), [
    ({"STUB_HELM_TEST_RC": "1"}, "failed (exit 1)"),
    ({"STUB_ITERATION": "0", "PROGRESS_TIMEOUT": "0"}, "no progress"),
    ({"STUB_PHASE": "Failed"}, "gang restarts exhausted"),
])
def test_e2e_failure_dumps_diagnostics(tmp_path: Path, env: dict[str, str], message: str) -> None:
    proc, calls = run_e2e(tmp_path, **env)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert (tmp_path / "logs" / "cluster.txt").exists()
    assert (tmp_path / "logs" / "a2c-trainer-0.log").exists()
    assert any(c.startswith("kubectl -n a2c get events") for c in calls)


def test_e2e_refuses_to_run_without_its_tools(tmp_path: Path) -> None:
    bare = tmp_path / "bare"  # a PATH with the script's helpers but none of docker, kind, kubectl, helm
    bare.mkdir()
    for tool in ("dirname", "date"):
        found = shutil.which(tool)
        assert found
        (bare / tool).symlink_to(found)
    bash = shutil.which("bash")
    assert bash
    proc = subprocess.run([bash, str(E2E)], capture_output=True, text=True, timeout=30,
                          env={"PATH": str(bare), "HOME": str(tmp_path)})
    assert proc.returncode == 2 and "missing tool: docker" in proc.stderr, proc.stderr
