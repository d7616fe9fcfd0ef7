"""HTTP authentication of a lab node's WS-Management listeners: Basic, NTLM/Negotiate, CBT and message encryption.

Mirrors what a Windows WinRM listener does with its default settings:
- HTTPS offers `Negotiate` (NTLM inside SPNEGO, or raw NTLM under the Negotiate scheme) and `Basic`; channel
  binding (CBT, RFC 5929 tls-server-end-point) is enforced for Negotiate, so a client that skipped TLS validation
  against the node's own certificate cannot authenticate.
- HTTP offers only `Negotiate`, and SOAP bodies must then be encrypted with the authenticated context
  (`multipart/encrypted`, MS-WSMV 2.2.9.1); responses are encrypted the same way.
- Authentication belongs to the TCP connection (NTLM is connection-oriented): after the handshake the client
  sends no `Authorization` header at all, so the server must keep the connection alive. Basic is checked on
  every request.

The NTLM acceptor is pyspnego's. It reads account hashes from the file named by the process-wide environment
variable `NTLM_USER_FILE`, so each node writes its own store file and every acceptor step runs under one
process-wide lock with the variable pointing at that node's store.

API: `Credentials(accounts, computer_name)`, `AuthPolicy(credentials, allow_basic=, channel_bindings=,
require_encryption=)`, `ConnectionAuth(policy).authorize(header, refuse=)` -> `AuthDecision`,
`ConnectionAuth.unwrap_body(content_type, body)`, `ConnectionAuth.wrap_body(data)`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import shutil
import struct
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spnego
import spnego.channel_bindings
from spnego._ntlm_raw.crypto import ntowfv1

from fleetctl.config.redaction import register_secret
from fleetctl.errors import ConfigError

ENCRYPTED_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_BOUNDARY = "Encrypted Boundary"
ENCRYPTED_CONTENT_TYPE = f'multipart/encrypted;protocol="{ENCRYPTED_PROTOCOL}";boundary="{ENCRYPTED_BOUNDARY}"'

# pyspnego's acceptor reads NTLM_USER_FILE from os.environ; one lock makes "point the variable at this node's
# store, then step" atomic across every node and thread of the process.
_NTLM_ENV_LOCK = threading.Lock()
_STORE_DIR: Path | None = None
_STORE_DIR_LOCK = threading.Lock()


class EncryptionError(Exception):
    """A request body that should be (or claims to be) encrypted could not be decrypted."""


def _store_dir() -> Path:
    global _STORE_DIR
    with _STORE_DIR_LOCK:
        if _STORE_DIR is None or not _STORE_DIR.is_dir():
            _STORE_DIR = Path(tempfile.mkdtemp(prefix="fleetctl-lab-ntlm-"))
        return _STORE_DIR


def split_account(user: str) -> tuple[str | None, str]:
    """`DOMAIN\\user` -> ("DOMAIN", "user"); a bare `user` -> (None, "user")."""
    if "\\" in user:
        domain, name = user.split("\\", 1)
        return domain, name
    return None, user


class Credentials:
    """The local accounts of one simulated node: user -> password.

    A bare account name `user` is accepted as `user`, `.\\user`, `<COMPUTER>\\user` and `localhost\\user`, as
    Windows accepts a local account; an account configured as `DOMAIN\\user` is accepted only in that form.
    Passwords are registered as secrets, so they are redacted from every output.
    """

    def __init__(self, accounts: Mapping[str, str], computer_name: str) -> None:
        if not accounts:
            raise ConfigError("a lab node needs at least one account (user -> password)", key="credentials")
        self.computer_name = computer_name
        # (DOMAIN upper, user upper) -> password
        self._accounts: dict[tuple[str, str], str] = {}
        for user, password in accounts.items():
            if not user or any(ch in user for ch in ":\r\n") or not isinstance(password, str):
                raise ConfigError(f"lab account name {user!r} is empty or contains ':' or a newline, or its "
                                  "password is not a string", key="credentials")
            register_secret(password)
            domain, name = split_account(user)
            domains = [domain] if domain is not None else ["", ".", computer_name, "localhost"]
            for dom in domains:
                self._accounts[(dom.upper(), name.upper())] = password
        self._store: Path | None = None

    def check_password(self, user: str, password: str) -> bool:
        """Basic authentication: does this user form and password match an account (constant-time compare)?"""
        domain, name = split_account(user)
        expected = self._accounts.get(((domain or "").upper(), name.upper()))
        if expected is None:
            return False
        return hmac.compare_digest(expected.encode("utf-8"), password.encode("utf-8"))

    def ntlm_store(self) -> Path:
        """This node's NTLM store file (smbpasswd format, NT hashes only, mode 0600), written on first use."""
        if self._store is None or not self._store.exists():
            lines = []
            for (domain, name), password in self._accounts.items():
                account = f"{domain}\\{name}" if domain else name
                nt_hash = base64.b16encode(ntowfv1(password)).decode()
                lines.append(f"{account}:0:{'0' * 32}:{nt_hash}:[U]:LCT-0")
            fd, path = tempfile.mkstemp(prefix="node-", suffix=".ntlm", dir=_store_dir())
            with os.fdopen(fd, "w") as out:
                out.write("\n".join(lines) + "\n")
            self._store = Path(path)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.unlink(missing_ok=True)
            self._store = None


def remove_store_dir() -> None:
    """Delete the process's NTLM store directory (at lab shutdown)."""
    global _STORE_DIR
    with _STORE_DIR_LOCK:
        if _STORE_DIR is not None:
            shutil.rmtree(_STORE_DIR, ignore_errors=True)
            _STORE_DIR = None


@dataclass(frozen=True)
class AuthPolicy:
    """What one listener accepts."""

    credentials: Credentials
    allow_basic: bool  # Basic only over HTTPS, as WinRM's defaults
    channel_bindings: bytes | None  # tls-server-end-point data (HTTPS), enforced for Negotiate
    require_encryption: bool  # HTTP: SOAP bodies must be multipart/encrypted

    def offers(self) -> list[tuple[str, str]]:
        headers = [("WWW-Authenticate", "Negotiate")]
        if self.allow_basic:
            headers.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
        return headers


@dataclass
class AuthDecision:
    """The outcome for one request: served (`ok`) or answered 401 with `headers`."""

    ok: bool
    headers: list[tuple[str, str]] = field(default_factory=list)  # to add to the response (401 or 200)
    user: str | None = None
    # A logon this request completed: "accepted" or "refused" (a password checked, a handshake finished or failed,
    # the auth-failure fault); None for a request that was only a step of a handshake or carried no credentials.
    # The lab counts them, as Windows' security log does (event 4624 / 4625).
    logon: str | None = None


_SCHEME = re.compile(r"^\s*(\S+)\s*(.*?)\s*$")


class ConnectionAuth:
    """Authentication state of one TCP connection."""

    def __init__(self, policy: AuthPolicy) -> None:
        self.policy = policy
        self._context: Any = None  # pyspnego acceptor context
        self.user: str | None = None

    @property
    def encrypting(self) -> bool:
        """True once a Negotiate context exists that can encrypt bodies."""
        return self._context is not None and self._context.complete

    def reset(self) -> None:
        self._context = None
        self.user = None

    def authorize(self, header: str | None, *, refuse: bool = False) -> AuthDecision:
        """Decide on a request carrying this `Authorization` header (or none). `refuse`: the auth-failure fault."""
        if refuse:
            self.reset()
            return AuthDecision(False, self.policy.offers(), logon="refused" if header else None)
        if not header:
            if self.encrypting:
                return AuthDecision(True, user=self.user)
            return AuthDecision(False, self.policy.offers())
        match = _SCHEME.match(header)
        scheme, token = (match.group(1), match.group(2)) if match else ("", "")
        if scheme.lower() == "basic" and self.policy.allow_basic:
            return self._basic(token)
        if scheme.lower() in ("negotiate", "ntlm", "kerberos"):
            return self._negotiate(scheme, token)
        self.reset()
        return AuthDecision(False, self.policy.offers())

    def _basic(self, token: str) -> AuthDecision:
        self.reset()
        try:
            user, _, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return AuthDecision(False, self.policy.offers(), logon="refused")
        if not self.policy.credentials.check_password(user, password):
            return AuthDecision(False, self.policy.offers(), logon="refused")
        return AuthDecision(True, user=user, logon="accepted")

    def _negotiate(self, scheme: str, token: str) -> AuthDecision:
        try:
            in_token = base64.b64decode(token, validate=True)
        except binascii.Error:
            in_token = b""
        if not in_token:
            self.reset()
            return AuthDecision(False, self.policy.offers())
        if self._context is None or self._context.complete:
            # A token on an authenticated connection starts a new handshake (the client re-authenticates).
            self._context = None
            self.user = None
        store = str(self.policy.credentials.ntlm_store())
        try:
            with _NTLM_ENV_LOCK:
                previous = os.environ.get("NTLM_USER_FILE")
                os.environ["NTLM_USER_FILE"] = store
                try:
                    if self._context is None:
                        cbt = None
                        if self.policy.channel_bindings is not None:
                            cbt = spnego.channel_bindings.GssChannelBindings(
                                application_data=self.policy.channel_bindings)
                        self._context = spnego.server(protocol="negotiate", channel_bindings=cbt)
                    out_token = self._context.step(in_token)
                finally:
                    if previous is None:
                        os.environ.pop("NTLM_USER_FILE", None)
                    else:
                        os.environ["NTLM_USER_FILE"] = previous
        except Exception:  # noqa: BLE001 - any failed step (wrong password, bad CBT, garbage) is a plain 401
            self.reset()
            return AuthDecision(False, self.policy.offers(), logon="refused")
        reply = f"{scheme} {base64.b64encode(out_token).decode()}" if out_token else None
        if self._context.complete:
            self.user = str(self._context.client_principal or "")
            return AuthDecision(True, [("WWW-Authenticate", reply)] if reply else [], user=self.user, logon="accepted")
        return AuthDecision(False, [("WWW-Authenticate", reply or scheme)])

    def unwrap_body(self, content_type: str, body: bytes) -> bytes:
        """The SOAP bytes of an encrypted request body (MS-WSMV multipart/encrypted)."""
        if not self.encrypting:
            raise EncryptionError("an encrypted body arrived on a connection that is not authenticated")
        match = re.search(r'boundary="?([^";]+)"?', content_type)
        boundary = match.group(1) if match else ENCRYPTED_BOUNDARY
        parts = [p for p in re.split(rb"--\s*" + re.escape(boundary.encode()) + rb"\r\n", body) if p]
        message = b""
        try:
            for i in range(0, len(parts) - 1, 2):
                length = int(parts[i].split(b"Length=")[1].split()[0])
                payload = re.sub(rb"--\s*" + re.escape(boundary.encode()) + rb"--\r\n$", b"", parts[i + 1])
                payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
                header_length = struct.unpack("<i", payload[:4])[0]
                header = payload[4:4 + header_length]
                plain = self._context.unwrap_winrm(header, payload[4 + header_length:])
                if len(plain) != length:
                    raise EncryptionError(f"decrypted length {len(plain)} != declared {length}")
                message += plain
        except EncryptionError:
            raise
        except Exception as err:  # noqa: BLE001 - malformed MIME or a bad signature: the request is refused
            raise EncryptionError(f"cannot decrypt the request body: {type(err).__name__}") from None
        return message

    def wrap_body(self, data: bytes) -> tuple[str, bytes]:
        """(Content-Type, body) of `data` encrypted for the client, as pypsrp's `WinRMEncryption` expects."""
        header, wrapped, padding = self._context.wrap_winrm(data)
        mime = "\r\n".join([
            f"--{ENCRYPTED_BOUNDARY}",
            f"\tContent-Type: {ENCRYPTED_PROTOCOL}",
            f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={len(data) + padding}",
            f"--{ENCRYPTED_BOUNDARY}",
            "\tContent-Type: application/octet-stream",
            "",
        ]).encode()
        body = mime + struct.pack("<i", len(header)) + header + wrapped + f"--{ENCRYPTED_BOUNDARY}--\r\n".encode()
        return ENCRYPTED_CONTENT_TYPE, body
