"""How to reach one host, read from its (rendered) inventory variables (docs/inventory.md): WinRM settings for
Windows nodes (`ConnectionSettings`) and SSH settings for Linux build hosts and load balancers (`SshSettings`),
both through the one variable reader below.

Pure: validates values and raises one `ConfigError` naming the host, the variable and what was expected.
fleetctl's own `fleet_*` names win over the Ansible spellings (`ansible_host`, `ansible_user`,
`ansible_winrm_*`, `ansible_ssh_*`) so that an existing Ansible inventory works unchanged.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from fleetctl.config.redaction import register_secret
from fleetctl.config.templating import is_template, render_string
from fleetctl.errors import ConfigError

Scheme = Literal["https", "http"]
AUTH_METHODS = ("negotiate", "ntlm", "kerberos", "basic", "certificate", "credssp")
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_OPERATION_TIMEOUT = 20.0
# Hosts of one command that may refuse an account's credentials before the rest are not tried with it (a
# directory's lockout policy locks an account after a few failures; node/auth_budget.py). 0: no limit.
DEFAULT_MAX_AUTH_FAILURES = 3

# Each setting: the variable names that may hold it, first match wins.
_ADDRESS = ("fleet_host", "ansible_host")
_PORT = ("fleet_port", "ansible_port", "ansible_winrm_port")
_SCHEME = ("fleet_scheme", "ansible_winrm_scheme")
_AUTH = ("fleet_auth", "ansible_winrm_transport")
_USER = ("fleet_user", "ansible_user", "ansible_winrm_user")
_PASSWORD = ("fleet_password", "ansible_password", "ansible_winrm_password", "ansible_winrm_pass")
_CA_BUNDLE = ("fleet_ca_bundle", "ansible_winrm_ca_trust_path")
_CERT_VALIDATION = ("fleet_cert_validation", "ansible_winrm_server_cert_validation")
_CERT_PEM = ("fleet_cert_pem", "ansible_winrm_cert_pem")
_CERT_KEY_PEM = ("fleet_cert_key_pem", "ansible_winrm_cert_key_pem")
_CONNECT_TIMEOUT = ("fleet_connect_timeout", "ansible_winrm_connection_timeout")
_OPERATION_TIMEOUT = ("fleet_operation_timeout", "ansible_winrm_operation_timeout_sec")
_TRANSPORT = ("fleet_transport",)
_MAX_AUTH_FAILURES = ("fleet_max_auth_failures",)

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")
_TRUE = {"true", "yes", "on", "1", "validate"}
_FALSE = {"false", "no", "off", "0", "ignore"}


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything the WinRM transport needs to reach and authenticate to one host."""

    host_name: str
    address: str
    port: int
    scheme: Scheme = "https"
    auth: str = "negotiate"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    cert_validation: bool = True
    cert_pem: str | None = None
    cert_key_pem: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    operation_timeout: float = DEFAULT_OPERATION_TIMEOUT
    max_auth_failures: int = DEFAULT_MAX_AUTH_FAILURES
    # Which inventory variables held the credentials (ansible_password when that is what the inventory uses),
    # so an authentication error names what the operator wrote, not fleetctl's own spelling.
    user_var: str = _USER[0]
    password_var: str = _PASSWORD[0]
    auth_var: str = _AUTH[0]

    @property
    def read_timeout(self) -> int:
        """Seconds to wait for an HTTP answer: a Receive long-polls for up to operation_timeout, so the read must
        outlast it by a margin (half of it, 2 to 10 s) before we call the host silent."""
        op = max(1, round(self.operation_timeout))
        return op + max(2, min(10, op // 2))

    @property
    def endpoint(self) -> str:
        """The WS-Management URL, for messages (never holds credentials)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}/wsman"

    @classmethod
    def from_hostvars(
        cls, host_name: str, rendered_vars: Mapping[str, Any], *, source: str | Path | None = None
    ) -> ConnectionSettings:
        """Read and validate the connection variables of `host_name`; `source` names the inventory in errors."""
        reader = _VarReader(host_name, rendered_vars, source)
        transport = reader.text(_TRANSPORT)
        if transport is not None and transport.lower() != "winrm":
            reader.fail(_TRANSPORT[0], f"expected 'winrm', got {transport!r}")
        address = reader.text(_ADDRESS) or host_name
        if not _is_address(address):
            reader.fail(reader.found_key(_ADDRESS) or "inventory_hostname",
                        f"expected a host name or IP address, got {address!r}")
        scheme_text = (reader.text(_SCHEME) or "https").lower()
        if scheme_text not in ("https", "http"):
            reader.fail(reader.found_key(_SCHEME), f"expected https or http, got {scheme_text!r}")
        scheme: Scheme = "https" if scheme_text == "https" else "http"
        port = reader.integer(_PORT, 5986 if scheme == "https" else 5985, low=1, high=65535)
        auth = (reader.text(_AUTH) or "negotiate").lower()
        if auth not in AUTH_METHODS:
            reader.fail(reader.found_key(_AUTH), f"expected one of {', '.join(AUTH_METHODS)}, got {auth!r}")
        user = reader.text(_USER)
        password = reader.text(_PASSWORD)
        register_secret(password)
        if auth in ("ntlm", "basic", "credssp") and (not user or password is None):
            reader.fail(_USER[0] if not user else _PASSWORD[0],
                        f"auth '{auth}' needs fleet_user and fleet_password")
        if auth == "negotiate" and user and password is None:
            reader.fail(_PASSWORD[0], "fleet_user is set but no fleet_password (negotiate auth needs both)")
        if auth == "basic" and scheme == "http":
            reader.fail(reader.found_key(_AUTH), "basic auth over http would send the password in clear; use https")
        cert_pem = reader.text(_CERT_PEM)
        cert_key_pem = reader.text(_CERT_KEY_PEM)
        if auth == "certificate":
            if scheme != "https":
                reader.fail(reader.found_key(_AUTH), "certificate auth needs https")
            if not cert_pem or not cert_key_pem:
                reader.fail(_CERT_PEM[0], "certificate auth needs fleet_cert_pem and fleet_cert_key_pem (paths)")
        ca_bundle = reader.text(_CA_BUNDLE)
        if ca_bundle is not None and not Path(ca_bundle).is_file():
            reader.fail(reader.found_key(_CA_BUNDLE), f"expected a readable CA bundle file, {ca_bundle!r} is not one")
        return cls(
            host_name=host_name,
            address=address,
            port=port,
            scheme=scheme,
            auth=auth,
            user=user,
            password=password,
            ca_bundle=ca_bundle,
            cert_validation=reader.boolean(_CERT_VALIDATION, True),
            cert_pem=cert_pem,
            cert_key_pem=cert_key_pem,
            connect_timeout=reader.number(_CONNECT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT),
            operation_timeout=reader.number(_OPERATION_TIMEOUT, DEFAULT_OPERATION_TIMEOUT),
            max_auth_failures=reader.integer(_MAX_AUTH_FAILURES, DEFAULT_MAX_AUTH_FAILURES, low=0, high=100000),
            user_var=reader.found_key(_USER) or _USER[0],
            password_var=reader.found_key(_PASSWORD) or _PASSWORD[0],
            auth_var=reader.found_key(_AUTH) or _AUTH[0],
        )


_SSH_ADDRESS = ("fleet_ssh_host", "ansible_host")
_SSH_PORT = ("fleet_ssh_port", "ansible_port", "ansible_ssh_port")
_SSH_USER = ("fleet_ssh_user", "ansible_user", "ansible_ssh_user")
_SSH_KEY_FILE = ("fleet_ssh_private_key_file", "ansible_ssh_private_key_file")
_SSH_PASSWORD = ("fleet_ssh_password", "ansible_password", "ansible_ssh_pass")
_SSH_KNOWN_HOSTS = ("fleet_ssh_known_hosts",)
_SSH_TIMEOUT = ("fleet_ssh_connect_timeout", "ansible_ssh_timeout")


@dataclass(frozen=True)
class SshSettings:
    """How to reach and authenticate to one SSH host (build hosts, load balancers; `fleetctl.transport.ssh`)."""

    host_name: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    password: str | None = field(default=None, repr=False)
    known_hosts: str | None = None  # extra known_hosts file; ~/.ssh/known_hosts is always consulted too
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    @property
    def target(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.address}:{self.port}"

    @classmethod
    def from_hostvars(cls, host_name: str, hostvars: Mapping[str, Any], *,
                      source: str | Path | None = None) -> SshSettings:
        """Read and validate the SSH variables of `host_name`; `source` names the inventory in errors."""
        reader = _VarReader(host_name, hostvars, source)
        address = reader.text(_SSH_ADDRESS) or host_name
        if not _is_address(address):
            reader.fail(reader.found_key(_SSH_ADDRESS) or "inventory_hostname",
                        f"expected a host name or IP address, got {address!r}")
        key_file = reader.text(_SSH_KEY_FILE)
        if key_file is not None and not Path(key_file).expanduser().is_file():
            reader.fail(reader.found_key(_SSH_KEY_FILE), f"private key file {key_file} does not exist")
        known_hosts = reader.text(_SSH_KNOWN_HOSTS)
        if known_hosts is not None and not Path(known_hosts).expanduser().is_file():
            reader.fail(reader.found_key(_SSH_KNOWN_HOSTS), f"known_hosts file {known_hosts} does not exist")
        password = reader.text(_SSH_PASSWORD)
        register_secret(password)
        return cls(
            host_name=host_name, address=address, port=reader.integer(_SSH_PORT, 22, low=1, high=65535),
            user=reader.text(_SSH_USER), key_file=str(Path(key_file).expanduser()) if key_file else None,
            password=password, known_hosts=str(Path(known_hosts).expanduser()) if known_hosts else None,
            connect_timeout=reader.number(_SSH_TIMEOUT, DEFAULT_CONNECT_TIMEOUT),
        )


CONNECTION_PREFIXES = ("fleet_", "ansible_")


def render_connection_vars(variables: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """A host's connection variables (`fleet_*`, `ansible_*`: all `from_hostvars` reads), rendered against all of
    `variables`. Only these are rendered, so connecting needs no value that only other variables use (a playbook's
    `version`, a secret meant for the service)."""
    return {
        key: render_string(value, variables, source=source, key=key) if isinstance(value, str) and is_template(value)
        else value
        for key, value in variables.items() if key.startswith(CONNECTION_PREFIXES)
    }


def insecure_hosts_warning(settings: Iterable[ConnectionSettings]) -> str | None:
    """One warning line naming every host whose certificate validation is off, or None (docs/transport.md)."""
    names = sorted({s.host_name for s in settings if s.scheme == "https" and not s.cert_validation})
    if not names:
        return None
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return (f"certificate validation is OFF for {len(names)} host(s) ({shown}): "
            "their identity is not verified (fleet_cert_validation: false)")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(text))


class _VarReader:
    """Looks up the first of several variable names and converts it, failing with a precise ConfigError."""

    def __init__(self, host: str, values: Mapping[str, Any], source: str | Path | None) -> None:
        self.host = host
        self.values = values
        self.source = source

    def fail(self, key: str | None, expectation: str) -> NoReturn:
        raise ConfigError(f"host {self.host}: {expectation}", file=self.source, key=key)

    def found_key(self, names: tuple[str, ...]) -> str | None:
        return next((n for n in names if self.values.get(n) not in (None, "")), None)

    def raw(self, names: tuple[str, ...]) -> tuple[str | None, Any]:
        key = self.found_key(names)
        return key, (self.values[key] if key else None)

    def text(self, names: tuple[str, ...]) -> str | None:
        key, value = self.raw(names)
        if value is None:
            return None
        if isinstance(value, (dict, list, tuple, set)):
            self.fail(key, f"expected a string, got a {type(value).__name__}")
        return str(value).strip()

    def integer(self, names: tuple[str, ...], default: int, *, low: int, high: int) -> int:
        key, value = self.raw(names)
        if value is None:
            return default
        if isinstance(value, bool) or not str(value).strip().isdigit():
            self.fail(key, f"expected an integer from {low} to {high}, got {value!r}")
        number = int(str(value).strip())
        if not low <= number <= high:
            self.fail(key, f"expected an integer from {low} to {high}, got {number}")
        return number

    def number(self, names: tuple[str, ...], default: float) -> float:
        key, value = self.raw(names)
        if value is None:
            return default
        try:
            number = float(value) if not isinstance(value, bool) else -1.0
        except (TypeError, ValueError):
            number = -1.0
        if not 0 < number <= 3600:
            self.fail(key, f"expected a number of seconds between 0 and 3600, got {value!r}")
        return number

    def boolean(self, names: tuple[str, ...], default: bool) -> bool:
        key, value = self.raw(names)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        self.fail(key, f"expected true or false, got {value!r}")

