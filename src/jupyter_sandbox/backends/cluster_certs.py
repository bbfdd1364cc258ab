"""The cluster's TLS: one CA per cluster, a server certificate per node, one client certificate.

Every node's engine listens on TCP 2376 with `--tlsverify`: it accepts only clients holding a
certificate from the cluster's CA, and the client checks the node's certificate against the
same CA (Docker's own "protect the daemon socket" scheme). Keys are EC P-256; files are written
0600 in a 0700 folder. The CA key stays in the cluster's folder so nodes can be added later.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateAuthority", "IssuedCert", "write_private"]

_VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class IssuedCert:
    """A certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes


class CertificateAuthority:
    """A cluster's CA: issues node (server) and client certificates."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._key, self._cert = key, cert

    @classmethod
    def create(cls, name: str) -> CertificateAuthority:
        """A fresh CA named after the cluster."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"jupyter-sandbox {name} CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, folder: Path) -> CertificateAuthority:
        """The CA saved by `save` in `folder`."""
        key = serialization.load_pem_private_key((folder / "ca-key.pem").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{folder / 'ca-key.pem'} is not an EC key")
        return cls(key, x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes()))

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate (what both sides verify against)."""
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def save(self, folder: Path) -> None:
        """Write ca.pem and ca-key.pem (0600) into `folder`."""
        write_private(folder / "ca.pem", self.cert_pem)
        write_private(folder / "ca-key.pem", _key_pem(self._key))

    def issue_server(self, name: str, addresses: list[str]) -> IssuedCert:
        """A node's certificate, valid for its name and `addresses` (IPs or DNS names)."""
        names: list[x509.GeneralName] = []
        for address in [name, *addresses]:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(address)))
            except ValueError:
                names.append(x509.DNSName(address))
        return self._issue(
            name, ExtendedKeyUsageOID.SERVER_AUTH, x509.SubjectAlternativeName(names)
        )

    def issue_client(self, name: str) -> IssuedCert:
        """The client certificate the CLI, `Client()` and the API servers present."""
        return self._issue(name, ExtendedKeyUsageOID.CLIENT_AUTH, None)

    def _issue(
        self,
        common_name: str,
        usage: x509.ObjectIdentifier,
        alt_names: x509.SubjectAlternativeName | None,
    ) -> IssuedCert:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if alt_names is not None:
            builder = builder.add_extension(alt_names, critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCert(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path`, readable by the owner only (its folder 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT
