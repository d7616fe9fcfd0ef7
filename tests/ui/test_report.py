"""The `--json` report subscriber and the summary table."""

from __future__ import annotations

import io

from rich.console import Console

from fleetctl.config.redaction import forget_secrets, register_secret
from fleetctl.rollout.events import EventBus, HostFinished, HostOutcome, RunFinished, RunStarted
from fleetctl.ui.report import JsonReport, counts_line, summary_table


def run_started(batches: tuple[tuple[str, ...], ...]) -> RunStarted:
    return RunStarted("run-7", "deploy", "pb.yml", "hello", "1.0", "1.0-abc", "rolling", "ops", batches, False)


def test_document_has_exactly_the_documented_shape() -> None:
    bus = EventBus()
    report = JsonReport()
    report.subscribe(bus)
    bus.emit(run_started((("a",), ("b", "c"))))
    bus.emit(HostFinished(HostOutcome("a", "deployed", "1.0-abc", None, {"health": 1.0})))
    bus.emit(HostFinished(HostOutcome("b", "failed", None, "status 500")))
    bus.emit(RunFinished("run-7", 1, {"a": HostOutcome("a", "deployed", "1.0-abc"),
                                      "b": HostOutcome("b", "rolled_back", "0.9", "status 500")}))
    doc = report.document()
    assert list(doc) == ["deploy_id", "exit_code", "message", "notes", "hosts"]
    assert doc["deploy_id"] == "run-7" and doc["exit_code"] == 1 and doc["message"] is None and doc["notes"] == []
    assert list(doc["hosts"]) == ["a", "b", "c"]  # plan order; c never finished
    assert doc["hosts"]["a"] == {"outcome": "deployed", "release": "1.0-abc", "error": None}
    assert doc["hosts"]["b"] == {"outcome": "rolled_back", "release": "0.9", "error": "status 500"}
    assert doc["hosts"]["c"] == {"outcome": "not_started", "release": None, "error": None}


def test_a_run_that_ended_by_an_exception_still_reports_every_host() -> None:
    report = JsonReport()
    report.record(run_started((("a", "b"),)))
    report.record(HostFinished(HostOutcome("a", "deployed", "1.0-abc")))
    doc = report.document(exit_code=130)
    assert doc["exit_code"] == 130
    assert {h: v["outcome"] for h, v in doc["hosts"].items()} == {"a": "deployed", "b": "not_started"}


def test_secrets_are_masked_in_the_document() -> None:
    register_secret("TopSecretValue99")
    try:
        report = JsonReport()
        report.record(run_started((("a",),)))
        report.record(HostFinished(HostOutcome("a", "failed", None, "login TopSecretValue99 refused")))
        assert "TopSecretValue99" not in str(report.document())
    finally:
        forget_secrets()


def test_summary_table_shows_brackets_literally_and_totals_time() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=120, force_terminal=False)
    console.print(summary_table({
        "web[01]": HostOutcome("web[01]", "failed", None, "[red]not markup[/red]", {"a": 1.25, "b": 2.0}),
        "web02": HostOutcome("web02", "deployed", "1.0-abc"),
    }))
    out = buf.getvalue()
    assert "web[01]" in out and "[red]not markup[/red]" in out and "3.2s" in out


def test_counts_line_order() -> None:
    assert counts_line({"failed": 1, "deployed": 3, "odd": 2}) == "3 deployed, 1 failed, 2 odd"
