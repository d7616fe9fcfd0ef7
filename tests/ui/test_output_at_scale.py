"""Output at 500 hosts (issue 17 item 2): the end-of-run table and `status` fit one screen (40 lines at 120
columns) by default, `--all` shows every host, `--failed-only` only the problems, one summary line ends a run,
"rollout in progress" replaces DRIFT while a run holds the locks, and piped output is never folded at 80."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from rich.console import RenderableType

from fleetctl.node.client import NodeClient
from fleetctl.rollout.events import EventBus, HostOutcome, RunFinished, RunStarted
from fleetctl.rollout.health import HealthCheck, ProbeResult, ProbeVerdict
from fleetctl.status.collect import FleetStatus, StatusTarget, collect_status
from fleetctl.transport.fake import FakeTransport
from fleetctl.ui.console import FleetConsole
from fleetctl.ui.host_rows import RowOptions
from fleetctl.ui.live import LiveView
from fleetctl.ui.report import SummaryOptions, summary_line, summary_table
from fleetctl.ui.status import status_table

SCREEN_LINES, SCREEN_COLUMNS = 40, 120
HOSTS = [f"web{i:03d}" for i in range(1, 501)]
ADDRESSES = {h: f"10.0.{i // 250}.{i % 250 + 1}" for i, h in enumerate(HOSTS)}


def terminal(width: int = SCREEN_COLUMNS) -> tuple[FleetConsole, io.StringIO]:
    buf = io.StringIO()
    return FleetConsole(file=buf, width=width, height=SCREEN_LINES, force_terminal=True, color_system=None,
                        highlight=False), buf


def lines_of(*renderables: RenderableType, width: int = SCREEN_COLUMNS) -> list[str]:
    console, buf = terminal(width)
    for r in renderables:
        console.print(r)
    return buf.getvalue().rstrip("\n").splitlines()


# --- the end of a deploy ------------------------------------------------------------------------------------------


def outcomes_of_a_bad_night() -> dict[str, HostOutcome]:
    """455 deployed, 30 refused the password (each at its own address), 15 rolled back by their gate."""
    out: dict[str, HostOutcome] = {}
    for i, h in enumerate(HOSTS):
        if i < 30:
            out[h] = HostOutcome(h, "failed", None, f"connect: authentication failed for user 'fleet' with ntlm at "
                                                    f"{ADDRESSES[h]}:5986 (HTTP 401)", {"connect": 0.1})
        elif i < 45:
            out[h] = HostOutcome(h, "rolled_back", "1.9.0-0badc0de", "health: status 500 (expected 200)",
                                 {"health": 12.0})
        else:
            out[h] = HostOutcome(h, "deployed", f"2.0.0-{i:08x}", None, {"transfer": 1.0, "health": 9.0 + i / 500})
    return out


def test_the_final_table_of_500_hosts_fits_one_screen_with_problems_first() -> None:
    outcomes = outcomes_of_a_bad_night()
    options = SummaryOptions(RowOptions(addresses=ADDRESSES))
    message = "30 host(s) failed within the failure budget of 50 (455 deployed, 15 rolled back, 30 failed)"
    lines = lines_of(summary_table(outcomes, "Run r1", options), summary_line(1, message, outcomes))
    text = "\n".join(lines)
    assert len(lines) <= SCREEN_LINES, text
    rows = [line for line in lines if "web" in line]
    assert "web[001:030]" in rows[0] and "30 failed" in rows[0] and "<address>:5986" in text
    assert "web[031:045]" in rows[1] and "15 rolled_back" in rows[1] and "1.9.0" in rows[1]
    assert "web[046:500]" in rows[2] and "455 deployed" in rows[2] and "2.0.0" in rows[2]
    assert "10.0.0." not in text  # the shared error is shown once, without one host's address
    # One summary line: the counts appear once, in the engine's message.
    assert lines[-1].startswith("exit code 1: ") and text.count("455 deployed, 15 rolled back") == 1


def test_all_prints_every_row_and_failed_only_just_the_problems() -> None:
    outcomes = outcomes_of_a_bad_night()
    every = lines_of(summary_table(outcomes, "Run r1", SummaryOptions(RowOptions(show_all=True))))
    assert all(any(h in line for line in every) for h in HOSTS)
    assert sum(1 for line in every if "deployed" in line) == 455
    failed = "\n".join(lines_of(summary_table(outcomes, "Run r1",
                                              SummaryOptions(RowOptions(failed_only=True, addresses=ADDRESSES)))))
    assert "deployed" not in failed.split("left out")[0] and "web[001:030]" in failed and "web[031:045]" in failed
    assert "455 without a problem left out (--failed-only)" in failed
    both = lines_of(summary_table(outcomes, "Run r1", SummaryOptions(RowOptions(failed_only=True, show_all=True))))
    assert sum(1 for line in both if "web0" in line) == 45


def test_a_rollback_run_does_not_count_its_own_success_as_a_problem() -> None:
    outcomes = {h: HostOutcome(h, "rolled_back", "1.9.0-00000000") for h in HOSTS[:3]}
    outcomes["web004"] = HostOutcome("web004", "failed", None, "switch: not found")
    table = "\n".join(lines_of(summary_table(outcomes, "r", SummaryOptions(RowOptions(failed_only=True),
                                                                           kind="rollback"))))
    assert "web004" in table and "web001" not in table


def test_the_live_view_ends_with_one_summary_line() -> None:
    console, buf = terminal()
    view = LiveView(console, summary=SummaryOptions(RowOptions()))
    bus = EventBus()
    view.subscribe(bus)
    bus.emit(RunStarted("r2", "deploy", "pb.yml", "hello", "2.0.0", None, "rolling", "ops", (("a", "b"),), False))
    ends = {"a": HostOutcome("a", "deployed", "2.0.0-1"), "b": HostOutcome("b", "deployed", "2.0.0-2")}
    bus.emit(RunFinished("r2", 0, ends, "2 deployed"))
    view.close()
    out = buf.getvalue()
    end = out.rsplit("└", 1)[1]  # after the summary table (the live frame above it shows counts too)
    assert end.count("2 deployed") == 1 and out.count("exit code") == 1  # was "exit code 0  2 deployed  2 deployed"
    assert end.strip().splitlines()[-1] == "exit code 0: 2 deployed"


# --- status ---------------------------------------------------------------------------------------------------


def node_state(current: str | None, previous: str | None = None, *, lock: dict[str, Any] | None = None,
               history: list[dict[str, Any]] | None = None, service: str = "Running") -> dict[str, Any]:
    releases = [{"release": r, "version": r.split("-")[0], "sha256": "0" * 64, "installed_at": None}
                for r in (previous, current) if r]
    return {"releases": releases, "current": current, "previous": previous,
            "service": {"exists": True, "state": service, "pid": 42, "restarts": 0}, "lock": lock,
            "history": history or []}


def fleet_status(answer: Callable[[str], Any], healthy: Callable[[str], bool] = lambda h: True) -> FleetStatus:
    def connect(host: str) -> NodeClient:
        return NodeClient(FakeTransport(lambda call: answer(host), host=host))

    def probe(check: HealthCheck, client: NodeClient) -> ProbeVerdict:
        ok = healthy(client.host)
        return ProbeVerdict(ProbeResult(200 if ok else 500, "{}", 1), None if ok else "status 500 (expected 200)")

    check = HealthCheck(url="http://x/healthz")
    targets = [StatusTarget(h, "hello", "C:\\apps\\hello", "hello", lambda v: check) for h in HOSTS]
    return collect_status(targets, connect, forks=50, probe=probe)


def test_status_of_500_hosts_opens_with_a_summary_and_fits_one_screen() -> None:
    from fleetctl.protocol.errors import AuthenticationFailed

    def answer(host: str) -> Any:
        n = HOSTS.index(host)
        if n >= 480:
            return AuthenticationFailed(f"authentication failed for user 'fleet' with ntlm at {ADDRESSES[host]}:5986 "
                                        "(HTTP 401)", host=host)
        return node_state(f"2.0.0-{n:08x}" if n >= 3 else f"1.9.0-{n:08x}", f"1.9.0-{n:08x}")

    result = fleet_status(answer, healthy=lambda h: h != "web100")
    lines = lines_of(status_table(result, "hello", RowOptions(addresses=ADDRESSES)))
    text = "\n".join(lines)
    assert len(lines) <= SCREEN_LINES, text
    assert lines[0].startswith("Status of hello: 480/500 host(s) answered, majority 2.0.0")
    assert "releases: 477 on 2.0.0, 3 on 1.9.0" in text
    assert "health: 479 healthy, 1 unhealthy, 20 unreachable" in text
    assert "drift: 3 host(s) not on 2.0.0 (web[001:003])" in text
    assert "20 hosts: authentication failed for user 'fleet' with ntlm at <address>:5986 (HTTP 401) " \
           "(web[481:500])" in text
    # Problems first: the unreachable, the unhealthy, the drifted; then everything else in one row.
    rows = [line for line in lines if line.startswith("│ web")]
    assert "web[481:500]" in rows[0] and "unreachable" in rows[0]
    assert "web100" in rows[1] and "unhealthy" in rows[1]
    assert "web[001:003]" in rows[2] and "DRIFT" in rows[2]
    assert "476" in rows[3] and "healthy" in rows[3]

    failed = "\n".join(lines_of(status_table(result, "hello", RowOptions(failed_only=True, addresses=ADDRESSES))))
    assert "web[001:003]" in failed and "web100" in failed and "web[004:" not in failed
    every = lines_of(status_table(result, "hello", RowOptions(show_all=True)), width=200)
    assert sum(1 for line in every if line.startswith("│ web")) == 500


def test_while_a_run_holds_the_locks_hosts_on_the_new_release_are_rolling_out_not_drift() -> None:
    lock = {"owner": "ops@ctl", "deploy_id": "20261202T020000Z-1a2b3c", "acquired_at": "2026-12-02T02:00:00Z",
            "expires_at": "2026-12-02T02:30:00Z"}
    before = [{"at": "2026-11-30T10:00:00Z", "action": "install", "release": "1.9.0-a"},
              {"at": "2026-11-30T10:00:05Z", "action": "switch", "release": "1.9.0-a"}]
    moved = before + [{"at": "2026-12-02T02:00:10Z", "action": "install", "release": "2.0.0-b"},
                      {"at": "2026-12-02T02:00:12Z", "action": "switch", "release": "2.0.0-b"}]
    rolled = moved + [{"at": "2026-12-02T02:00:40Z", "action": "switch", "release": "1.9.0-a"}]

    def answer(host: str) -> Any:
        n = HOSTS.index(host)
        if n < 300:  # the run moved these (more than half: the old majority must not turn them into DRIFT)
            return node_state("2.0.0-b", "1.9.0-a", lock=lock, history=moved)
        if n == 300:  # its gate failed and the run switched it back
            return node_state("1.9.0-a", "2.0.0-b", lock=lock, history=rolled)
        return node_state("1.9.0-a", None, lock=lock, history=before)

    result = fleet_status(answer)
    assert result.majority == "1.9.0"  # the fleet as it was before the run
    assert not result.drifting
    assert [(r.run_id, r.owner, r.target) for r in result.runs] == [("20261202T020000Z-1a2b3c", "ops@ctl", ("2.0.0",))]
    lines = lines_of(status_table(result, "hello"))
    text = " ".join(line.strip() for line in lines)  # a terminal wraps the long line at a space
    assert len(lines) <= SCREEN_LINES
    assert "rollout in progress (run 20261202T020000Z-1a2b3c, by ops@ctl, since 2026-12-02 02:00:00Z): " \
           "300 rolling out to 2.0.0, 199 waiting, 1 rolled back" in text
    assert "DRIFT" not in text and "rolling out" in text and "waiting" in text

    # Once the run let go of the locks, the same fleet is a plain majority question again.
    def after(host: str) -> Any:
        answer_ = answer(host)
        return {**answer_, "lock": None}

    done = fleet_status(after)
    assert not done.runs and done.majority == "2.0.0" and len(done.drifting) == 200
    assert "rollout in progress" not in "\n".join(lines_of(status_table(done, "hello")))


def test_a_change_freeze_or_an_expired_lock_is_not_a_rollout() -> None:
    freeze = {"owner": "ops", "deploy_id": "freeze-1", "acquired_at": "2026-12-02T02:00:00Z", "reason": "quarter close"}
    expired = {"owner": "ops", "deploy_id": "r0", "acquired_at": "2026-12-01T02:00:00Z", "expired": True}
    result = fleet_status(lambda h: node_state("1.0-a", lock=freeze if h < "web250" else expired))
    assert result.runs == () and all(s.rollout is None for s in result.hosts.values())


# --- not a terminal -------------------------------------------------------------------------------------------


def test_piped_status_is_plain_lines_never_folded_at_80_columns() -> None:
    long_reason = "health: " + "x" * 150
    result = fleet_status(lambda h: node_state("1.0-a"), healthy=lambda h: h != "web007")
    result = FleetStatus({h: s if h != "web007" else s.__class__(**{**s.__dict__, "error": long_reason})
                          for h, s in result.hosts.items()}, result.majority)
    buf = io.StringIO()
    piped = FleetConsole(file=buf, width=80, color_system=None)  # what a pipe gets: not a terminal, 80 columns
    assert not piped.is_terminal
    piped.print(status_table(result, "hello"))
    lines = buf.getvalue().splitlines()
    assert f"web007: {long_reason}" in lines  # one line of 158 characters, not folded
    row = next(line for line in lines if line.startswith("web007"))
    assert row.split() == ["web007", "1", "1.0-a", "-", "Running", "unhealthy", "-", "-", "no"]  # 1: hosts in the row
    assert not any(ch in buf.getvalue() for ch in "│┃━─")  # no table borders off a terminal
    assert all(line == line.rstrip() for line in lines)


def test_every_success_outcome_is_not_a_problem() -> None:
    """A new outcome must be placed: success (collapsed with its kind) or a problem (shown first)."""
    from typing import get_args

    from fleetctl.rollout.events import Outcome
    from fleetctl.ui.report import SUCCESS_OUTCOMES

    options = SummaryOptions()
    placed = {o: options.problem_rank(o) for o in get_args(Outcome)}
    assert {o for o, rank in placed.items() if rank is None} == set(SUCCESS_OUTCOMES)
    assert {o for o, rank in placed.items() if rank is not None} == {"failed", "unknown", "rolled_back", "not_started"}
