"""spec.tls: the Secret mounted in trainers and players, per-role TLS flags the real CLI parses, the readiness
probe that works over TLS, and the controller reading trainer 0's progress over (mutual) TLS for real."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest

from a2c import cli, config
from a2c.controller import handlers, kube, probe, resources
from a2c.controller import spec as jobspec
from a2c.service import tls
from a2c.v1 import trainer_pb2, trainer_pb2_grpc
from tests.certs import PKI, mutual_tls_server

TLS_DIR = "/etc/a2c/tls"
CASES: dict[str, dict[str, Any]] = {"tls": {"secretName": "cp-tls"}, "mutual": {"secretName": "cp-tls", "mutual": True}}


def job(tls_spec: dict[str, Any] | None, replicas: int = 2) -> dict[str, Any]:
    spec: dict[str, Any] = {"trainers": {"replicas": replicas}}
    if tls_spec is not None:
        spec["tls"] = tls_spec
    return {"apiVersion": jobspec.API_VERSION, "kind": jobspec.KIND,
            "metadata": {"name": "cp", "namespace": "ml", "uid": "0c0ffee0-0000-4000-8000-000000000001",
                         "generation": 1}, "spec": spec}


def children(j: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in resources.render(j)}


def parsed(objs: dict[str, dict[str, Any]], component: str) -> tuple[dict[str, Any], object]:
    """(pod spec, the config `a2c <role>` builds from the container's args and environment, ordinal 0)."""
    pod = objs[f"StatefulSet/cp-{component}"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    environ = dict(objs["ConfigMap/cp-config"]["data"])
    environ.update({e["name"]: e.get("value", "0") for e in c["env"]})  # valueFrom: the pod index, 0
    role, cfg = cli.parse_role(c["args"], environ)
    assert role == component
    return pod, cfg


@pytest.mark.parametrize("case", list(CASES))
def test_secret_is_mounted_read_only_in_trainers_and_players(case: str) -> None:
    objs = children(job(CASES[case]))
    for component in ("trainer", "player"):
        pod = objs[f"StatefulSet/cp-{component}"]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["tls"] == {"name": "tls", "secret": {"secretName": "cp-tls", "defaultMode": 0o440}}
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["tls"] == {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]  # 0440 is readable
    for version in ("1.28", kubernetes_validate.latest_version()):
        for obj in objs.values():
            kubernetes_validate.validate(obj, version, strict=True)


def test_tls_only_verifies_the_trainer() -> None:
    objs = children(job(CASES["tls"]))
    _, trainer = parsed(objs, "trainer")
    assert isinstance(trainer, config.TrainerConfig)
    assert (trainer.tls_cert, trainer.tls_key, trainer.tls_ca) == (f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key", "")
    _, player = parsed(objs, "player")
    assert isinstance(player, config.PlayerConfig)
    assert (player.tls_cert, player.tls_key, player.tls_ca) == ("", "", f"{TLS_DIR}/ca.crt")


def test_mutual_tls_gives_each_side_the_pair_and_the_ca() -> None:
    objs = children(job(CASES["mutual"]))
    for component in ("trainer", "player"):
        _, cfg = parsed(objs, component)
        assert isinstance(cfg, (config.TrainerConfig, config.PlayerConfig))
        assert (cfg.tls_cert, cfg.tls_key, cfg.tls_ca) == (f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key",
                                                            f"{TLS_DIR}/ca.crt")


@pytest.mark.parametrize("case", [None, *CASES])
def test_rendered_commands_mean_what_the_spec_says_and_the_configmap_holds_no_tls(case: str | None) -> None:
    """The TLS files differ between the roles, so they are flags on each container, never the shared ConfigMap."""
    j = job(CASES[case] if case else None)
    objs = children(j)
    assert not resources.TLS_ENV & set(objs["ConfigMap/cp-config"]["data"])
    spec = jobspec.with_defaults(j["spec"])
    _, trainer = parsed(objs, "trainer")
    want = jobspec.trainer_config("cp", "ml", spec)
    want.rank = 0
    assert trainer == want
    _, player = parsed(objs, "player")
    want_player = jobspec.player_config("cp", "ml", spec)
    want_player.player_index = 0
    assert player == want_player


def test_readiness_probe_is_readyz_with_tls_and_grpc_without() -> None:
    """Kubernetes' grpc probe cannot do TLS (it would fail the handshake forever), and a TCP probe would call a
    trainer Ready before its group formed: with TLS the trainer's /readyz (plain HTTP, metrics port) instead."""
    readyz = {"httpGet": {"path": "/readyz", "port": "metrics"}}
    for case, want in ((None, {"grpc": {"port": jobspec.GRPC_PORT}}), ("tls", readyz), ("mutual", readyz)):
        pod = children(job(CASES[case] if case else None))["StatefulSet/cp-trainer"]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        probe_spec = {k: v for k, v in c["readinessProbe"].items() if k in ("grpc", "tcpSocket", "httpGet")}
        assert probe_spec == want, case
        assert "grpc" in {p["name"] for p in c["ports"]}


def test_turning_tls_on_changes_the_trainer_template() -> None:
    """So the controller re-forms the gang instead of leaving plaintext trainers with TLS players."""
    hashes = {resources.trainer_template_hash(job(CASES[c] if c else None)) for c in (None, *CASES)}
    assert len(hashes) == 3


def test_mutual_without_a_secret_is_an_invalid_spec() -> None:
    with pytest.raises(ValueError, match="spec.tls.mutual needs spec.tls.secretName"):
        resources.render(job({"mutual": True}))


# --- the controller reads trainer 0 over TLS --------------------------------------------------------------------


class Trainer0(trainer_pb2_grpc.TrainerServiceServicer):
    def Status(  # noqa: N802 (the generated servicer names it)
        self, request: trainer_pb2.StatusRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.TrainerStatus:
        return trainer_pb2.TrainerStatus(phase=trainer_pb2.TrainerStatus.TRAINING, iteration=12, env_steps=960,
                                         world_size=1)


@pytest.fixture
def mtls_trainer(pki: PKI) -> Iterator[str]:
    """A real trainer-0 Status server on 127.0.0.1 that requires client certificates signed by the CA."""
    with mutual_tls_server(pki, lambda s: trainer_pb2_grpc.add_TrainerServiceServicer_to_server(Trainer0(), s)) as addr:
        yield addr


def _creds(pki: PKI, client_pair: bool) -> grpc.ChannelCredentials | None:
    if client_pair:
        return tls.channel_credentials(str(pki.ca.path), str(pki.player.cert), str(pki.player.key))
    return tls.channel_credentials(str(pki.ca.path))


def test_probe_over_mutual_tls(pki: PKI, mtls_trainer: str) -> None:
    report = probe.trainer_status(mtls_trainer, 2.0, _creds(pki, client_pair=True))
    assert report is not None and report["phase"] == "TRAINING" and report["iteration"] == 12
    assert probe.trainer_status(mtls_trainer, 1.0) is None  # plaintext
    assert probe.trainer_status(mtls_trainer, 1.0, _creds(pki, client_pair=False)) is None  # no client cert


def test_reconcile_reads_progress_over_tls_only_with_credentials(api: kube.Kube, admin: kube.Kube, pki: PKI,
                                                                   mtls_trainer: str) -> None:
    admin.request("POST", kube.path(jobspec.API_VERSION, jobspec.KIND, "ml"), body=job(CASES["mutual"], replicas=1))
    blind = handlers.Reconciler(api, address=lambda _: mtls_trainer, probe_timeout_s=1.0)
    blind.reconcile("ml", "cp")
    assert "iteration" not in api.get(jobspec.API_VERSION, jobspec.KIND, "ml", "cp")["status"]
    trusted = handlers.Reconciler(api, address=lambda _: mtls_trainer, probe_timeout_s=2.0,
                                  tls=_creds(pki, client_pair=True))
    trusted.reconcile("ml", "cp")
    status = api.get(jobspec.API_VERSION, jobspec.KIND, "ml", "cp")["status"]
    assert (status["iteration"], status["envSteps"]) == (12, 960)  # read while the group is still forming


def test_controller_command_refuses_unreadable_tls_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "ca.crt")
    assert cli.main(["controller", "--tls-ca", missing, "--metrics-port", "-1"]) == 2
    assert f"--tls-ca {missing!r}: cannot read it" in capsys.readouterr().err
