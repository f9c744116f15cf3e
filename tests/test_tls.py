"""service.tls over REAL sockets: a trainer server with TLS / mutual TLS on 127.0.0.1:0, with certificates
made here (a CA, a server certificate for 127.0.0.1/localhost, client certificates, a stranger CA)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from a2c import cli, config, flags
from a2c.model import weights
from a2c.service import client, tls
from a2c.v1 import trainer_pb2
from tests.certs import PKI
from tests.support import server
from tests.support.procs import free_port, kill, spawn
from tests.support.rollouts import cartpole_rollout
from tests.support.server import Served

# --- a live trainer server -----------------------------------------------------------------------------------

Serve = Callable[[grpc.ServerCredentials | None], Served]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """serve(credentials) -> Served: a real trainer server on 127.0.0.1:<free port> (world size 1, one player,
    lag 0), stopped at the end."""
    started: list[Served] = []

    def start(credentials: grpc.ServerCredentials | None) -> Served:
        started.append(server.start(world_size=1, expected_players=1, max_policy_lag=0, workers=4, tls=credentials))
        return started[-1]

    yield start
    for served in started:
        served.stop()


def _client(address: str, credentials: grpc.ChannelCredentials | None, server_name: str = "") -> client.TrainerClient:
    return client.TrainerClient(address, max_message_bytes=4 << 20, retry_for_s=0.3, tls=credentials,
                                server_name=server_name)


def _refused(c: client.TrainerClient) -> grpc.StatusCode | None:
    """The status code the trainer's Status call fails with, or None if it answered."""
    try:
        c.status(timeout_s=5.0)
    except grpc.RpcError as err:
        return err.code()  # type: ignore[attr-defined,no-any-return]
    finally:
        c.close()
    return None


def _snapshot(version: int) -> weights.WeightSnapshot:
    return weights.WeightSnapshot(version=version, tensors={"w": np.arange(6, dtype=np.float32).reshape(2, 3)})


def _uploads_and_fetches(served: Served, c: client.TrainerClient) -> None:
    try:
        assert c.status(timeout_s=5.0).phase == trainer_pb2.TrainerStatus.TRAINING
        assert c.upload(cartpole_rollout(player_id=0, version=0)).accepted
        assert len(served.box.take_round(0, timeout_s=1.0).rollouts) == 1
        served.board.publish(_snapshot(7))
        snap, done = c.fetch(-1, wait_s=1.0)
        assert snap is not None and snap.version == 7 and not done
        np.testing.assert_array_equal(snap.tensors["w"], _snapshot(7).tensors["w"])
    finally:
        c.close()


# --- TLS (the server authenticates itself) --------------------------------------------------------------------


def test_tls_client_uploads_and_fetches(pki: PKI, serve: Serve) -> None:
    served = serve(tls.server_credentials(str(pki.server.cert), str(pki.server.key)))
    _uploads_and_fetches(served, _client(served.address, tls.channel_credentials(str(pki.ca.path))))


def test_plaintext_client_is_refused_by_a_tls_trainer(pki: PKI, serve: Serve) -> None:
    served = serve(tls.server_credentials(str(pki.server.cert), str(pki.server.key)))
    assert _refused(_client(served.address, None)) == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError):
        _client(served.address, None).upload(cartpole_rollout())
    assert served.box.take_round(0, timeout_s=0.0).rollouts == []


def test_tls_client_is_refused_by_a_plaintext_trainer(pki: PKI, serve: Serve) -> None:
    served = serve(None)
    assert _refused(_client(served.address, tls.channel_credentials(str(pki.ca.path)))) == grpc.StatusCode.UNAVAILABLE


def test_a_trainer_signed_by_another_ca_is_not_trusted(pki: PKI, serve: Serve) -> None:
    impostor = pki.stranger.issue("trainer", dns=("localhost",), ips=("127.0.0.1",))
    served = serve(tls.server_credentials(str(impostor.cert), str(impostor.key)))
    assert _refused(_client(served.address, tls.channel_credentials(str(pki.ca.path)))) == grpc.StatusCode.UNAVAILABLE


def test_the_certificate_must_name_the_trainer_unless_overridden(pki: PKI, serve: Serve) -> None:
    """As in a cluster: the certificate names the pod's DNS name, not the address dialled."""
    pod = "job-trainer-0.job-trainer.ns.svc"
    named = pki.ca.issue("pod-trainer", dns=(pod,))
    served = serve(tls.server_credentials(str(named.cert), str(named.key)))
    ca = tls.channel_credentials(str(pki.ca.path))
    assert _refused(_client(served.address, ca)) == grpc.StatusCode.UNAVAILABLE
    assert _refused(_client(served.address, ca, server_name="other.ns.svc")) == grpc.StatusCode.UNAVAILABLE
    assert _refused(_client(served.address, ca, server_name=pod)) is None


# --- mutual TLS (the trainer also authenticates its players) ---------------------------------------------------


@pytest.fixture
def mutual(pki: PKI, serve: Serve) -> Served:
    served = serve(tls.server_credentials(str(pki.server.cert), str(pki.server.key), str(pki.ca.path)))
    return served


def test_mtls_client_with_a_good_certificate_works(pki: PKI, mutual: Served) -> None:
    creds = tls.channel_credentials(str(pki.ca.path), str(pki.player.cert), str(pki.player.key))
    _uploads_and_fetches(mutual, _client(mutual.address, creds))


def test_mtls_client_without_a_certificate_is_refused(pki: PKI, mutual: Served) -> None:
    assert _refused(_client(mutual.address, tls.channel_credentials(str(pki.ca.path)))) == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError):
        _client(mutual.address, tls.channel_credentials(str(pki.ca.path))).upload(cartpole_rollout())
    assert mutual.box.take_round(0, timeout_s=0.0).rollouts == []


def test_mtls_client_with_a_certificate_from_another_ca_is_refused(pki: PKI, mutual: Served) -> None:
    creds = tls.channel_credentials(str(pki.ca.path), str(pki.stranger_player.cert), str(pki.stranger_player.key))
    assert _refused(_client(mutual.address, creds)) == grpc.StatusCode.UNAVAILABLE


def test_mtls_plaintext_client_is_refused(mutual: Served) -> None:
    assert _refused(_client(mutual.address, None)) == grpc.StatusCode.UNAVAILABLE


# --- files and flags ------------------------------------------------------------------------------------------


def test_no_files_means_plaintext() -> None:
    assert tls.server_credentials("", "", "") is None
    assert tls.channel_credentials("", "", "") is None


def test_missing_unreadable_and_non_pem_files_name_the_flag_and_path(pki: PKI, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.crt")
    with pytest.raises(tls.TLSError, match=r"--tls-cert '.*nope\.crt': cannot read it"):
        tls.server_credentials(missing, str(pki.server.key))
    with pytest.raises(tls.TLSError, match=r"--tls-ca '.*nope\.crt': cannot read it"):
        tls.channel_credentials(missing)
    with pytest.raises(tls.TLSError, match=r"--tls-key '.*': cannot read it"):
        tls.channel_credentials(str(pki.ca.path), str(pki.player.cert), str(tmp_path))  # a directory
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(tls.TLSError, match=r"--tls-ca '.*garbage\.pem': not a PEM file"):
        tls.server_credentials(str(pki.server.cert), str(pki.server.key), str(garbage))
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "locked.key"
        locked.write_bytes(pki.server.key.read_bytes())
        locked.chmod(0)
        with pytest.raises(tls.TLSError, match=r"--tls-key '.*locked\.key': cannot read it \(Permission denied\)"):
            tls.server_credentials(str(pki.server.cert), str(locked))


def test_mismatched_encrypted_and_non_certificate_files_are_refused_at_start(pki: PKI, tmp_path: Path) -> None:
    with pytest.raises(tls.TLSError, match="the key is not the certificate's"):
        tls.server_credentials(str(pki.server.cert), str(pki.player.key))
    with pytest.raises(tls.TLSError, match="the key is not the certificate's"):
        tls.channel_credentials(str(pki.ca.path), str(pki.player.cert), str(pki.server.key))
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(tls.TLSError, match="not a certificate and an unencrypted private key"):
        tls.server_credentials(str(pki.server.cert), str(encrypted))
    with pytest.raises(tls.TLSError, match=r"--tls-ca '.*\.key': no CA certificate in it"):
        tls.channel_credentials(str(pki.server.key))  # a key where the CA should be


def test_half_pairs_are_refused(pki: PKI) -> None:
    with pytest.raises(tls.TLSError, match="--tls-cert and --tls-key go together"):
        tls.server_credentials(str(pki.server.cert), "")
    with pytest.raises(tls.TLSError, match="--tls-cert and --tls-key go together"):
        tls.channel_credentials(str(pki.ca.path), "", str(pki.player.key))
    with pytest.raises(tls.TLSError, match="needs its own --tls-cert and --tls-key"):
        tls.server_credentials("", "", str(pki.ca.path))


def test_tls_flags_and_environment_reach_both_configs() -> None:
    role, cfg = cli.parse_role(["trainer", "--tls-cert", "/tls/tls.crt", "--tls-key=/tls/tls.key"],
                               {"A2C_TLS_CA": "/tls/ca.crt"})
    assert role == "trainer" and isinstance(cfg, config.TrainerConfig)
    assert (cfg.tls_cert, cfg.tls_key, cfg.tls_ca) == ("/tls/tls.crt", "/tls/tls.key", "/tls/ca.crt")
    role, cfg = cli.parse_role(["player", "--tls-ca", "/x/ca.crt"], {"A2C_TLS_CA": "/env/ca.crt"})
    assert isinstance(cfg, config.PlayerConfig) and (cfg.tls_cert, cfg.tls_key, cfg.tls_ca) == ("", "", "/x/ca.crt")
    assert flags.to_flags(config.PlayerConfig(tls_ca="/x/ca.crt")) == ["--tls-ca=/x/ca.crt"]


# --- a2c trainer + a2c player, end to end over mutual TLS --------------------------------------------------------


@pytest.mark.slow
def test_trainer_and_player_train_over_mutual_tls(pki: PKI, tmp_path: Path) -> None:
    """World size 1, one player, a few hundred env steps: the run ends because the player's uploads arrived."""
    # flags only: the A2C_* / DDP variables of the environment the tests run in are blanked (= unset)
    env = {k: "" for k in os.environ if k.startswith(("A2C_", "RANK", "WORLD_SIZE", "MASTER_"))}
    env["PYTHONUNBUFFERED"] = "1"
    common = ["--num-envs", "2", "--n-steps", "8"]
    trainer = spawn("trainer", "--rank", "0", "--world-size", "1", "--port", "0", "--metrics-port", "-1",
                    "--master-port", str(free_port()), "--run-dir", str(tmp_path / "run"), "--max-env-steps", "320",
                    "--linger-s", "1", "--start-timeout-s", "60", "--device", "cpu", "--backend", "gloo",
                    "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key), "--tls-ca", str(pki.ca.path),
                    *common, env=env, new_session=True)
    procs = [trainer]
    try:
        port = _read_port(trainer)
        player = spawn("player", "--player-index", "0", "--trainer-address", f"127.0.0.1:{port}",
                       "--metrics-port", "-1", "--connect-timeout-s", "30", "--tls-ca", str(pki.ca.path),
                       "--tls-cert", str(pki.player.cert), "--tls-key", str(pki.player.key), *common,
                       env=env, new_session=True)
        procs.append(player)
        player_out, _ = player.communicate(timeout=100)
        trainer_out, _ = trainer.communicate(timeout=60)
    finally:
        kill(*procs)
    assert player.returncode == 0, player_out
    assert trainer.returncode == 0, trainer_out
    assert (tmp_path / "run" / "metrics.jsonl").exists()


def _read_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "gRPC on port" in line:
            assert line.rstrip().endswith("(mutual TLS)"), line
            return int(line.rsplit("port", 1)[1].split()[0])
    raise AssertionError("the trainer ended before serving:\n" + "".join(seen))
