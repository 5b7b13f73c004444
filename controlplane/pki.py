"""Keys and certificates of a local control plane: the ServiceAccount token keys, and the
API server's serving certificate for a control plane that pods reach.

Left alone, kube-apiserver makes its own self-signed certificate in `--cert-dir`, valid
for its bind address or "localhost". A control plane with a node listens on every
address, for its clients on loopback and for pods, which reach it through the
`kubernetes` Service; so the certificate must name all three: 127.0.0.1, the address
the API server advertises (the Service's endpoints) and the Service's cluster IP (what
pods dial). `write_serving_certificate` writes one, signed by a CA of its own, where the
API server looks first (`apiserver.crt`/`apiserver.key` in its `--cert-dir`), as the
certificate followed by the CA: the same shape as the API server's own, so the file
still serves as the CA bundle of kubeconfigs and of the pods' `ca.crt`.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The names pods use for the API server (kubernetes.default.svc and its short forms).
SERVICE_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local", "localhost")
VALIDITY = datetime.timedelta(days=365)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_service_account_keys(pki: Path) -> None:
    """`sa.key` and `sa.pub`: the key pair that signs and checks ServiceAccount tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "sa.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    (pki / "sa.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def write_serving_certificate(cert_dir: Path, addresses: Sequence[str],
                              names: Sequence[str] = SERVICE_NAMES) -> Path:
    """Write `apiserver.crt` (certificate + CA) and `apiserver.key` into `cert_dir`, valid
    for the IP `addresses` and DNS `names`; return the certificate file."""
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)  # clock slack
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder()
          .subject_name(_name("evc-operator local cluster CA"))
          .issuer_name(_name("evc-operator local cluster CA"))
          .public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + VALIDITY)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    alternatives: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    alternatives += [x509.DNSName(name) for name in names]
    certificate = (x509.CertificateBuilder()
                   .subject_name(_name("kube-apiserver"))
                   .issuer_name(ca.subject)
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + VALIDITY)
                   .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False)
                   .sign(ca_key, hashes.SHA256()))
    cert_dir.mkdir(parents=True, exist_ok=True)
    key_file = cert_dir / "apiserver.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    cert_file = cert_dir / "apiserver.crt"
    cert_file.write_bytes(_pem(certificate) + _pem(ca))
    return cert_file
