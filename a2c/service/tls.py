"""TLS and mutual TLS for the trainer's gRPC port, from PEM files (in a cluster: a mounted Secret).

Data flow: `trainer.run` turns `--tls-cert/--tls-key/--tls-ca` into `server_credentials` for
`server.start`; `player.run` turns its own three flags into `channel_credentials` for `client.TrainerClient`.
Every file empty means plaintext (None), so the default stays what it was. On the trainer `--tls-ca` asks
for client certificates signed by that CA (mutual TLS); on the player it is the CA that signed the
trainer's certificate, and `--tls-cert/--tls-key` are the player's own identity for mutual TLS.
"""

from __future__ import annotations

import ssl

import grpc

PEM_MARK = b"-----BEGIN "


class TLSError(ValueError):
    """A certificate, key or CA file that is missing, unreadable, not PEM, or given without its pair."""


def read_pem(path: str, flag: str) -> bytes:
    """The bytes of a PEM file, or a TLSError that names the flag and the file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise TLSError(f"{flag} {path!r}: cannot read it ({exc.strerror or exc})") from exc
    if PEM_MARK not in data:
        raise TLSError(f"{flag} {path!r}: not a PEM file (no '-----BEGIN' line)")
    return data


def _pair(cert: str, key: str) -> tuple[bytes, bytes] | None:
    if bool(cert) != bool(key):
        raise TLSError("--tls-cert and --tls-key go together: give both or neither")
    if not cert:
        return None
    pair = read_pem(key, "--tls-key"), read_pem(cert, "--tls-cert")
    # gRPC would only fail at the first handshake, and vaguely: check the pair with Python's own TLS now.
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        why = "the key is not the certificate's" if exc.reason == "KEY_VALUES_MISMATCH" else (
            f"not a certificate and an unencrypted private key ({exc.reason or exc})")
        raise TLSError(f"--tls-cert {cert!r} / --tls-key {key!r}: {why}") from exc
    return pair


def _ca(path: str) -> bytes:
    data = read_pem(path, "--tls-ca")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii", "replace"))
    except ssl.SSLError as exc:
        raise TLSError(f"--tls-ca {path!r}: no CA certificate in it ({exc.reason or exc})") from exc
    return data


def server_credentials(cert: str = "", key: str = "", client_ca: str = "") -> grpc.ServerCredentials | None:
    """Credentials for the trainer's port, or None (plaintext) when no file is given.

    With `client_ca` the server requires every client to present a certificate signed by it (mutual TLS).
    """
    pair = _pair(cert, key)
    if pair is None:
        if client_ca:
            raise TLSError("--tls-ca on the trainer (mutual TLS) needs its own --tls-cert and --tls-key")
        return None
    root = _ca(client_ca) if client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=root, require_client_auth=root is not None)


def channel_credentials(ca: str = "", cert: str = "", key: str = "") -> grpc.ChannelCredentials | None:
    """Credentials for a channel to a trainer, or None (plaintext) when no file is given.

    `ca` verifies the trainer's certificate (empty: the system's roots); `cert`/`key` are this client's
    identity for a trainer that requires mutual TLS.
    """
    pair = _pair(cert, key)
    if pair is None and not ca:
        return None
    root = _ca(ca) if ca else None
    private_key, chain = pair if pair is not None else (None, None)
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=private_key, certificate_chain=chain)


def name_override(server_name: str) -> list[tuple[str, str]]:
    """Channel options that verify the trainer's certificate against `server_name` instead of the address."""
    return [("grpc.ssl_target_name_override", server_name)] if server_name else []
