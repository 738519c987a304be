"""Certificates made in the test: a CA, certificates it signs, and PEM files on disk.

For the TLS tests of the gRPC servers and of the Kafka listener (docs/security.md); nothing here
is a secret, every key lives in the test's temporary directory.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


def _new_key() -> rsa.RSAPrivateKey:
    # RSA: the one key type that every reader of PEM here takes (grpc, Python's ssl, Kafka's JVM).
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey, ca: bool
) -> x509.CertificateBuilder:
    """A certificate valid from a day ago to a day ahead, with its basic constraints."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + _DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )


@dataclass(frozen=True)
class Issued:
    """A certificate and its key as PEM files."""

    cert_file: Path
    key_file: Path

    def keystore(self) -> Path:
        """Key and certificate in one PEM file, as Kafka's `ssl.keystore.type=PEM` reads it."""
        store = self.cert_file.with_suffix(".keystore.pem")
        store.write_bytes(self.key_file.read_bytes() + self.cert_file.read_bytes())
        store.chmod(0o600)
        return store


class Authority:
    """A throwaway CA that writes what it issues into `directory`."""

    def __init__(self, directory: Path, name: str = "trellis-test-ca") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = _new_key()
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._cert = (
            _builder(self._name, self._name, self._key, ca=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = directory / f"{name}.crt"
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        common_name: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
        server: bool = False,
    ) -> Issued:
        """A leaf certificate: for a client, or (`server=True`) for a server that also calls
        others with it, as the services do under mTLS."""
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = _builder(subject, self._name, key, ca=False).add_extension(
            x509.ExtendedKeyUsage(
                [
                    *([ExtendedKeyUsageOID.SERVER_AUTH] if server else []),
                    ExtendedKeyUsageOID.CLIENT_AUTH,
                ]
            ),
            critical=False,
        )
        names: list[x509.GeneralName] = [
            *(x509.DNSName(d) for d in dns),
            *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips),
            *(x509.UniformResourceIdentifier(u) for u in uris),
        ]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(
            self.directory / f"{common_name}.crt", self.directory / f"{common_name}.key"
        )
        issued.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        issued.key_file.chmod(0o600)
        return issued
