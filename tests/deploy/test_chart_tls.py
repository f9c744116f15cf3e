"""job.tls / controller.tls in the chart: values -> A2CJob spec.tls -> pods the real CLI parses, the controller
given the Secret, and the `helm test` hook's exact script health-checking a real server over (mutual) TLS."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from a2c import cli, config
from a2c.controller import resources
from tests.certs import PKI, mutual_tls_server

from . import chartlib
from .chartlib import NAMESPACE, one

TLS_DIR = "/etc/a2c/tls"
MUTUAL = {"job": {"tls": {"secretName": "a2c-tls", "mutual": True}}}
SERVER_ONLY = {"job": {"tls": {"secretName": "a2c-tls"}}}
JOB_SCHEMA = chartlib.load_all(chartlib.CRD_FILE.read_text())[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, list[dict[str, Any]]]]:
    return {"mutual": chartlib.render(MUTUAL), "tls": chartlib.render(SERVER_ONLY)}


def test_strict_lint_is_clean_with_tls() -> None:
    report = helm.lint(chartlib.CHART, MUTUAL, strict=True, namespace=NAMESPACE,
                       kube_version=f"v{chartlib.KUBE_VERSIONS[-1]}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], (problems, report["errors"])


def test_mutual_without_a_secret_is_refused_by_the_schema() -> None:
    with pytest.raises(helm.HelmValuesError, match="/job/tls/secretName"):
        chartlib.render({"job": {"tls": {"mutual": True}}})


@pytest.mark.parametrize("case", ["tls", "mutual"])
def test_job_tls_reaches_the_a2cjob_and_its_pods(case: str, rendered) -> None:
    job = copy.deepcopy(one(rendered[case], "A2CJob"))
    jsonschema.Draft4Validator(JOB_SCHEMA).validate(job)
    assert job["spec"]["tls"] == {"secretName": "a2c-tls", "mutual": case == "mutual"}
    children = resources.render(job)
    configmap = next(c for c in children if c["kind"] == "ConfigMap")
    for sts in (c for c in children if c["kind"] == "StatefulSet"):
        pod = sts["spec"]["template"]["spec"]
        container = pod["containers"][0]
        environ = dict(configmap["data"])
        environ.update({var["name"]: var.get("value", "0") for var in container["env"]})
        role, cfg = cli.parse_role(container["args"], environ)
        assert isinstance(cfg, (config.TrainerConfig, config.PlayerConfig))
        files = (cfg.tls_cert, cfg.tls_key, cfg.tls_ca)
        pair, ca = (f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key"), f"{TLS_DIR}/ca.crt"
        if role == "trainer":
            assert files == (*pair, ca if case == "mutual" else "")
        else:
            assert files == ((*pair, ca) if case == "mutual" else ("", "", ca))
        assert {"name": "tls", "secret": {"secretName": "a2c-tls", "defaultMode": 0o440}} in pod["volumes"]


def test_controller_gets_the_secret_and_flags_the_cli_accepts(rendered) -> None:
    deployment = one(rendered["mutual"], "Deployment")
    kubernetes_validate.validate(deployment, chartlib.KUBE_VERSIONS[-1], strict=True)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = cli.build_parser().parse_args(container["args"])
    assert args.command == "controller"
    assert (args.tls_ca, args.tls_cert, args.tls_key) == (f"{TLS_DIR}/ca.crt", f"{TLS_DIR}/tls.crt",
                                                          f"{TLS_DIR}/tls.key")
    assert {"name": "tls", "mountPath": TLS_DIR, "readOnly": True} in container["volumeMounts"]
    assert {"name": "tls", "secret": {"secretName": "a2c-tls", "defaultMode": 0o440}} in pod["volumes"]


def test_controller_tls_secret_of_its_own_and_none_by_default() -> None:
    own = one(chartlib.render({"controller": {"tls": {"secretName": "ctl-tls"}}, **SERVER_ONLY}), "Deployment")
    assert {"name": "tls", "secret": {"secretName": "ctl-tls", "defaultMode": 0o440}} in own["spec"]["template"][
        "spec"]["volumes"]
    plain = one(chartlib.render({}), "Deployment")["spec"]["template"]["spec"]
    assert "tls" not in {v["name"] for v in plain["volumes"]}
    assert not any(a.startswith("--tls") for a in plain["containers"][0]["args"])


@pytest.mark.parametrize("case", ["tls", "mutual"])
def test_helm_test_pod_mounts_the_secret_and_points_at_it(case: str, rendered) -> None:
    pod = one(rendered[case], "Pod")
    kubernetes_validate.validate(pod, chartlib.KUBE_VERSIONS[-1], strict=True)
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    want = {"A2C_TLS_CA": f"{TLS_DIR}/ca.crt"}
    if case == "mutual":
        want |= {"A2C_TLS_CERT": f"{TLS_DIR}/tls.crt", "A2C_TLS_KEY": f"{TLS_DIR}/tls.key"}
    assert env == want
    assert container["volumeMounts"] == [{"name": "tls", "mountPath": TLS_DIR, "readOnly": True}]
    assert pod["spec"]["volumes"] == [{"name": "tls", "secret": {"secretName": "a2c-tls", "defaultMode": 0o440}}]
    assert "env" not in one(chartlib.render({}), "Pod")["spec"]["containers"][0]


# --- the hook's script against a real health server over mutual TLS ---------------------------------------------


@pytest.fixture
def mtls_health(pki: PKI) -> Iterator[str]:
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    with mutual_tls_server(pki, lambda s: health_pb2_grpc.add_HealthServicer_to_server(servicer, s)) as address:
        yield address


def _run_hook(rendered: dict[str, list[dict[str, Any]]], address: str,
              files: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    container = one(rendered, "Pod")["spec"]["containers"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("A2C_TLS_")}
    env.update({k: str(v) for k, v in files.items()})
    return subprocess.run([sys.executable, "-c", container["args"][0], "1", address], capture_output=True,
                          text=True, timeout=60, env=env)


def test_hook_script_checks_a_trainer_over_mutual_tls(rendered, pki: PKI, mtls_health: str) -> None:
    good = _run_hook(rendered["mutual"], mtls_health, {"A2C_TLS_CA": pki.ca.path, "A2C_TLS_CERT": pki.player.cert,
                                                       "A2C_TLS_KEY": pki.player.key})
    assert good.returncode == 0 and "SERVING" in good.stdout, good.stdout + good.stderr
    no_cert = _run_hook(rendered["mutual"], mtls_health, {"A2C_TLS_CA": pki.ca.path})
    assert no_cert.returncode == 1 and "UNAVAILABLE" in no_cert.stdout, no_cert.stdout + no_cert.stderr
    plaintext = _run_hook(rendered["mutual"], mtls_health, {})
    assert plaintext.returncode == 1 and "UNAVAILABLE" in plaintext.stdout, plaintext.stdout + plaintext.stderr
