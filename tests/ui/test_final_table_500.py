"""The end of a real (fake-fleet) 500-host deploy on a 120x40 terminal: the engine, the live view and the summary
wired as `fleetctl deploy` wires them; 20 hosts refuse the credentials. The final table and its one summary line
fit one screen, alike failures share one row, `--all` and `--failed-only` do what they say."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rollout.fakes import (  # tests/ is on sys.path (tests/ui is a package)
    PLAYBOOK,
    FakeFleet,
    options,
    write_project,
)

from fleetctl.rollout.engine import RunResult
from fleetctl.rollout.events import EventBus
from fleetctl.rollout.runner import prepare_deploy, run_deploy
from fleetctl.ui.console import FleetConsole
from fleetctl.ui.host_rows import RowOptions
from fleetctl.ui.live import LiveView
from fleetctl.ui.report import SummaryOptions, summary_table

HOSTS = 500


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, list[str]]:
    return deploy_500(tmp_path_factory.mktemp("deploy500"), RowOptions())


def deploy_500(tmp_path: Path, rows: RowOptions) -> tuple[RunResult, list[str]]:
    project = write_project(tmp_path, HOSTS, playbook=_playbook())
    fleet = FakeFleet([f"n{i:02d}" for i in range(1, HOSTS + 1)])
    for i in range(1, 21):
        node = fleet.nodes[f"n{i + 100:02d}"]
        node.unreachable, node.lost_as = True, "auth-failure"
    buf = io.StringIO()
    console = FleetConsole(file=buf, width=120, height=40, force_terminal=True, color_system=None)
    view = LiveView(console, summary=SummaryOptions(rows), refresh_per_second=1)
    bus = EventBus()
    view.subscribe(bus)
    try:
        result = run_deploy(prepare_deploy(options(project, max_failed="20")), bus, connect=fleet.connect)
    finally:
        bus.close()
        view.close()
    # What stays on screen: from the summary table's title to the end (the live frames above it are transient).
    text = buf.getvalue()
    return result, text[text.rindex(f"Run {result.run_id}"):].rstrip("\n").splitlines()


def _playbook() -> str:
    return PLAYBOOK.replace("  batch: 2\n", "  batch: 25%\n  forks: 100\n")


def test_the_final_table_of_a_500_host_deploy_fits_one_screen(deployed: tuple[RunResult, list[str]]) -> None:
    result, lines = deployed
    screen = "\n".join(lines)
    assert result.exit_code == 1  # 20 failed, within the budget of 20: the rest deployed
    assert len(lines) <= 40, screen
    rows = [line for line in lines if line.startswith("│ n")]
    assert "n[101:120]" in rows[0] and "20 failed" in rows[0]
    assert "n[01:100,121:500]" in rows[1] and "480 deployed" in rows[1] and "1.0.0" in rows[1]
    assert screen.count("refused the credentials") == 1  # grouped: once, not 20 times
    assert lines[-1].startswith("exit code 1: 20 host(s) failed") and screen.count("480 deployed, 20 failed") == 1


def test_all_and_failed_only_on_the_final_table(deployed: tuple[RunResult, list[str]]) -> None:
    result, _ = deployed

    def rows(options: RowOptions) -> list[str]:
        buf = io.StringIO()
        FleetConsole(file=buf, width=120, force_terminal=True, color_system=None).print(
            summary_table(result.outcomes, "Run", SummaryOptions(options)))
        return [line for line in buf.getvalue().splitlines() if line.startswith("│ n")]

    every = rows(RowOptions(show_all=True))
    assert len(every) == HOSTS and all("failed" in row for row in every[:20])  # failed first, then plan order
    failed = rows(RowOptions(failed_only=True, show_all=True))
    assert len(failed) == 20 and all("failed" in row and "refused the credentials" in row for row in failed)
    assert len(rows(RowOptions(failed_only=True))) == 1  # collapsed by default: alike failures, one row
