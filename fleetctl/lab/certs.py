"""The lab's TLS material: a per-lab certificate authority and one server certificate per node (IP SAN).

The lab inventory points the controller at the CA file (`TlsFiles.ca`), so certificate validation stays on
against lab nodes exactly as against real hosts. Keys are ECDSA P-256: issuing 200 node certificates takes
well under a second, where RSA-2048 would take tens of seconds.

API:
    create_ca(dir) -> TlsFiles                           # new CA: dir/ca.pem + dir/ca.key
    load_ca(dir) -> TlsFiles | None                      # an existing CA in dir, if complete
    issue_node_cert(ca, address, names, dir) -> TlsFiles # dir/<address>.pem + .key, signed by ca
    server_ssl_context(tls) -> ssl.SSLContext            # for an HTTPS listener
    channel_binding_data(tls) -> bytes                   # RFC 5929 tls-server-end-point data for NTLM CBT
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca.key"
_VALIDITY = datetime.timedelta(days=825)  # the longest validity clients accept for server certificates


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one certificate: `cert` and its `key`, and `ca`, the CA certificate that signed it
    (for the CA itself, `ca == cert`)."""

    cert: Path
    key: Path
    ca: Path


def _write_private(path: Path, data: bytes) -> None:
    # Private keys are created 0600 from the start, never world-readable even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_ca(dir: Path, *, common_name: str = "fleetctl lab CA") -> TlsFiles:
    """Create a new CA certificate and key in `dir` (replacing any there)."""
    dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetctl lab")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = dir / CA_CERT_NAME, dir / CA_KEY_NAME
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(cert=cert_path, key=key_path, ca=cert_path)


def load_ca(dir: Path) -> TlsFiles | None:
    """The CA already in `dir`, or None when it is missing or incomplete."""
    cert_path, key_path = dir / CA_CERT_NAME, dir / CA_KEY_NAME
    if cert_path.is_file() and key_path.is_file():
        return TlsFiles(cert=cert_path, key=key_path, ca=cert_path)
    return None


def issue_node_cert(ca: TlsFiles, address: str, names: list[str], dir: Path) -> TlsFiles:
    """Issue a server certificate for one node: IP SAN `address` plus DNS SANs `names`, signed by `ca`."""
    dir.mkdir(parents=True, exist_ok=True)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{ca.key}: expected the lab CA's ECDSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = names[0] if names else address
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(address))]
    sans += [x509.DNSName(n) for n in names]
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = dir / f"{address}.pem", dir / f"{address}.key"
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(cert=cert_path, key=key_path, ca=ca.cert)


def server_ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    """A server-side TLS context presenting `tls.cert` (TLS 1.2+)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    return ctx


def channel_binding_data(tls: TlsFiles) -> bytes:
    """The `tls-server-end-point` channel binding of this certificate (RFC 5929 section 4.1).

    The hash is the certificate's signature hash, except that MD5 and SHA-1 become SHA-256; pypsrp computes
    the same from the certificate the server presents, so NTLM/Negotiate with CBT only succeeds when the client
    talked to this very certificate.
    """
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert.public_bytes(serialization.Encoding.DER))
    return b"tls-server-end-point:" + digest.finalize()
