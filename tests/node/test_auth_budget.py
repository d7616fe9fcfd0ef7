"""The authentication failure budget (node/auth_budget.py) over fake transports: per account, never stopping a host
that already authenticated, 0 meaning no budget, and `fleet_max_auth_failures` validated."""

from __future__ import annotations

import pytest

from fleetctl.config.connection import ConnectionSettings
from fleetctl.errors import ConfigError
from fleetctl.node.auth_budget import NotTried
from fleetctl.node.fleet import HostClients
from fleetctl.protocol.errors import AuthenticationFailed, HostUnreachable
from fleetctl.transport.fake import FakeCall, FakeNode, FakeTransport


def settings(host: str, user: str = "deploy", budget: int | None = None) -> ConnectionSettings:
    variables = {"ansible_host": "127.0.0.9", "fleet_user": user, "fleet_password": "pw", "fleet_auth": "ntlm"}
    if budget is not None:
        variables["fleet_max_auth_failures"] = str(budget)
    return ConnectionSettings.from_hostvars(host, variables)


class Fleet:
    """Fake hosts: those in `refusing` answer 401 to every call; every call is counted per host."""

    def __init__(self, refusing: set[str]) -> None:
        self.refusing = refusing
        self.calls: dict[str, int] = {}

    def transport(self, s: ConnectionSettings) -> FakeTransport:
        node = FakeNode()

        def handler(call: FakeCall) -> object:
            self.calls[s.host_name] = self.calls.get(s.host_name, 0) + 1
            if s.host_name in self.refusing:
                return AuthenticationFailed("authentication failed (HTTP 401)", host=s.host_name)
            return node(call)

        return FakeTransport(handler, host=s.host_name)


def ping_all(hosts: dict[str, ConnectionSettings], fleet: Fleet, forks: int = 1) -> dict[str, str | None]:
    with HostClients(hosts, transport_factory=fleet.transport, forks=forks) as clients:
        results = clients.run(lambda c: c.get_fleet_facts())
    return {h: r.error for h, r in results.items()}


def test_after_three_refusals_the_account_is_not_tried_again() -> None:
    hosts = {f"w{i}": settings(f"w{i}") for i in range(1, 9)}
    fleet = Fleet(refusing=set(hosts))
    errors = ping_all(hosts, fleet)
    assert sorted(fleet.calls) == ["w1", "w2", "w3"]  # the others never got a call
    assert all("not tried: 3 hosts failed authentication as user 'deploy'" in (errors[h] or "")
               for h in ("w4", "w5", "w8"))


def test_the_budget_is_per_account_and_spares_hosts_that_authenticated() -> None:
    hosts = {**{f"bad{i}": settings(f"bad{i}", user="Deploy") for i in range(1, 6)},
             "good": settings("good", user="other")}
    fleet = Fleet(refusing={h for h in hosts if h.startswith("bad")})
    errors = ping_all(hosts, fleet)
    assert errors["good"] is None and fleet.calls["good"] == 1
    assert len([h for h in hosts if h.startswith("bad") and h in fleet.calls]) == 3

    # A client that authenticated keeps working after the budget is spent by others.
    fleet = Fleet(refusing={"r1", "r2", "r3"})
    mixed = {h: settings(h) for h in ("ok", "r1", "r2", "r3")}
    with HostClients(mixed, transport_factory=fleet.transport, forks=1) as clients:
        clients.client("ok").get_fleet_facts()
        for h in ("r1", "r2", "r3"):
            with pytest.raises(AuthenticationFailed):
                clients.client(h).get_fleet_facts()
        clients.client("ok").get_fleet_facts()
        assert fleet.calls["ok"] == 2


def test_other_errors_do_not_count_and_zero_means_no_budget() -> None:
    def unreachable(s: ConnectionSettings) -> FakeTransport:
        return FakeTransport(lambda call: HostUnreachable("connection refused", host=s.host_name),
                             host=s.host_name)

    hosts = {f"u{i}": settings(f"u{i}") for i in range(1, 7)}
    with HostClients(hosts, transport_factory=unreachable, forks=1) as clients:
        errors = {h: r.error for h, r in clients.run(lambda c: c.get_fleet_facts()).items()}
    assert not any("not tried" in (e or "") for e in errors.values())

    unlimited = {f"z{i}": settings(f"z{i}", budget=0) for i in range(1, 7)}
    fleet = Fleet(refusing=set(unlimited))
    ping_all(unlimited, fleet)
    assert len(fleet.calls) == 6
    # fleet_max_auth_failures: 1 stops at the first refusal.
    one = Fleet(refusing={"a", "b"})
    with HostClients({"a": settings("a", budget=1), "b": settings("b", budget=1)}, transport_factory=one.transport,
                     forks=1) as clients:
        results = clients.run(lambda c: c.get_fleet_facts())
    assert isinstance(results["b"].exception, NotTried) and "not tried: 1 host failed" in str(results["b"].error)
    assert one.calls == {"a": 1}


@pytest.mark.parametrize("value", ["-1", "many", "100001"])
def test_bad_budget_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        ConnectionSettings.from_hostvars("w1", {"ansible_host": "127.0.0.9", "fleet_max_auth_failures": value})
    assert "fleet_max_auth_failures" in str(err.value)
