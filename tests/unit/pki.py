"""Test certificates: a CA, a server certificate for localhost, a client certificate, and
a TLS handshake in memory that shows which client certificate a server saw."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
                 usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(name(subject))
               .issuer_name(name(issuer)).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - datetime.timedelta(hours=1))
               .not_valid_after(NOW + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Pki:
    def __init__(self) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = certificate("test-ca", self.ca_key, "test-ca", self.ca_key, ca=True)
        self.server_key = ec.generate_private_key(ec.SECP256R1())
        self.server = certificate("localhost", self.server_key, "test-ca", self.ca_key,
                                   usage=ExtendedKeyUsageOID.SERVER_AUTH)
        self.client_key = ec.generate_private_key(ec.SECP256R1())
        self.client = certificate("evc-user", self.client_key, "test-ca", self.ca_key,
                                   usage=ExtendedKeyUsageOID.CLIENT_AUTH)


def client_verifying_server(pki: Pki, tmp_path: Path) -> ssl.SSLContext:
    """A server's TLS context that requires a client certificate from the test CA."""
    (tmp_path / "server.crt").write_bytes(pem(pki.server))
    (tmp_path / "server.key").write_bytes(key_pem(pki.server_key))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    server.load_verify_locations(cadata=pem(pki.ca).decode())
    server.verify_mode = ssl.CERT_REQUIRED
    return server


def handshake(client: ssl.SSLContext, pki: Pki, tmp_path: Path) -> Any:
    """A TLS handshake in memory against a server that requires a client certificate
    from the test CA; returns the client certificate the server saw."""
    server = client_verifying_server(pki, tmp_path)
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    client_end = client.wrap_bio(pipes[0], pipes[1], server_hostname="localhost")
    server_end = server.wrap_bio(pipes[2], pipes[3], server_side=True)
    done: set[str] = set()
    for _ in range(10):
        for name, end in (("client", client_end), ("server", server_end)):
            if name in done:
                continue
            try:
                end.do_handshake()
                done.add(name)
            except ssl.SSLWantReadError:
                pass
        pipes[2].write(pipes[1].read())
        pipes[0].write(pipes[3].read())
        if done == {"client", "server"}:
            break
    assert done == {"client", "server"}
    peer = server_end.getpeercert()
    assert peer
    return peer
