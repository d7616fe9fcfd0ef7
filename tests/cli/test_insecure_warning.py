"""Certificate validation turned off is said, by the same warning, on every command that connects to nodes
(issue 15, item 11): deploy (and its --dry-run) and rollback push or switch binaries, so they say it too, before
they connect. The "nodes" are loopback listeners that accept and drop: every command fails to talk to them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from project_support import Project, make_project

COMMANDS = [
    ("ping",),
    ("status", "playbook.yml"),
    ("logs", "playbook.yml", "--host", "web01"),
    ("logs", "playbook.yml", "--host", "web01", "--events"),
    ("deploy", "playbook.yml", "--dry-run"),
    ("deploy", "playbook.yml", "--dry-run", "--json"),
    ("deploy", "playbook.yml", "--yes"),
    ("rollback", "playbook.yml", "--yes"),
    ("remove", "playbook.yml", "--dry-run"),
    ("remove", "playbook.yml", "--yes"),
]


@pytest.fixture(scope="module")
def insecure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    project = make_project(tmp_path_factory.mktemp("insecure"), cert_validation=False)
    yield project
    project.close()


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a))
def test_every_connecting_command_warns_before_it_connects(insecure: Project, argv: tuple[str, ...]) -> None:
    before = insecure.connections
    result = insecure.fleetctl(*argv)
    assert insecure.connections > before, "the command was expected to try the nodes"
    assert result.returncode != 2, result.stderr
    lines = result.stderr.splitlines()
    warned = [i for i, line in enumerate(lines) if line.startswith("warning: certificate validation is OFF")]
    # Exactly one warning, whatever the command, before what the nodes answered (rich may wrap the line).
    assert len(warned) == 1, result.stderr
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert not errors or warned[0] < errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_no_warning_when_validation_is_on(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    try:
        result = project.fleetctl("deploy", "playbook.yml", "--dry-run")
        assert "certificate validation is OFF" not in result.stderr
        assert project.connections > 0
    finally:
        project.close()
