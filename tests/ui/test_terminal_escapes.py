"""Control characters from a node never reach the operator's terminal as controls (issue 15, item 9): every
string shown goes through `ui.console.safe` -> `config.control_chars.printable`, which shows them as escapes."""

from __future__ import annotations

import io
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Self

import pytest
from rich.console import Console

from fleetctl.config.control_chars import has_control, printable
from fleetctl.ui.console import safe

REPO = Path(__file__).resolve().parents[2]

# Each: what a hostile service could log, and what must be printed instead.
HOSTILE = [
    ("\x1b]0;pwned title\x07", "\\x1b]0;pwned title\\x07"),           # OSC: set window title
    ("\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\", "\\x1b]8;;http://evil/\\x1b\\link\\x1b]8;;\\x1b\\"),  # OSC 8
    ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),                            # CSI: clear screen, home
    ("ok\x1b[1A\x1b[2Kfake line", "ok\\x1b[1A\\x1b[2Kfake line"),     # CSI: overwrite the previous line
    ("\x9b31m", "\\x9b31m"),                                          # C1 CSI
    ("\x1bP+q\x1b\\", "\\x1bP+q\\x1b\\"),                             # DCS
    ("progress\r100%", "progress\\x0d100%"),                          # carriage return rewrites the line
    ("bell\x07 back\x08", "bell\\x07 back\\x08"),
    ("nul\x00del\x7f", "nul\\x00del\\x7f"),
    ("user \u202eexe.txt", "user \\u202eexe.txt"),                    # bidi override (Trojan Source)
    ("\u2066isolate\u2069 \u200fmark", "\\u2066isolate\\u2069 \\u200fmark"),
    ("line\u2028sep", "line\\u2028sep"),
    ("tab\tand\nnewline kept", "tab\tand\nnewline kept"),
    ("ünïcode ✓ 日本", "ünïcode ✓ 日本"),
]


@pytest.mark.parametrize("text, shown", HOSTILE)
def test_printable_shows_controls_as_escapes(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert safe(text) == shown
    assert has_control(text) == (text != shown)


def _render(renderable: Any) -> str:
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=True, width=200, color_system="truecolor").print(renderable)
    return buffer.getvalue()


def _no_hostile_controls(output: str) -> None:
    # Rich's own styling uses SGR (`ESC [ ... m`) only; nothing else may appear.
    import re

    stripped = re.sub(r"\x1b\[[0-9;]*m", "", output)
    bad = [c for c in stripped if c not in "\n\t" and has_control(c)]
    assert not bad, f"control characters reached the terminal: {bad!r} in {stripped!r}"


@pytest.mark.parametrize("text, shown", HOSTILE)
def test_status_table_escapes_what_the_node_said(text: str, shown: str) -> None:
    from fleetctl.status.collect import FleetStatus, HostStatus
    from fleetctl.ui.status import status_table

    host = HostStatus(host=f"web01{text}", answered=True, current=None, previous=None, service=f"Running{text}",
                      healthy=False, lock=None, error=f"probe said {text}")
    out = _render(status_table(FleetStatus(hosts={f"web01{text}": host}, majority=None), "hello"))
    _no_hostile_controls(out)


@pytest.mark.parametrize("text, shown", HOSTILE)
def test_live_view_and_report_escape_host_errors(text: str, shown: str) -> None:
    from fleetctl.ui.report import summary_table

    outcome = SimpleNamespace(outcome="failed", release=f"1.0{text}", error=f"start failed: {text}",
                              timings={"start": 1.0})
    table = summary_table({f"web01{text}": outcome}, title="Run x")  # type: ignore[dict-item]
    _no_hostile_controls(_render(table))


def test_error_line_escapes_controls(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetctl.cli.app import report_error
    from fleetctl.errors import ConfigError

    report_error(ConfigError("node said \x1b]0;pwned\x07 and \u202eevil", file="hosts.yml", key="k"))
    err = capsys.readouterr().err
    assert "\\x1b]0;pwned\\x07" in err and "\\u202eevil" in err
    _no_hostile_controls(err)


class _FakeClient:
    def get_fleet_log(self, **_: Any) -> Any:
        return SimpleNamespace(path="C:\\apps\\hello\\shared\\logs\\hello.log",
                               lines=[text for text, _ in HOSTILE])

    def read_fleet_log(self, **_: Any) -> Any:  # what `logs` reads now (a cursor for -f): the same hostile lines
        return SimpleNamespace(path="C:\\apps\\hello\\shared\\logs\\hello.log",
                               lines=[text for text, _ in HOSTILE], offset=1, size=1, reset=False, more=False)

    def get_fleet_events(self, **_: Any) -> Any:
        events = [SimpleNamespace(time=datetime(2026, 1, 1, tzinfo=UTC), level=f"Error{text}", id=1,
                                  message=f"event {text}") for text, _ in HOSTILE]
        return SimpleNamespace(note=f"note \x1b[2J{HOSTILE[0][0]}", events=events)


class _FakeFleet:
    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def client(self, host: str) -> _FakeClient:
        return _FakeClient()


@pytest.mark.parametrize("events", [False, True])
def test_logs_command_prints_hostile_lines_escaped(events: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import fleetctl.cli.logs as logs_module
    from fleetctl.cli.app import main

    shutil.copytree(REPO / "playbooks" / "hello", tmp_path / "hello", ignore=shutil.ignore_patterns("src"))
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    web01:\n      ansible_host: 127.0.0.1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(logs_module, "HostClients", _FakeFleet)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    try:
        main(["logs", "hello/playbook.yml", "-i", "hosts.yml", "--host", "web01"] + (["--events"] if events else []))
    except SystemExit as done:
        assert done.code in (0, None)
    captured = capsys.readouterr()
    _no_hostile_controls(captured.out)
    _no_hostile_controls(captured.err)
    for _, shown in HOSTILE:
        assert shown.splitlines()[0].split("\t")[0] in captured.out
