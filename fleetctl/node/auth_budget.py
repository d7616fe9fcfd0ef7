"""The authentication failure budget of one command: after `fleet_max_auth_failures` hosts (default 3) refused an
account's credentials, the command's remaining hosts are not tried with that account.

Why: a directory's account lockout policy locks an account after a few failed logons (often 5 to 10 within a
window), and a wrong password tried on 500 hosts in parallel locks the deploy account for everyone, including the
people who would fix it. The budget counts per account (the user name, case-insensitive): a host that uses another
account is still tried. A host that authenticated once in this command is never stopped by the budget later.

`AuthBudget.guard(transport, settings)` wraps a transport; `node/fleet.py` `connect_client` is the one place that
does it. Hosts already connecting when the budget is spent finish their attempt (at most `forks - 1` more).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

from fleetctl.config.connection import ConnectionSettings
from fleetctl.protocol.errors import AuthenticationFailed, NodeOperationError, TransportError
from fleetctl.transport.base import Call, Transport


class NotTried(TransportError):
    """This host was not contacted: the command's authentication failure budget for its account is spent."""


class AuthBudget:
    """Hosts that failed authentication in one command, per account; thread-safe (hosts connect in parallel)."""

    def __init__(self) -> None:
        self._failed: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def guard(self, transport: Transport, settings: ConnectionSettings) -> Transport:
        """`transport`, refusing to connect once the budget of `settings`' account is spent."""
        return _BudgetedTransport(transport, settings, self)

    def failures(self, settings: ConnectionSettings) -> int:
        with self._lock:
            return len(self._failed.get(_account(settings), ()))

    def check(self, settings: ConnectionSettings) -> None:
        """Raise `NotTried` when `settings`' account already failed on its budget of hosts."""
        limit = settings.max_auth_failures
        if limit <= 0:
            return  # 0: no budget (an account no lockout policy applies to)
        if self.failures(settings) >= limit:
            who = f"user '{settings.user}'" if settings.user else "the current credentials"
            raise NotTried(f"not tried: {limit} host{'s' if limit != 1 else ''} failed authentication as {who} (account lockout policy; fix "
                           f"{settings.user_var}/{settings.password_var}, or raise fleet_max_auth_failures)",
                           host=settings.host_name)

    def record_failure(self, settings: ConnectionSettings) -> None:
        with self._lock:
            self._failed.setdefault(_account(settings), set()).add(settings.host_name)


def _account(settings: ConnectionSettings) -> str:
    # Windows account names are case-insensitive; certificate auth has no user, its key file is the identity.
    return (settings.user or settings.cert_pem or "").lower()


class _BudgetedTransport(Transport):
    """Checks the budget before each call until the host has authenticated once; counts its refusals."""

    def __init__(self, inner: Transport, settings: ConnectionSettings, budget: AuthBudget) -> None:
        self.inner = inner
        self.host = inner.host
        self._settings = settings
        self._budget = budget
        self._authenticated = False

    def _through(self, call: Any) -> Any:
        if not self._authenticated:
            self._budget.check(self._settings)
        try:
            result = call()
        except AuthenticationFailed:
            self._budget.record_failure(self._settings)
            raise
        except NodeOperationError:
            self._authenticated = True  # the node answered: the credentials were accepted
            raise
        self._authenticated = True
        return result

    def invoke(self, operation: str, params: dict[str, Any],
               input_objects: Iterable[str] | None = None) -> dict[str, Any]:
        return dict(self._through(lambda: self.inner.invoke(operation, params, input_objects)))

    def invoke_all(self, calls: Sequence[Call]) -> list[dict[str, Any] | NodeOperationError]:
        return list(self._through(lambda: self.inner.invoke_all(calls)))

    def open(self) -> None:
        self._through(self.inner.open)

    @property
    def max_input_object_bytes(self) -> int:
        return self.inner.max_input_object_bytes

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Anything else a transport offers (statistics, settings) is the wrapped transport's.
        return getattr(self.inner, name)
