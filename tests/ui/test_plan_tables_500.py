"""The tables people read before they confirm, at 500 hosts: `rollback`'s from → to table and `deploy
--dry-run`'s preview fit a 40-line screen by default (alike hosts share a row with a host range, problem hosts
first), and `--all` (RowOptions.show_all) gives every host its own row."""

from __future__ import annotations

import io

from rich.console import RenderableType

from fleetctl.rollout.rollback_target import RollbackChoice, RollbackPlan
from fleetctl.rollout.runner import HostPreview
from fleetctl.ui.console import FleetConsole
from fleetctl.ui.dry_run import preview_table
from fleetctl.ui.host_rows import RowOptions
from fleetctl.ui.rollback import choices_table

HOSTS = [f"web{i:03d}" for i in range(1, 501)]


def _lines(renderable: RenderableType) -> list[str]:
    buf = io.StringIO()
    # Off a terminal, as in a CI log: plain lines (a terminal's box adds a fixed four lines).
    FleetConsole(file=buf, width=120, height=40, force_terminal=False, color_system=None).print(renderable)
    return buf.getvalue().splitlines()


def _rollback_plan() -> RollbackPlan:
    """490 hosts go back 1.4.2 -> 1.4.1 (each release id hashes the host's own files), 7 already are on 1.4.1,
    3 keep no release of 1.4.1."""
    choices: dict[str, RollbackChoice] = {}
    for n, host in enumerate(HOSTS):
        old, new = f"1.4.2-{n:08x}", f"1.4.1-{n + 1000:08x}"
        if n < 490:
            choices[host] = RollbackChoice(host, old, new, "switch", "back to the fleet's last good release 1.4.1")
        elif n < 497:
            choices[host] = RollbackChoice(host, new, new, "stay", "already on the fleet's last good release 1.4.1")
        else:
            choices[host] = RollbackChoice(host, old, None, "refuse", "does not keep 1.4.1, and it keeps no older "
                                                                      "release that passed its gate")
    return RollbackPlan("1.4.1", choices)


def test_rollback_table_at_500_hosts_fits_one_screen() -> None:
    lines = _lines(choices_table(_rollback_plan(), "Rollback: from → to"))
    text = "\n".join(lines)
    assert len(lines) <= 40, text
    body = [line for line in lines if line.startswith("web")]
    assert "web[498:500]" in body[0] and "refused (3 hosts)" in body[0]  # the problem first, after the header
    assert any("web[001:490]" in line and "1.4.2" in line and "1.4.1 (490 hosts)" in line for line in body), text
    assert any("web[491:497]" in line and "stays (7 hosts)" in line for line in body), text
    assert "500 hosts, alike ones in one row (--all: a row each)" in text
    assert "-0000" not in text  # collapsed rows show versions, not one host's release id


def test_rollback_table_with_all_has_a_row_per_host() -> None:
    lines = _lines(choices_table(_rollback_plan(), "Rollback: from → to", RowOptions(show_all=True)))
    rows = [line for line in lines if line.startswith("web")]
    assert len(rows) == 500 and rows[0].startswith("web498")  # refused first, then inventory order
    assert "1.4.2-00000000" in "\n".join(lines)


def test_small_rollback_keeps_a_row_per_host() -> None:
    plan = RollbackPlan("1.4.1", {h: RollbackChoice(h, "1.4.2-aaaaaaaa", "1.4.1-bbbbbbbb", "switch", "back")
                                  for h in HOSTS[:5]})
    rows = [line for line in _lines(choices_table(plan, "t")) if line.startswith("web")]
    assert len(rows) == 5 and "1.4.1-bbbbbbbb" in rows[0]


def _previews() -> dict[str, HostPreview]:
    """480 would install 2.0.0, 10 are current, 8 refuse the credentials (each at its own address), 2 are locked."""
    previews: dict[str, HostPreview] = {}
    for n, host in enumerate(HOSTS):
        current, target = f"1.0.0-{n:08x}", f"2.0.0-{n + 1000:08x}"
        if n < 480:
            changes = ("transfer artifact 0123456789ab", f"install release {target}",
                       f"switch {current} -> {target}", "restart service")
            previews[host] = HostPreview(host, current, target, changes)
        elif n < 490:
            previews[host] = HostPreview(host, target, target, ())
        elif n < 498:
            previews[host] = HostPreview(host, None, target, (), error=f"{host}: authentication failed for user "
                                                                     f"'deploy' at 10.0.1.{n}:5986")
        else:
            previews[host] = HostPreview(host, current, target, (
                f"would stop here (exit 4): {host} is locked by ci (deploy d-1, since 10:00)",))
    return previews


def test_dry_run_preview_at_500_hosts_fits_one_screen() -> None:
    previews = _previews()
    addresses = {h: f"10.0.1.{n}" for n, h in enumerate(HOSTS)}
    lines = _lines(preview_table(previews, RowOptions(addresses=addresses)))
    text = "\n".join(lines)
    assert len(lines) <= 40, text
    body = [line for line in lines if line.startswith("web")]
    # Failures first, grouped with the address taken out; then the locked hosts; then the rest.
    assert "web[491:498]" in body[0] and "authentication failed for user 'deploy' at <address>:5986" in text
    assert "web[499,500]" in text and "would stop here" in text
    assert any("web[001:480]" in line and "2.0.0 (480 hosts)" in line for line in body), text
    assert "install release 2.0.0;" in text and "switch 1.0.0 -> 2.0.0" in text
    assert any("web[481:490]" in line and "nothing (current)" in line for line in body), text


def test_dry_run_preview_with_all_has_a_row_per_host() -> None:
    lines = _lines(preview_table(_previews(), RowOptions(show_all=True)))
    rows = [line for line in lines if line.startswith("web")]
    assert len(rows) == 500 and rows[0].startswith("web491")
