"""How the WinRM transport reports each way a host can fail, driven through real pypsrp/requests against
misbehaving loopback endpoints (no lab needed): one clear line and the right error type for each."""

from __future__ import annotations

import os
import time

import pytest

from fleetctl.config.connection import ConnectionSettings
from fleetctl.config.redaction import forget_secrets
from fleetctl.protocol.errors import (
    AuthenticationFailed,
    CertificateError,
    HostTimeout,
    HostUnreachable,
    TransportError,
)
from fleetctl.transport.winrm import WinRMTransport

NET = os.environ.get("FLEETCTL_TEST_NET", "127.0.30")


def settings(address: str, port: int, **over: object) -> ConnectionSettings:
    values: dict = {"fleet_host": address, "fleet_port": port, "fleet_auth": "ntlm", "fleet_user": "deployer",
                    "fleet_password": "S3cret-pass!", "fleet_connect_timeout": 2, "fleet_operation_timeout": 1}
    values.update(over)
    return ConnectionSettings.from_hostvars("web01", values)


def fails_with(s: ConnectionSettings, kind: type[Exception], attempts: int = 1) -> TransportError:
    transport = WinRMTransport(s, retry_attempts=attempts, retry_wait=0.01)
    try:
        with pytest.raises(kind) as info:
            transport.invoke("Get-FleetFacts", {})
    finally:
        transport.close()
    err = info.value
    assert isinstance(err, TransportError)
    text = str(err)
    assert text.startswith("web01: ") and "\n" not in text
    assert "S3cret-pass!" not in text
    return err


def test_dns_failure_is_unreachable_and_not_retried() -> None:
    err = fails_with(settings("no-such-host.invalid", 5986), HostUnreachable)
    assert "cannot resolve host name 'no-such-host.invalid'" in str(err)
    assert not err.transient


def test_refused_is_unreachable_transient_and_retried(listener) -> None:
    closed = listener("reset", 12)  # bind, then find a port nobody listens on: the next one up
    err = fails_with(settings(f"{NET}.13", closed.port), HostUnreachable, attempts=2)
    assert "connection refused" in str(err) and err.transient


def test_reset_is_retried_then_reported(listener) -> None:
    ep = listener("reset", 14)
    err = fails_with(settings(ep.address, ep.port, fleet_scheme="http"), HostUnreachable, attempts=3)
    assert "reset" in str(err) and err.transient
    assert ep.accepted == 3  # retried: 3 attempts, 3 connections


def test_silent_host_times_out(listener) -> None:
    ep = listener("silent", 15)
    started = time.monotonic()
    err = fails_with(settings(ep.address, ep.port, fleet_scheme="http"), HostTimeout)
    assert "did not answer" in str(err) and err.transient
    assert time.monotonic() - started < 20


def test_untrusted_certificate_is_a_certificate_error_never_retried(listener, tls_files) -> None:
    from fleetctl.lab.certs import server_ssl_context

    server, _ca, other_ca = tls_files
    ep = listener("tls", 11, ssl_context=server_ssl_context(server))
    err = fails_with(settings(ep.address, ep.port, fleet_ca_bundle=str(other_ca)), CertificateError, attempts=3)
    assert "failed verification" in str(err) and str(other_ca) in str(err)
    assert ep.accepted == 1


def test_certificate_without_ca_bundle_suggests_one(listener, tls_files) -> None:
    from fleetctl.lab.certs import server_ssl_context

    server, _ca, _other = tls_files
    ep = listener("tls", 11, ssl_context=server_ssl_context(server))
    err = fails_with(settings(ep.address, ep.port), CertificateError)
    assert "set fleet_ca_bundle" in str(err)


def test_401_is_authentication_failed_never_retried(listener) -> None:
    ep = listener("status", 16, status=401)
    err = fails_with(settings(ep.address, ep.port, fleet_scheme="http", fleet_auth="ntlm"),
                     AuthenticationFailed, attempts=3)
    assert "authentication failed for user 'deployer' with ntlm" in str(err)
    assert "check fleet_user/fleet_password and fleet_auth" in str(err)
    assert ep.accepted == 1


def test_401_names_the_variables_the_inventory_uses(listener) -> None:
    """An Ansible inventory's ansible_user/ansible_password/ansible_winrm_transport are what the message names."""
    ep = listener("status", 16, status=401)
    values = {"ansible_host": ep.address, "ansible_port": ep.port, "ansible_winrm_scheme": "http",
              "ansible_winrm_transport": "ntlm", "ansible_user": "deployer", "ansible_password": "S3cret-pass!",
              "fleet_connect_timeout": 2, "fleet_operation_timeout": 1}
    err = fails_with(ConnectionSettings.from_hostvars("web01", values), AuthenticationFailed)
    assert "check ansible_user/ansible_password and ansible_winrm_transport" in str(err)
    assert "fleet_password" not in str(err)


def test_5xx_is_transient_and_retried(listener) -> None:
    ep = listener("status", 17, status=503)
    # Basic over https is required by our settings; message encryption off over http needs a non-basic auth,
    # so use ntlm with encryption: pypsrp first sends an empty auth request, which gets the 503.
    err = fails_with(settings(ep.address, ep.port, fleet_scheme="http"), TransportError, attempts=2)
    assert "HTTP 503" in str(err) and err.transient
    assert ep.accepted == 2


@pytest.fixture(autouse=True)
def _clean_secrets():
    yield
    forget_secrets()
