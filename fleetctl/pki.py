"""Throwaway certificate authorities and server certificates: make a CA, issue a server certificate with IP/DNS
SANs, and turn them into PEM, private files or a server TLS context.

Keys are ECDSA P-256: a CA plus a certificate take milliseconds, where RSA-2048 would take a noticeable fraction
of a second per key. Used by the lab (one CA per lab, one certificate per node) and by the artifact pull server
(one CA per deploy, whose key is never written anywhere).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
SERVER_VALIDITY = datetime.timedelta(days=825)  # the longest validity clients accept for server certificates
# Clocks of nodes and controller differ a little; a certificate valid "from now" would be refused by one behind.
_CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, in memory."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def new_ca(common_name: str, organization: str, validity: datetime.timedelta = CA_VALIDITY) -> KeyPair:
    """A new self-signed CA that may sign server certificates (and no further CAs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def load_key_pair(cert_path: Path, key_path: Path) -> KeyPair:
    """A certificate and its (unencrypted ECDSA) key from PEM files."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{key_path}: expected an ECDSA private key")
    return KeyPair(cert, key)


def subject_alt_names(addresses_or_names: list[str]) -> list[x509.GeneralName]:
    """IP SANs for what parses as an IP address, DNS SANs for the rest (duplicates dropped, order kept)."""
    sans: list[x509.GeneralName] = []
    for value in dict.fromkeys(addresses_or_names):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            sans.append(x509.DNSName(value))
    return sans


def issue_server_cert(ca: KeyPair, names: list[str], *, common_name: str | None = None,
                      validity: datetime.timedelta = SERVER_VALIDITY) -> KeyPair:
    """A TLS server certificate signed by `ca`, valid for each of `names` (IP addresses and/or DNS names)."""
    if not names:
        raise ValueError("a server certificate needs at least one address or name")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or names[0])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(names)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def write_private(path: Path, data: bytes) -> None:
    """Write a private key file, mode 0600 from creation: never world-readable, even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def write_pair(pair: KeyPair, cert_path: Path, key_path: Path) -> None:
    """Write `pair` as PEM files: the key private (0600), the certificate readable."""
    write_private(key_path, pair.key_pem)
    cert_path.write_bytes(pair.cert_pem)


def server_ssl_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+) presenting the certificate in `cert_path`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_path), str(key_path))
    return context


def server_ssl_context_for(pair: KeyPair) -> ssl.SSLContext:
    """A server-side TLS context presenting an in-memory `pair`.

    The ssl module loads keys only from files, so the key is written into a private (0700) temporary directory
    and removed as soon as it is loaded: the context keeps it in memory, no copy outlives this call.
    """
    with tempfile.TemporaryDirectory(prefix="fleetctl-tls-") as private:
        os.chmod(private, 0o700)  # mkdtemp already makes it 0700; say so rather than rely on it
        cert_path, key_path = Path(private) / "server.pem", Path(private) / "server.key"
        write_pair(pair, cert_path, key_path)
        return server_ssl_context(cert_path, key_path)
