"""Certificates for the TLS tests, made with `cryptography`: a CA that writes PEM files and issues leaves."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from a2c.service import tls


@dataclass
class Issued:
    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


class CA:
    """A self-signed CA that writes PEM files into `folder` and issues leaf certificates."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = folder / f"{name}-ca.crt"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), server_auth: bool = True,
              client_auth: bool = True) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        usages = [oid for oid, on in ((ExtendedKeyUsageOID.SERVER_AUTH, server_auth),
                                      (ExtendedKeyUsageOID.CLIENT_AUTH, client_auth)) if on]
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.folder / f"{self.name}-{cn}.crt", self.folder / f"{self.name}-{cn}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(issued.key, key)
        return issued


@dataclass
class PKI:
    """What the TLS tests need: a CA with a trainer (server) and a player (client) certificate, and a stranger."""

    ca: CA
    server: Issued  # SAN 127.0.0.1 and localhost, server auth only
    player: Issued  # a client certificate from the same CA
    stranger: CA  # another CA
    stranger_player: Issued  # a client certificate from the other CA

    @classmethod
    def make(cls, folder: Path) -> PKI:
        ca, stranger = CA(folder, "a2c"), CA(folder, "stranger")
        return cls(ca, ca.issue("trainer", dns=("localhost",), ips=("127.0.0.1",), client_auth=False),
                   ca.issue("player-0", server_auth=False), stranger, stranger.issue("player-0", server_auth=False))


@contextlib.contextmanager
def mutual_tls_server(pki: PKI, add_servicers: Callable[[grpc.Server], None]) -> Iterator[str]:
    """A real gRPC server on 127.0.0.1 that requires client certificates signed by `pki.ca`; yields its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add_servicers(server)
    creds = tls.server_credentials(str(pki.server.cert), str(pki.server.key), str(pki.ca.path))
    assert creds is not None
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)
