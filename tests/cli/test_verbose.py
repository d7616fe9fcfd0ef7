"""`-v` / `-vv`: each node operation with its host, duration and outcome; at -vv each WinRM round trip, connect and
authentication leg too; on stderr, above a live display, never a parameter value or a secret. Units over the fake
transport, then through the CLI against ELF lab nodes (marked lab)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from fleetctl.cli.app import main
from fleetctl.config.redaction import forget_secrets
from fleetctl.node.client import NodeClient
from fleetctl.node.op_log import LoggedTransport
from fleetctl.protocol.errors import HostUnreachable, NodeOperationError
from fleetctl.transport import trace
from fleetctl.transport.fake import FakeCall, FakeTransport, error_document
from fleetctl.ui import verbose
from fleetctl.ui.verbose import set_verbosity, show_above
from tests.rollout.conftest import REPO, Lab, _start_lab
from tests.support import wait_for

SECRET_PASSWORD = "Hunter2-never-shown"
# A call that shared one pipeline with reads riding along (node/read_ahead.py) says so after its outcome.
OP_LINE = re.compile(r"^(\S+)  ([A-Z][a-z]+-Fleet\w+|connect)  (\d+\.\d{3}) s  (ok|error \w+|failed .*?)"
                     r"( \(one pipeline of \d+\))?$")


@pytest.fixture(autouse=True)
def quiet_afterwards() -> Iterator[None]:
    yield
    set_verbosity(0)
    show_above(None)


def _service_call(client: NodeClient) -> None:
    client.set_fleet_service(name="hello", binary_path="C:\\apps\\hello\\current\\hello.exe", account="CORP\\svc",
                             password=SECRET_PASSWORD, environment={"DB_TOKEN": "tok-value-never-shown"})


def test_off_the_client_talks_to_its_transport_directly() -> None:
    set_verbosity(0)
    transport = FakeTransport(lambda call: {})
    assert NodeClient(transport).transport is transport
    set_verbosity(1)
    logged = NodeClient(transport).transport
    assert isinstance(logged, LoggedTransport) and logged.inner is transport
    assert logged.calls is transport.calls  # counters and records stay reachable


def test_v_logs_each_operation_with_duration_and_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    set_verbosity(1)

    def handler(call: FakeCall) -> object:
        if call.operation == "Unlock-FleetApp":
            return error_document("LOCK_NOT_OWNED", "held by another run")
        if call.operation == "Get-FleetFacts":
            return HostUnreachable("connection refused", host="web03", transient=False)
        return {}

    client = NodeClient(FakeTransport(handler, host="web03"))
    _service_call(client)
    with pytest.raises(NodeOperationError):
        client.unlock_fleet_app(app="hello", deploy_id="d1")
    with pytest.raises(HostUnreachable):
        client.get_fleet_facts()
    lines = capsys.readouterr().err.splitlines()
    parsed = [OP_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m.group(1), m.group(2), m.group(4)) for m in parsed if m] == [
        ("web03", "Set-FleetService", "ok"),
        ("web03", "Unlock-FleetApp", "error LOCK_NOT_OWNED"),
        ("web03", "Get-FleetFacts", "failed (HostUnreachable): connection refused"),
    ]


def test_vv_shows_parameter_names_never_values(capsys: pytest.CaptureFixture[str]) -> None:
    set_verbosity(2)
    client = NodeClient(FakeTransport(lambda call: {}, host="web03"))
    _service_call(client)
    client.connect_and_lock(app="hello", owner="ops@ctl", deploy_id="d1", ttl_seconds=60)
    err = capsys.readouterr().err
    assert "[Account, BinaryPath, Environment, Name, Password]" in err
    assert "Lock-FleetApp" in err and "DeployId" in err
    assert SECRET_PASSWORD not in err and "tok-value-never-shown" not in err and "CORP" not in err


def test_lines_print_above_a_live_display_on_the_same_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    set_verbosity(1)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    show_above(console, same_terminal=True)
    logging.getLogger("fleetctl.node").info("%s  %s  %.3f s  %s", "web03", "Start-FleetService", 0.41, "ok")
    assert "web03  Start-FleetService  0.410 s  ok" in screen.getvalue()
    assert capsys.readouterr().err == ""
    # A display on another stream (stderr redirected to a file) does not take the lines.
    show_above(console, same_terminal=False)
    logging.getLogger("fleetctl.node").info("%s  %s", "web03", "again")
    assert "web03  again" in capsys.readouterr().err


def test_a_registered_secret_is_masked_even_if_a_message_carried_it(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetctl.config.redaction import register_secret

    set_verbosity(1)
    register_secret("s3cret-in-a-reason")
    try:
        logging.getLogger("fleetctl.node").info("web03  Get-FleetFacts  0.001 s  failed: %s", "s3cret-in-a-reason")
        assert "s3cret-in-a-reason" not in capsys.readouterr().err
    finally:
        forget_secrets()


def test_round_trip_action_is_read_from_the_soap_header_only() -> None:
    body = (b'<s:Envelope><s:Header><a:Action s:mustUnderstand="true">'
            b'http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command</a:Action></s:Header>'
            b'<s:Body>secret stuff</s:Body></s:Envelope>')
    assert trace.action_of(body) == "Command"
    assert trace.action_of(b"") == "(empty auth request)"
    assert trace.action_of(b"--Encrypted Boundary\r\n...") == "(encrypted message)"


def test_vv_logs_retries_and_pool_reopens_and_off_the_policy_is_untouched(
        capsys: pytest.CaptureFixture[str]) -> None:
    from fleetctl.protocol.errors import HostTimeout
    from fleetctl.transport.retry import retry_transient_io

    policy = retry_transient_io(3, 0.0)
    set_verbosity(1)
    assert trace.retries(policy, "web03", "Get-FleetFacts") is policy  # -v: the transport level is off
    set_verbosity(2)
    failures = iter([HostTimeout("read timed out", host="web03"), None])
    for attempt in trace.retries(policy, "web03", "Get-FleetFacts"):
        with attempt:
            failure = next(failures)
            if failure is not None:
                raise failure
    trace.pool_reopened("web03", "idle past the host's shell timeout")
    err = capsys.readouterr().err
    assert "web03    retry Get-FleetFacts: attempt 1 failed (HostTimeout: read timed out); next in 0.0 s" in err
    assert "web03    pool reopened: idle past the host's shell timeout" in err


@pytest.mark.parametrize("command", ["ping", "deploy", "rollback", "remove", "status", "logs", "lock", "unlock",
                                     "releases", "restart", "exec"])
def test_every_command_that_reaches_hosts_takes_v(capsys: pytest.CaptureFixture[str], command: str) -> None:
    try:
        main([command, "--help"])
    except SystemExit as done:
        assert not done.code
    out = capsys.readouterr().out
    assert "--verbose" in out and "-v" in out


def test_verbosity_option_is_counted_and_reset_by_the_next_command(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("[web]\nw1 ansible_host=127.0.0.1\n")
    for argv, level in ((["-vv"], 2), (["-v"], 1), ([], 0)):
        try:
            main(["ping", "-i", str(inv), "--limit", "nomatch", *argv])
        except SystemExit:
            pass
        assert verbose.verbosity() == level, argv
    capsys.readouterr()


# --- through the CLI, against the lab ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = os.environ.get("FLEETCTL_TEST_VERBOSE_BASE", "127.0.71.1")
    directory = tmp_path_factory.mktemp("verbose")
    lab_gen = _start_lab(directory, 2, base, "linux")
    lab = next(lab_gen)
    playbook = lab.playbook.read_text().replace(
        "    HELLO_ENV:", "    DB_PASSWORD: \"{{ db_password | default('unset') }}\"\n    HELLO_ENV:")
    lab.playbook.write_text(playbook)
    yield lab
    next(lab_gen, None)


@pytest.mark.lab
def test_ping_v_shows_each_operation_with_its_duration(lab: Lab) -> None:
    quiet = lab.fleetctl("ping", "-i", str(lab.inventory))
    assert quiet.returncode == 0, quiet.stderr
    assert not any(OP_LINE.match(line) for line in quiet.stderr.splitlines())
    run = lab.fleetctl("ping", "-i", str(lab.inventory), "-v", "--json")
    assert run.returncode == 0, run.stderr
    assert set(json.loads(run.stdout)["hosts"]) == set(lab.nodes)
    seen = {(m.group(1), m.group(2)) for m in map(OP_LINE.match, run.stderr.splitlines()) if m}
    for node in lab.nodes:
        assert (node, "Get-FleetFacts") in seen, run.stderr
    assert "wsman" not in run.stderr  # the transport level is -vv


@pytest.mark.lab
def test_deploy_vv_shows_round_trips_and_never_a_secret(lab: Lab) -> None:
    password = (lab.lab_dir / "credentials").read_text().strip()
    secret = "Db-Pa55word-never-shown"
    code, doc, err = lab.deploy("--version", "1.0.0", "-e", f"db_password={secret}", "-vv", timeout=300)
    assert code == 0, err
    assert doc["exit_code"] == 0 and set(doc["hosts"]) == set(lab.nodes)  # --json stdout still parses
    operations = {(m.group(1), m.group(2)) for m in map(OP_LINE.match, (line.split("  [")[0] for line in
                                                                         err.splitlines())) if m}
    lock_lines = [m for m in map(OP_LINE.match, (line.split("  [")[0] for line in err.splitlines()))
                  if m and m.group(2) == "Lock-FleetApp"]
    # The lock is taken with the state and artifact reads riding along in the same pipeline, and says so.
    assert lock_lines and all(m.group(5) for m in lock_lines), err
    for node in lab.nodes:
        for op in ("Lock-FleetApp", "Install-FleetRelease", "Set-FleetService", "Switch-FleetRelease",
                   "Start-FleetService", "Unlock-FleetApp"):
            assert (node, op) in operations, (node, op, err)
        assert re.search(rf"^{node}    wsman Command  HTTP 200  \d+\.\d ms", err, re.MULTILINE), err
        assert re.search(rf"^{node}    TCP\+TLS connect \S+  \d+\.\d ms  ok", err, re.MULTILINE), err
        assert re.search(rf"^{node}    wsman Create  HTTP 401 .*authentication leg", err, re.MULTILINE), err
    assert "Environment" in err  # the parameter's name, at -vv
    assert secret not in err and password not in err
    assert secret not in json.dumps(doc) and password not in json.dumps(doc)


@pytest.mark.lab
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_v_lines_print_above_the_live_view_on_a_terminal(lab: Lab, tmp_path: Path) -> None:
    """On a real terminal (a tmux pane) the live view runs and every -v line stays whole in the scrollback: printed
    above the display, not torn by its refreshes."""
    socket = str(tmp_path / "tmux.sock")
    script = tmp_path / "run.sh"
    command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "fleetctl", "deploy", str(lab.playbook), "-i",
                                                str(lab.inventory), "--version", "1.1.0", "--yes", "-v"))
    script.write_text(f"cd {shlex.quote(str(lab.directory))}\nexport PYTHONPATH={shlex.quote(str(REPO))}\n"
                      f"{command}\necho EXIT=$?\nsleep 300\n")

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-S", socket, *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout

    def finished() -> str | None:
        text = tmux("capture-pane", "-p", "-J", "-S", "-2000")
        return text if "EXIT=" in text else None

    # The script ends with `sleep`, so the pane is still there to capture after the deploy printed its exit.
    tmux("new-session", "-d", "-x", "120", "-y", "40", "sh", str(script))
    try:
        screen = wait_for(finished, 240, "the deploy to finish in the pane")
    finally:
        subprocess.run(["tmux", "-S", socket, "kill-server"], capture_output=True, check=False, timeout=30)
    assert "EXIT=0" in screen, screen
    for node in lab.nodes:
        for op in ("Switch-FleetRelease", "Start-FleetService"):
            # (the start carries the state read of the window's first look: "ok (one pipeline of 2)")
            assert re.search(rf"^{node}  {op}  \d+\.\d{{3}} s  ok( \(one pipeline of \d+\))?\s*$", screen,
                             re.MULTILINE), screen
