"""One TLS client context per CA bundle for every WinRM connection of the process, instead of one per connection.

requests hands urllib3 the CA bundle's path for every connection, and urllib3 then builds a new `SSLContext` and
parses the whole bundle into it: measured here, 17 ms of CPU and ~0.7 MB of memory per connection for the
default bundle (certifi, ~140 CAs), so 1,000 open pools held ~800 MB of certificate stores that are all the
same. `share_tls_context(wsman)` gives pypsrp's HTTPS session an adapter whose connections use a context built
once per bundle (certificate and host name verification unchanged: the context requires a valid chain and
checks the name). Certificate authentication keeps pypsrp's own adapter (a client certificate is loaded into the
context, which must then not be shared), as does validation turned off.
"""

from __future__ import annotations

import os
import ssl
import threading
from typing import Any

import requests
import requests.adapters
from pypsrp.wsman import WSMan
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.util.ssl_ import create_urllib3_context

_contexts: dict[str, ssl.SSLContext] = {}
_lock = threading.Lock()


def shared_context(ca_path: str) -> ssl.SSLContext:
    """The process's client context trusting `ca_path` (a PEM bundle file or a c_rehash directory)."""
    key = os.path.realpath(ca_path)
    with _lock:
        context = _contexts.get(key)
        if context is None:
            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            context.check_hostname = True
            if os.path.isdir(key):
                context.load_verify_locations(capath=key)
            else:
                context.load_verify_locations(cafile=key)
            _contexts[key] = context
        return context


class SharedContextAdapter(requests.adapters.HTTPAdapter):
    """An HTTPS adapter whose connections use one prebuilt context: the CA bundle is not handed to urllib3 per
    connection (it is in the context already)."""

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self._context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, ssl_context=self._context, **pool_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)
        if verify:
            conn.ca_certs = None  # already trusted by the shared context; passing it would rebuild the store
            conn.ca_cert_dir = None


def share_tls_context(wsman: WSMan) -> bool:
    """Give `wsman`'s HTTPS session the shared context for its CA bundle; False when that does not apply
    (HTTP, validation off, certificate authentication). Relies on pypsrp 0.9's transport (pinned in
    pyproject.toml; tests/transport/test_tls.py fails if that changes)."""
    transport = wsman.transport
    if not transport.ssl or transport.auth == "certificate" or transport.cert_validation is False:
        return False
    session: requests.Session = transport._build_session()  # pypsrp builds it lazily on the first request
    verify = session.verify
    ca_path = verify if isinstance(verify, str) else DEFAULT_CA_BUNDLE_PATH
    theirs = session.get_adapter("https://")
    if not isinstance(theirs, requests.adapters.HTTPAdapter):
        return False
    ours = SharedContextAdapter(shared_context(ca_path), max_retries=theirs.max_retries)
    # pypsrp wraps its pools so that it can forbid new connections while a message exchange needs the old one.
    ours.poolmanager.pool_classes_by_scheme = theirs.poolmanager.pool_classes_by_scheme
    session.mount("https://", ours)
    transport.session = session
    return True
