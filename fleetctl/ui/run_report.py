"""Run reports people look at and CI reads: one self-contained HTML page (summary, the SVG timeline, every host)
and a JUnit XML file, both from the history journal's record of a run.

`render_html(run)` / `render_junit(run)` are pure. `write_run_reports(run, html=..., junit=...)` writes either or
both (atomically: a temporary file renamed into place). `write_reports_next_to(log, run_id)` is what a scheduled
run calls: `<log stem>.html` and `<log stem>.junit.xml` beside its log file.

The page loads nothing: inline CSS and SVG, no scripts, and a Content-Security-Policy that forbids any fetch,
so it can be mailed, attached to a CI job or opened from disk. Every text is redacted and escaped.
"""

from __future__ import annotations

import os
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html import escape
from pathlib import Path

import fleetctl
from fleetctl.config.redaction import redact
from fleetctl.errors import ConfigError
from fleetctl.state.journal import Journal, RunRecord
from fleetctl.ui.timeline import OUTCOME_COLOURS, STEP_COLOURS, render_timeline

FAILED = ("failed", "rolled_back")
STATUS_COLOURS = {"succeeded": "#1a7f37", "failed": "#cf222e", "halted": "#cf222e", "interrupted": "#8250df",
                  "locked": "#9a6700", "bad-input": "#9a6700", "running": "#0969da"}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#24292f;margin:24px;max-width:1180px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.status{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600}
dl.summary{display:grid;grid-template-columns:max-content 1fr max-content 1fr;gap:4px 16px;margin:16px 0}
dl.summary dt{color:#57606a}dl.summary dd{margin:0;font-family:ui-monospace,monospace;font-size:13px}
.chips span{display:inline-block;margin:0 6px 6px 0;padding:2px 8px;border-radius:10px;background:#f6f8fa;
border:1px solid #d0d7de;font-size:13px}.message{background:#f6f8fa;border-left:4px solid #d0d7de;padding:6px 10px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid #d8dee4;vertical-align:top}th{background:#f6f8fa}td.num{text-align:right}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-2px;border-radius:2px}
.note{color:#57606a;font-size:12px}footer{margin-top:32px;color:#57606a;font-size:12px}
"""


def render_html(run: RunRecord) -> str:
    """The whole page."""
    status_colour = STATUS_COLOURS.get(run.status, "#57606a")
    title = f"fleetctl {run.kind} {run.service} {run.version or run.release or ''}".rstrip()
    counts = run.outcome_counts()
    facts = [
        ("run", run.run_id), ("kind", run.kind), ("playbook", run.playbook), ("service", run.service),
        ("version", run.version or "-"), ("release", run.release or "-"),
        ("strategy", run.strategy + (" with canary" if run.canary else "")), ("batches", str(len(run.batches))),
        ("by", run.user), ("controller", f"{run.controller} (pid {run.pid})"),
        ("started", _when(run.started_at)), ("finished", _when(run.finished_at)),
        ("took", _took(run.duration)), ("exit code", "-" if run.exit_code is None else str(run.exit_code)),
    ]
    reconstructed = any(not r.timeline()[1] for r in run.hosts.values() if r.timings)
    steps_seen = sorted({s.step for r in run.hosts.values() for s in r.timeline()[0]},
                        key=lambda s: list(STEP_COLOURS).index(s) if s in STEP_COLOURS else 99)
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        # Nothing may be fetched: the report is one file that works offline and leaks nothing when opened.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)} — {_e(run.status)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1>",
        f'<span class="status" style="background:{status_colour}">{_e(run.status)}</span></header>',
        '<dl class="summary">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>",
        '<div class="chips">' + "".join(
            f'<span style="color:{OUTCOME_COLOURS.get(k, "#24292f")}">{n} {_e(k.replace("_", " "))}</span>'
            for k, n in counts.items()) + "</div>",
    ]
    if run.message:
        parts.append(f'<p class="message">{_e(run.message)}</p>')
    parts.append("<h2>Timeline</h2>")
    if reconstructed:
        parts.append('<p class="note">This run was recorded before fleetctl kept when each step ran: its bars '
                     "(dashed) lay each host's step durations end to end from the host's start.</p>")
    parts.append(render_timeline(run))
    parts.append('<p class="legend">' + "".join(
        f'<span><i style="background:{STEP_COLOURS.get(s, "#8c959f")}"></i>{_e(s)}</span>' for s in steps_seen)
        + '<span><i style="background:#fff;border:2px solid #cf222e"></i>failed step ✕</span>'
        + '<span><i style="background:#0969da;opacity:.25"></i>batch running</span></p>')
    parts.append(_hosts_table(run))
    if run.notifications:
        parts.append(_notifications_table(run))
    parts.append(f"<footer>Written by fleetctl {_e(fleetctl.__version__)} from the history journal on "
                 f"{_when(time.time())}. Details: <code>fleetctl history show {_e(run.run_id)}</code></footer>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _hosts_table(run: RunRecord) -> str:
    batch_of = {h: i for i, batch in enumerate(run.batches, start=1) for h in batch}
    rows = [("<h2>Hosts</h2><table><thead><tr><th>batch</th><th>host</th><th>outcome</th><th>release</th>"
             "<th>took</th><th>slowest steps</th><th>error</th></tr></thead><tbody>")]
    for name in run.host_names:
        record = run.hosts.get(name)
        outcome = run.host_outcome(name)
        shown = outcome.replace("_", " ")
        if outcome == "in_flight" and record is not None and record.step:
            shown += f" ({record.step})"
        took, slowest, release, error = "-", "", "-", ""
        if record is not None:
            total = sum(record.timings.values()) if record.timings else record.duration
            took = _took(total)
            slowest = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(record.timings.items(), key=lambda kv: -kv[1])[:3])
            release = record.release or "-"
            error = record.error or ""
        weight = "font-weight:600;" if outcome in FAILED else ""
        rows.append(f"<tr><td class=\"num\">{batch_of.get(name, '-')}</td><td>{_e(name)}</td>"
                    f'<td style="{weight}color:{OUTCOME_COLOURS.get(outcome, "#24292f")}">{_e(shown)}</td>'
                    f"<td>{_e(release)}</td><td class=\"num\">{_e(took)}</td><td>{_e(slowest)}</td>"
                    f"<td>{_e(error)}</td></tr>")
    rows.append("</tbody></table>")
    return "".join(rows)


def _notifications_table(run: RunRecord) -> str:
    rows = [("<h2>Notifications</h2><table><thead><tr><th>webhook</th><th>event</th><th>delivered</th>"
             "<th>attempts</th><th>took</th><th>error</th></tr></thead><tbody>")]
    for n in run.notifications:
        delivered = bool(n.get("delivered"))
        colour = OUTCOME_COLOURS["deployed"] if delivered else OUTCOME_COLOURS["failed"]
        rows.append(f"<tr><td>notify.webhooks[{_e(n.get('webhook'))}] ({_e(n.get('format'))})</td>"
                    f"<td>{_e(n.get('event'))}</td><td style=\"color:{colour}\">{'yes' if delivered else 'no'}</td>"
                    f"<td class=\"num\">{_e(n.get('attempts'))}</td><td class=\"num\">{_e(n.get('seconds'))}s</td>"
                    f"<td>{_e(n.get('error') or '')}</td></tr>")
    rows.append("</tbody></table>")
    return "".join(rows)


def render_junit(run: RunRecord) -> str:
    """JUnit XML: one test case per host (failed and rolled-back hosts fail; hosts never reached are skipped;
    hosts in flight when the run ended are errors) and one for the run itself, failing unless it succeeded, so
    a CI system that reads only the XML still sees a halted or locked run."""
    cases: list[ET.Element] = []
    failures = errors = skipped = 0
    classname = f"fleetctl.{run.kind}.{_x(run.service)}"
    for name in run.host_names:
        record = run.hosts.get(name)
        outcome = run.host_outcome(name)
        seconds = (sum(record.timings.values()) if record and record.timings else record.duration if record
                   else None) or 0.0
        case = ET.Element("testcase", classname=classname, name=_x(name), time=f"{seconds:.3f}")
        reason = _x(record.error) if record and record.error else ""
        if outcome in FAILED:
            failures += 1
            node = ET.SubElement(case, "failure", type=outcome, message=f"{outcome}: {reason}".rstrip(": "))
            node.text = _x(f"host {name}: {outcome}; release now {record.release if record else None}; {reason}")
        elif outcome in ("in_flight", "pending"):
            errors += 1
            step = record.step if record else None
            ET.SubElement(case, "error", type=outcome,
                          message=_x(f"the run ended while this host was at step {step or '?'}"))
        elif outcome == "not_started":
            skipped += 1
            ET.SubElement(case, "skipped", message="not started: the run stopped before this host's batch")
        else:
            out = ET.SubElement(case, "system-out")
            out.text = _x(f"{outcome}: release {record.release if record else '-'}"
                          + (f"; {record.error}" if record and record.error else ""))
        cases.append(case)
    run_case = ET.Element("testcase", classname=classname, name="(run)", time=f"{run.duration or 0.0:.3f}")
    if run.status != "succeeded":
        failures += 1
        node = ET.SubElement(run_case, "failure", type=run.status,
                             message=_x(f"{run.status} (exit code {run.exit_code}): {run.message or ''}".rstrip(": ")))
        node.text = _x(run.message or run.status)
    cases.append(run_case)
    suite = ET.Element("testsuite", name=_x(f"{run.kind} {run.service} {run.version or run.release or ''}".rstrip()),
                       tests=str(len(cases)), failures=str(failures), errors=str(errors), skipped=str(skipped),
                       time=f"{run.duration or 0.0:.3f}",
                       timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(run.started_at)),
                       hostname=_x(run.controller))
    props = ET.SubElement(suite, "properties")
    for key, value in (("run_id", run.run_id), ("playbook", run.playbook), ("version", run.version or ""),
                       ("release", run.release or ""), ("strategy", run.strategy), ("user", run.user),
                       ("status", run.status), ("exit_code", "" if run.exit_code is None else str(run.exit_code))):
        ET.SubElement(props, "property", name=key, value=_x(value))
    suite.extend(cases)
    root = ET.Element("testsuites", name="fleetctl", tests=str(len(cases)), failures=str(failures),
                      errors=str(errors), skipped=str(skipped), time=f"{run.duration or 0.0:.3f}")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


@dataclass(frozen=True)
class ReportFiles:
    html: Path | None
    junit: Path | None


def write_run_reports(run: RunRecord, *, html: str | Path | None = None,
                      junit: str | Path | None = None) -> ReportFiles:
    """Write the HTML page and/or the JUnit file. Both are rendered before either is written, and each is
    written to a temporary file then renamed, so a failure leaves no half-written report (ConfigError, exit 2)."""
    documents: list[tuple[Path, str, str]] = []
    if html is not None:
        documents.append((Path(html), render_html(run), "--html"))
    if junit is not None:
        documents.append((Path(junit), render_junit(run), "--junit"))
    for path, _, option in documents:
        if path.is_dir():
            raise ConfigError(f"{path} is a directory: give a file name", file=path, key=option)
        if not path.parent.is_dir():
            raise ConfigError(f"directory {path.parent} does not exist", file=path, key=option)
    for path, text, option in documents:
        _write_atomically(path, text, option)
    return ReportFiles(Path(html) if html is not None else None, Path(junit) if junit is not None else None)


def write_reports_next_to(log: str | Path, run_id: str, *, db: str | Path | None = None) -> ReportFiles:
    """For scheduled runs: `<log stem>.html` and `<log stem>.junit.xml` beside `log`, for run `run_id` of the
    journal `db` (default: the journal the deploy wrote)."""
    log = Path(log)
    journal = Journal(db)
    try:
        run = journal.run(run_id)
    finally:
        journal.close()
    return write_run_reports(run, html=log.with_name(log.stem + ".html"),
                             junit=log.with_name(log.stem + ".junit.xml"))


def _write_atomically(path: Path, text: str, option: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}", file=path, key=option) from None


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 120 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _x(text: object) -> str:
    """Redacted text without the control characters XML 1.0 cannot carry."""
    return "".join(c for c in redact(str(text)) if c in "\t\n\r" or ord(c) >= 0x20)


def _e(text: object) -> str:
    return escape(_x(text), quote=True)
