"""WinRM's shell idle timeout as the lab models it: an idle shell is deleted, and what pypsrp then gets is what
Windows sends for an unknown ShellId (WSManFault 2150858843, the same words); use, a running command or a waiting
Receive keep a shell alive; the Create answer tells the client its idle timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool

from fleetctl.lab.backend import NetworkFaults

pytestmark = pytest.mark.lab

SHELL_NOT_FOUND = 2150858843


def echo(pool: RunspacePool) -> list[Any]:
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-Echo")
    return list(ps.invoke())


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def node(serve_backend: Any, lab_address: Any, fake_backend_class: Any) -> Any:
    return serve_backend(fake_backend_class(name="IDLENODE", address=lab_address()), idle_timeout_s=1.0)


def test_an_idle_shell_is_deleted_and_answers_like_windows(node: Any) -> None:
    pool = RunspacePool(node.wsman())
    pool.open()
    assert pool.shell.idle_time_out == "PT1.000S"  # Windows reports the shell's IdleTimeOut in Create
    echo(pool)
    assert wait_until(lambda: node.server.shell_counts() == {"open": 0, "expired": 1, "unknown": 0}, 5)
    with pytest.raises(WSManFaultError) as caught:
        echo(pool)
    fault = caught.value
    assert fault.code == SHELL_NOT_FOUND and node.server.shell_counts()["unknown"] == 1
    assert fault.reason.startswith(f"The request for the Windows Remote Shell with ShellId {pool.shell.id} failed "
                                   "because the shell was not found on the server.")
    # A new pool on the same connection works at once.
    with RunspacePool(pool.connection) as fresh:
        assert echo(fresh)


def test_a_shell_in_use_does_not_expire(node: Any) -> None:
    with RunspacePool(node.wsman()) as pool:
        began = time.monotonic()
        while time.monotonic() - began < 2.5:  # well past the 1 s idle timeout, one request every 0.3 s
            echo(pool)
            time.sleep(0.3)
        assert node.server.shell_counts() == {"open": 1, "expired": 0, "unknown": 0}


def test_a_running_command_keeps_its_shell_past_the_idle_timeout(node: Any) -> None:
    # One Receive long-polls through the whole command (OperationTimeout 20 s): no request arrives meanwhile.
    with RunspacePool(node.wsman()) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Wait-Release")
        result: list[Any] = []
        thread = threading.Thread(target=lambda: result.extend(ps.invoke()))
        thread.start()
        assert wait_until(lambda: "Wait-Release" in node.backend.invoked, 5)
        time.sleep(2.5)  # the command runs for 2.5 idle timeouts
        assert node.server.shell_counts()["expired"] == 0
        node.backend.release.set()
        thread.join(10)
        assert result == ["released"]
        assert echo(pool)  # the countdown restarted when the command completed


def test_a_client_may_ask_for_a_shorter_idle_timeout_never_a_longer_one(node: Any) -> None:
    node.server.idle_timeout_s = 60.0
    with RunspacePool(node.wsman(), idle_timeout=1) as pool:
        assert pool.shell.idle_time_out == "PT1.000S"
    with RunspacePool(node.wsman(), idle_timeout=3600) as pool:
        assert pool.shell.idle_time_out == "PT60.000S"


def test_the_idle_timeout_fault_sets_one_nodes_timeout_for_new_shells(node: Any) -> None:
    node.server.idle_timeout_s = 60.0
    node.backend.faults = NetworkFaults(idle_timeout_s=0.5)
    pool = RunspacePool(node.wsman())
    pool.open()
    assert pool.shell.idle_time_out == "PT0.500S"
    assert wait_until(lambda: node.server.shell_counts()["expired"] == 1, 5)
