"""Lab node authentication: NTLM/Negotiate (pyspnego acceptor), Basic, channel binding, message encryption."""

from __future__ import annotations

import base64

import pytest
import spnego
import spnego.channel_bindings
from pypsrp.encryption import WinRMEncryption
from pypsrp.exceptions import AuthenticationError
from pypsrp.powershell import RunspacePool
from pypsrp.wsman import WSMan

from fleetctl.config.redaction import MASK, redact
from fleetctl.errors import ConfigError
from fleetctl.lab.auth import AuthPolicy, ConnectionAuth, Credentials, EncryptionError

LAB_USER = "fleet"
LAB_PASSWORD = "Unit:Pass-w0rd!"


def open_and_close(wsman: WSMan) -> None:
    """Open and close a runspace pool: the whole connect + authenticate + PSRP negotiation."""
    with RunspacePool(wsman):
        pass


# --- through pypsrp, against a served node ----------------------------------------------------------------------
@pytest.mark.lab
@pytest.mark.parametrize("kw", [
    {"ssl": True, "auth": "ntlm"},
    {"ssl": True, "auth": "negotiate"},
    {"ssl": False, "auth": "ntlm", "encryption": "always"},
    {"ssl": True, "auth": "basic"},
], ids=["ntlm-https", "negotiate-https", "ntlm-http", "basic-https"])
def test_wrong_password_is_pypsrp_authentication_error(fake_node, kw):
    with pytest.raises(AuthenticationError) as err:
        open_and_close(fake_node.wsman(password="not-the-password", **kw))
    assert fake_node.password not in str(err.value)


@pytest.mark.lab
@pytest.mark.parametrize("auth", ["ntlm", "basic"])
def test_logons_are_counted_accepted_and_refused(fake_node, auth):
    # The counters an account lockout test reads (lab status: counters.logons / logons_refused).
    with RunspacePool(fake_node.wsman(auth=auth)):
        pass
    accepted = fake_node.backend.logons.get(True, 0)
    assert accepted >= 1 and False not in fake_node.backend.logons  # Basic checks the password on each request
    with pytest.raises(AuthenticationError):
        open_and_close(fake_node.wsman(password="not-the-password", auth=auth))
    assert fake_node.backend.logons[True] == accepted and fake_node.backend.logons[False] >= 1


@pytest.mark.lab
@pytest.mark.parametrize("user", [".\\fleet", "LABNODE1\\fleet", "localhost\\FLEET", "Fleet"])
def test_local_account_forms_are_accepted(fake_node, user):
    with RunspacePool(fake_node.wsman(username=user)):
        pass


@pytest.mark.lab
@pytest.mark.parametrize("auth", ["ntlm", "basic"])
def test_unknown_domain_or_user_is_refused(fake_node, auth):
    for user in ("OTHERDOM\\fleet", "nobody"):
        with pytest.raises(AuthenticationError):
            open_and_close(fake_node.wsman(username=user, auth=auth))


@pytest.mark.lab
def test_basic_is_not_offered_over_http(fake_node):
    with pytest.raises(AuthenticationError):
        open_and_close(fake_node.wsman(ssl=False, auth="basic", encryption="never"))


@pytest.mark.lab
def test_channel_binding_is_enforced_over_https(fake_node):
    # A client that does not bind the TLS channel could be talking through a man in the middle.
    with pytest.raises(AuthenticationError), RunspacePool(fake_node.wsman(negotiate_send_cbt=False)):
        pass


@pytest.mark.lab
def test_domain_account_only_in_its_own_domain(serve_backend, lab_address, fake_backend_class):
    node = serve_backend(fake_backend_class(name="LABDOM1", address=lab_address()),
                         credentials={"CORP\\deploy": LAB_PASSWORD})
    with RunspacePool(node.wsman(username="CORP\\deploy", password=LAB_PASSWORD)):
        pass
    with pytest.raises(AuthenticationError):
        open_and_close(node.wsman(username="deploy", password=LAB_PASSWORD))


# --- unit level: ConnectionAuth with pyspnego's client -----------------------------------------------------------
def _policy(cbt: bytes | None = None, basic: bool = True) -> AuthPolicy:
    return AuthPolicy(Credentials({LAB_USER: LAB_PASSWORD}, computer_name="UNIT1"), allow_basic=basic,
                      channel_bindings=cbt, require_encryption=False)


def _handshake(auth: ConnectionAuth, client_cbt: bytes | None = None, password: str = LAB_PASSWORD):
    bindings = spnego.channel_bindings.GssChannelBindings(application_data=client_cbt) if client_cbt else None
    client = spnego.client(LAB_USER, password, hostname="unit1", protocol="negotiate", channel_bindings=bindings,
                           options=spnego.NegotiateOptions.wrapping_winrm)
    token = client.step()
    while True:
        decision = auth.authorize("Negotiate " + base64.b64encode(token).decode())
        reply = next((v for k, v in decision.headers if v.startswith("Negotiate")), "")
        in_token = base64.b64decode(reply.split(" ", 1)[1]) if " " in reply else None
        if decision.ok:
            if in_token:
                client.step(in_token)
            return client, decision
        if not in_token:
            return client, decision
        token = client.step(in_token)


def test_negotiate_handshake_then_connection_stays_authenticated():
    auth = ConnectionAuth(_policy())
    assert not auth.authorize(None).ok
    client, decision = _handshake(auth)
    assert decision.ok and client.complete
    assert auth.authorize(None).ok  # pypsrp sends no Authorization after the handshake
    assert not auth.authorize(None, refuse=True).ok  # the auth-failure fault drops the connection's login


def test_cbt_mismatch_is_refused():
    auth = ConnectionAuth(_policy(cbt=b"tls-server-end-point:" + b"\x01" * 32))
    _, decision = _handshake(auth, client_cbt=b"tls-server-end-point:" + b"\x02" * 32)
    assert not decision.ok
    _, decision = _handshake(ConnectionAuth(_policy(cbt=b"tls-server-end-point:" + b"\x01" * 32)),
                             client_cbt=b"tls-server-end-point:" + b"\x01" * 32)
    assert decision.ok


def test_message_encryption_round_trip_with_pypsrp_framing():
    auth = ConnectionAuth(_policy())
    client, decision = _handshake(auth)
    assert decision.ok
    pypsrp_side = WinRMEncryption(client, WinRMEncryption.SPNEGO)
    content_type, body = pypsrp_side.wrap_message(b"<s:Envelope>secret soap</s:Envelope>")
    assert b"secret soap" not in body
    header = f'{content_type};protocol="{WinRMEncryption.SPNEGO}";boundary="Encrypted Boundary"'
    assert auth.unwrap_body(header, body) == b"<s:Envelope>secret soap</s:Envelope>"
    reply_type, reply = auth.wrap_body(b"<s:Envelope>answer</s:Envelope>")
    assert reply_type.startswith("multipart/encrypted;") and b"answer" not in reply
    assert pypsrp_side.unwrap_message(reply, "Encrypted Boundary") == b"<s:Envelope>answer</s:Envelope>"
    with pytest.raises(EncryptionError):
        auth.unwrap_body(header, body.replace(b"Length=", b"Length=9", 1))


def test_basic_header_checks_password_and_scheme():
    auth = ConnectionAuth(_policy())
    good = base64.b64encode(f"{LAB_USER}:{LAB_PASSWORD}".encode()).decode()
    bad = base64.b64encode(f"{LAB_USER}:wrong".encode()).decode()
    assert auth.authorize("Basic " + good).ok
    assert not auth.authorize("Basic " + bad).ok
    assert not auth.authorize("Basic !!!not-base64").ok
    assert not ConnectionAuth(_policy(basic=False)).authorize("Basic " + good).ok


def test_credentials_validate_and_register_secrets():
    with pytest.raises(ConfigError, match="credentials"):
        Credentials({}, computer_name="X")
    with pytest.raises(ConfigError, match="contains ':'"):
        Credentials({"a:b": "password1"}, computer_name="X")
    creds = Credentials({"svc": "Sup3r-Secret-Value"}, computer_name="X")
    assert redact("pw=Sup3r-Secret-Value") == f"pw={MASK}"
    store = creds.ntlm_store()
    assert store.stat().st_mode & 0o077 == 0
    assert "Sup3r-Secret-Value" not in store.read_text()  # NT hashes only
    creds.close()
    assert not store.exists()
