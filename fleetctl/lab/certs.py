"""The lab's TLS material: a per-lab certificate authority and one server certificate per node (IP SAN).

The lab inventory points the controller at the CA file (`TlsFiles.ca`), so certificate validation stays on
against lab nodes exactly as against real hosts. The certificate work itself is `fleetctl.pki`'s; this module
keeps the lab's file layout. Keys are ECDSA P-256: issuing 200 node certificates takes well under a second.

API:
    create_ca(dir) -> TlsFiles                           # new CA: dir/ca.pem + dir/ca.key
    load_ca(dir) -> TlsFiles | None                      # an existing CA in dir, if complete
    issue_node_cert(ca, address, names, dir) -> TlsFiles # dir/<address>.pem + .key, signed by ca
    issue_node_certs(ca, [(address, names)], dir)        # the same for many nodes, the CA loaded once
    server_ssl_context(tls) -> ssl.SSLContext            # for an HTTPS listener
    channel_binding_data(tls) -> bytes                   # RFC 5929 tls-server-end-point data for NTLM CBT
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from fleetctl import pki

CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca.key"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one certificate: `cert` and its `key`, and `ca`, the CA certificate that signed it
    (for the CA itself, `ca == cert`)."""

    cert: Path
    key: Path
    ca: Path


def create_ca(dir: Path, *, common_name: str = "fleetctl lab CA") -> TlsFiles:
    """Create a new CA certificate and key in `dir` (replacing any there)."""
    dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = dir / CA_CERT_NAME, dir / CA_KEY_NAME
    pki.write_pair(pki.new_ca(common_name, "fleetctl lab"), cert_path, key_path)
    return TlsFiles(cert=cert_path, key=key_path, ca=cert_path)


def load_ca(dir: Path) -> TlsFiles | None:
    """The CA already in `dir`, or None when it is missing or incomplete."""
    cert_path, key_path = dir / CA_CERT_NAME, dir / CA_KEY_NAME
    if cert_path.is_file() and key_path.is_file():
        return TlsFiles(cert=cert_path, key=key_path, ca=cert_path)
    return None


def issue_node_cert(ca: TlsFiles, address: str, names: list[str], dir: Path) -> TlsFiles:
    """Issue a server certificate for one node: IP SAN `address` plus DNS SANs `names`, signed by `ca`."""
    return issue_node_certs(ca, [(address, names)], dir)[0]


def issue_node_certs(ca: TlsFiles, nodes: list[tuple[str, list[str]]], dir: Path) -> list[TlsFiles]:
    """`issue_node_cert` for each (address, names), loading the CA key once (a lab worker issues hundreds)."""
    dir.mkdir(parents=True, exist_ok=True)
    authority = pki.load_key_pair(ca.cert, ca.key)
    out = []
    for address, names in nodes:
        pair = pki.issue_server_cert(authority, [address, *names], common_name=names[0] if names else address)
        cert_path, key_path = dir / f"{address}.pem", dir / f"{address}.key"
        pki.write_pair(pair, cert_path, key_path)
        out.append(TlsFiles(cert=cert_path, key=key_path, ca=ca.cert))
    return out


def server_ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    """A server-side TLS context presenting `tls.cert` (TLS 1.2+)."""
    return pki.server_ssl_context(tls.cert, tls.key)


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
