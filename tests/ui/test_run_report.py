"""Run reports: the self-contained HTML page with its SVG timeline, the JUnit file, and the same page opened in a
real headless Chromium (a screenshot and the DOM Chromium built)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetctl.config.redaction import forget_secrets, register_secret
from fleetctl.errors import ConfigError
from fleetctl.state.journal import RunRecord
from fleetctl.ui.run_report import render_html, render_junit, write_reports_next_to, write_run_reports
from fleetctl.ui.timeline import render_timeline

from .report_runs import RUN_ID, SECRET, canary_run

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def run(tmp_path: Path) -> Iterator[RunRecord]:
    register_secret(SECRET)
    yield canary_run(tmp_path)
    forget_secrets()


def step_bars(svg: str) -> list[tuple[str, str, bool]]:
    """(host, step, failed) of every step bar, from the parsed SVG."""
    root = ET.fromstring(svg)
    bars = []
    for row in root.iter(f"{SVG_NS}g"):
        for rect in row.iter(f"{SVG_NS}rect"):
            classes = rect.get("class", "").split()
            if "step" in classes:
                bars.append((row.get("data-host", ""), rect.get("data-step", ""), "failed" in classes))
    return bars


def test_the_timeline_has_one_bar_per_host_step(run: RunRecord) -> None:
    bars = step_bars(render_timeline(run))
    expected = [(host, span.step, span.failed) for host in run.host_names for span in run.hosts[host].timeline()[0]]
    assert bars == expected
    assert len(bars) == 4 + 9 + 9 + (8 + 5) + 4  # locks, web1, web2, web3 to its failed health + rollback, unlocks
    assert [b for b in bars if b[2]] == [("web3", "health", True)]


def test_batches_are_bands_with_their_times_and_outcomes_are_marked(run: RunRecord) -> None:
    svg = render_timeline(run)
    root = ET.fromstring(svg)
    labels = [t.text or "" for t in root.iter(f"{SVG_NS}text") if t.get("class") == "bandlabel"]
    assert labels[0].startswith("batch 1 (canary) ·") and labels[0].endswith("passed")
    assert labels[1].startswith("batch 2 ·") and labels[1].endswith("failed")
    assert labels[2] == "batch 3"  # never started: no time window
    assert len([r for r in root.iter(f"{SVG_NS}rect") if r.get("class") == "window"]) == 2
    outcomes = {t.get("class"): t.text for t in root.iter(f"{SVG_NS}text") if "outcome" in (t.get("class") or "")}
    assert outcomes["outcome outcome-rolled_back"] == "rolled back"
    assert outcomes["outcome outcome-not_started"] == "not started"
    assert "✕" in svg


def test_the_html_page_is_self_contained_and_redacted(run: RunRecord) -> None:
    page = render_html(run)
    assert page.startswith("<!doctype html>")
    for forbidden in ("<script", "<link", "<img", "src=", "href=", "@import", "url("):
        assert forbidden not in page, forbidden
    # The only URL is the SVG namespace name, which is never fetched.
    assert re.findall(r"https?://[^\s\"'<]+", page) == ["http://www.w3.org/2000/svg"]
    assert "default-src 'none'" in page
    assert SECRET not in page and "********" in page
    for text in (RUN_ID, "hello", "1.4.0", "halted", "1 deployed" if False else "2 deployed", "rolled back",
                 "not started", "exceed the failure budget"):
        assert text in page, text


def test_junit_for_ci(run: RunRecord) -> None:
    xml = render_junit(run)
    assert SECRET not in xml
    root = ET.fromstring(xml)
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors")) == ("5", "2", "1",
                                                                                                      "0")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"web1", "web2", "web3", "web4", "(run)"}
    failure = cases["web3"].find("failure")
    assert failure is not None and "status 500" in (failure.get("message") or "")
    assert cases["web4"].find("skipped") is not None
    assert cases["web1"].find("failure") is None and cases["web1"].get("classname") == "fleetctl.deploy.hello"
    run_failure = cases["(run)"].find("failure")
    assert run_failure is not None and run_failure.get("type") == "halted"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["run_id"] == RUN_ID and props["exit_code"] == "3"


def test_writing_reports_is_all_or_nothing(run: RunRecord, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigError, match="does not exist"):
        write_run_reports(run, html=out / "r.html", junit=tmp_path / "missing" / "r.xml")
    assert list(out.iterdir()) == []
    files = write_run_reports(run, html=out / "r.html", junit=out / "r.xml")
    assert files.html is not None and files.html.read_text().startswith("<!doctype html>")
    assert sorted(p.name for p in out.iterdir()) == ["r.html", "r.xml"]


def test_reports_next_to_a_scheduled_runs_log(run: RunRecord, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / f"{RUN_ID}.log"
    log.write_text("...")
    files = write_reports_next_to(log, RUN_ID, db=tmp_path / "history.db")
    assert files.html == logs / f"{RUN_ID}.html" and files.junit == logs / f"{RUN_ID}.junit.xml"
    assert files.html.is_file() and files.junit.is_file()


# --- in a real browser -----------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless Chromium as root on these machines (FACTS.md): no sandbox, no GPU, no network of its own.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    return subprocess.run([CHROMIUM or "chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.chromium
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/bootstrap installs it)")
def test_the_page_opens_in_headless_chromium(run: RunRecord, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_run_reports(run, html=page)
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    # The DOM Chromium built from the page holds the inline SVG with every bar.
    bars = re.findall(r'<rect class="step[^"]*" data-step="([a-z]+)"', dom.stdout)
    assert len(bars) == sum(len(run.hosts[h].timeline()[0]) for h in run.host_names)
    shot = tmp_path / "report.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1100", page.as_uri())
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    assert png_size(shot) == (1280, 1100)
    assert shot.stat().st_size > 20_000, "a blank page compresses to almost nothing"
    keep = os.environ.get("FLEETCTL_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_notification_results_are_in_the_page(run: RunRecord) -> None:
    from dataclasses import replace

    with_notes = replace(run, notifications=(
        {"webhook": 1, "format": "teams", "event": "halted", "delivered": False, "attempts": 3, "seconds": 2.5,
         "status": 500, "error": "HTTP 500 Internal Server Error"},))
    page = render_html(with_notes)
    assert "<h2>Notifications</h2>" in page and "notify.webhooks[1] (teams)" in page and "HTTP 500" in page
    assert "<h2>Notifications</h2>" not in render_html(run)
