"""One TLS context per CA bundle for all WinRM connections (fleetctl/transport/tls.py): shared, loaded once, and
still verifying the chain and the host name; not used where it must not be (validation off). Both HTTP layers:
the lean one (transport/lean_http.py, every HTTPS host with negotiate/ntlm/kerberos/basic) and pypsrp's own
(requests; what CredSSP and certificate authentication use), the latter forced with `pypsrp_http`."""

from __future__ import annotations

import os
import ssl
from typing import Any

import pytest

from fleetctl.lab.certs import create_ca
from fleetctl.protocol.errors import CertificateError
from fleetctl.transport import tls, winrm
from fleetctl.transport.lean_http import LeanTransport
from fleetctl.transport.winrm import WinRMTransport

pytestmark = pytest.mark.lab
NET = os.environ.get("FLEETCTL_TEST_TLS_NET", "127.0.32")


@pytest.fixture(params=["lean", "pypsrp"])
def http_layer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test over each HTTP layer: the lean one, and pypsrp's own (requests) by turning the lean one off."""
    if request.param == "pypsrp":
        monkeypatch.setattr(winrm, "lean_applies", lambda settings: False)
    return str(request.param)


def context_of(transport: WinRMTransport, layer: str) -> ssl.SSLContext:
    """The TLS context the transport's connections use."""
    assert transport._wsman is not None
    if layer == "lean":
        assert isinstance(transport._wsman.transport, LeanTransport)
        return transport._wsman.transport._context
    adapter = adapter_of(transport)
    assert isinstance(adapter, tls.SharedContextAdapter)
    return adapter._context


def adapter_of(transport: WinRMTransport) -> Any:
    assert transport._wsman is not None
    return transport._wsman.transport.session.get_adapter("https://")  # type: ignore[union-attr]


def test_connections_to_many_hosts_share_one_context_loaded_once(lab_node: Any, http_layer: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = [lab_node(f"{NET}.{i}") for i in range(1, 5)]
    loads: list[Any] = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args or kwargs)
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    monkeypatch.setattr(tls, "_contexts", {})
    transports = [WinRMTransport(n.settings) for n in nodes]
    try:
        for transport in transports:
            assert transport.invoke("Get-FleetFacts", {})["lab"] is True
        contexts = [context_of(t, http_layer) for t in transports]
        assert len({id(c) for c in contexts}) == 1
        assert contexts[0].verify_mode == ssl.CERT_REQUIRED and contexts[0].check_hostname
        assert len(loads) == 1  # the bundle was parsed once, not once per connection
    finally:
        for transport in transports:
            transport.close()


def test_a_certificate_for_another_host_is_still_refused(lab_node: Any, http_layer: str) -> None:
    node = lab_node(f"{NET}.10", cert_for=f"{NET}.11")  # signed by the trusted CA, for another address
    transport = WinRMTransport(node.settings, retry_attempts=1)
    with pytest.raises(CertificateError, match="failed verification"):
        transport.invoke("Get-FleetFacts", {})


def test_a_certificate_from_another_ca_is_still_refused(lab_node: Any, tmp_path: Any, http_layer: str) -> None:
    node = lab_node(f"{NET}.12", ca=create_ca(tmp_path / "other", common_name="not trusted"))
    transport = WinRMTransport(node.settings, retry_attempts=1)
    with pytest.raises(CertificateError, match="failed verification"):
        transport.invoke("Get-FleetFacts", {})


def test_validation_off_uses_no_shared_context(lab_node: Any, http_layer: str) -> None:
    node = lab_node(f"{NET}.13", fleet_cert_validation="ignore")
    transport = WinRMTransport(node.settings)
    try:
        assert transport.invoke("Get-FleetFacts", {})["lab"] is True
        if http_layer == "lean":
            context = context_of(transport, "lean")
            assert context.verify_mode == ssl.CERT_NONE and context not in tls._contexts.values()
        else:
            assert not isinstance(adapter_of(transport), tls.SharedContextAdapter)
    finally:
        transport.close()


def test_the_environment_is_read_once_per_connection_not_per_request(lab_node: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # requests scanned os.environ for proxy settings on every WS-Man request (4 % of a deploy's controller CPU).
    import requests.utils

    node = lab_node(f"{NET}.20")
    scans: list[str] = []
    real = requests.utils.get_environ_proxies

    def counting(url: str, no_proxy: Any = None) -> Any:
        scans.append(url)
        return real(url, no_proxy=no_proxy)

    monkeypatch.setattr(winrm, "lean_applies", lambda settings: False)  # the lean layer has no requests at all
    monkeypatch.setattr(requests.utils, "get_environ_proxies", counting)
    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counting, raising=False)
    transport = WinRMTransport(node.settings)
    try:
        for _ in range(3):
            assert transport.invoke("Get-FleetFacts", {})["lab"] is True
        session = transport._wsman.transport.session  # type: ignore[union-attr]
        assert session.trust_env is False and session.proxies == {"https": False}
        # once, when pypsrp built the session (its CA bundle and proxies), then never again per request
        assert len(scans) == 1
        assert session.verify  # validation is on, as before
    finally:
        transport.close()
