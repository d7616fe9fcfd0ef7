"""A run's per-host timeline as an SVG Gantt chart: one row per host, one bar per step it ran, hosts grouped by
batch in shaded bands (each band also shows when its batch ran), failed steps and hosts marked.

Pure: a `RunRecord` in, SVG text out (no scripts, no external references). Every text is redacted and escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

from fleetctl.config.redaction import redact
from fleetctl.state.journal import BatchSpan, RunRecord, StepSpan

WIDTH = 1120
LABEL_W = 190  # host names
OUTCOME_W = 130  # outcome at the end of each row
AXIS_H = 28
ROW_H = 22
BAR_H = 14
BAND_HEAD_H = 20
MIN_BAR_W = 1.5  # a 5 ms switch is still visible

STEP_COLOURS = {
    "connect": "#9aa5b1", "lock": "#6c757d", "transfer": "#4e79a7", "install": "#59a14f", "service": "#8cd17d",
    "stop": "#f28e2b", "switch": "#b07aa1", "start": "#edc948", "health": "#76b7b2", "record": "#bab0ac",
    "retention": "#d4a6c8", "rollback": "#ff9da7", "remove": "#9c755f", "unlock": "#adb5bd",
}
OUTCOME_COLOURS = {"deployed": "#1a7f37", "removed": "#1a7f37", "skipped": "#6e7781", "rolled_back": "#9a6700",
                   "restarted": "#1a7f37",
                   "failed": "#cf222e", "not_started": "#8250df", "in_flight": "#8250df", "pending": "#6e7781"}


@dataclass(frozen=True)
class _Group:
    label: str
    hosts: tuple[str, ...]
    batch: BatchSpan | None


def render_timeline(run: RunRecord) -> str:
    """The SVG document (an `<svg>` element, to inline in HTML or save as .svg)."""
    groups = _groups(run)
    spans = {name: run.hosts[name].timeline() if name in run.hosts else ((), True) for name in run.host_names}
    t0 = run.started_at
    ends = [s.end for host_spans, _ in spans.values() for s in host_spans]
    ends += [b.finished for b in run.batch_spans if b.finished is not None]
    ends += [run.finished_at] if run.finished_at is not None else []
    t1 = max([t0 + 0.001, *ends])
    chart_w = WIDTH - LABEL_W - OUTCOME_W

    def x(t: float) -> float:
        return LABEL_W + (min(max(t, t0), t1) - t0) / (t1 - t0) * chart_w

    height = AXIS_H + sum(BAND_HEAD_H + ROW_H * len(g.hosts) for g in groups) + 8
    out: list[str] = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{WIDTH}" height="{height}" '
         f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="per-host timeline of run {_e(run.run_id)}" '
         'font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12">'),
        ("<style>.step{stroke:#fff;stroke-width:.5}.step.failed{stroke:#cf222e;stroke-width:2}"
        ".step.approx{stroke:#57606a;stroke-dasharray:3 2;stroke-width:1}.band{fill:#f6f8fa}.band.odd{fill:#eef1f4}"
        ".window{fill:#0969da;fill-opacity:.07;stroke:#0969da;stroke-opacity:.35;stroke-dasharray:4 3}"
        ".grid{stroke:#d0d7de;stroke-width:.5}.axis{fill:#57606a;font-size:11px}.bandlabel{fill:#24292f;"
        "font-weight:600;font-size:11px}.host{fill:#24292f}.mark{fill:#cf222e;font-weight:700;font-size:15px;stroke:#fff;stroke-width:3px;paint-order:stroke}</style>"),
    ]
    # Axis and grid lines.
    for tick in _ticks(t1 - t0):
        tx = LABEL_W + tick / (t1 - t0) * chart_w
        out.append(f'<line class="grid" x1="{tx:.1f}" y1="{AXIS_H - 6}" x2="{tx:.1f}" y2="{height - 4}"/>')
        out.append(f'<text class="axis" x="{tx:.1f}" y="{AXIS_H - 10}" text-anchor="middle">{_tick_label(tick)}</text>')
    y = float(AXIS_H)
    for index, group in enumerate(groups):
        band_h = BAND_HEAD_H + ROW_H * len(group.hosts)
        out.append(f'<rect class="band{" odd" if index % 2 else ""}" x="0" y="{y:.1f}" width="{WIDTH}" '
                   f'height="{band_h}"/>')
        label = group.label
        if group.batch is not None:
            b = group.batch
            end = b.finished if b.finished is not None else t1
            verdict = {True: "passed", False: "failed", None: "did not finish"}[b.passed]
            label += f" · {end - b.started:.1f}s · {verdict}"
            wx = x(b.started)
            out.append(f'<rect class="window" x="{wx:.1f}" y="{y + 2:.1f}" width="{max(x(end) - wx, 1):.1f}" '
                       f'height="{band_h - 4}"><title>{_e(label)}</title></rect>')
        out.append(f'<text class="bandlabel" x="8" y="{y + 14:.1f}">{_e(label)}</text>')
        y += BAND_HEAD_H
        for name in group.hosts:
            out.extend(_row(run, name, spans[name], y, x))
            y += ROW_H
    out.append("</svg>")
    return "\n".join(out)


def _row(run: RunRecord, name: str, timeline: tuple[tuple[StepSpan, ...], bool], y: float,
         x: Callable[[float], float]) -> list[str]:
    host_spans, recorded = timeline
    parts = [f'<g class="host-row" data-host="{_e(name)}">',
             f'<text class="host" x="12" y="{y + 15:.1f}">{_e(_clip(name, 26))}<title>{_e(name)}</title></text>']
    bar_y = y + (ROW_H - BAR_H) / 2
    marks: list[str] = []
    for span in host_spans:
        bx = x(span.start)
        bw = max(x(span.end) - bx, MIN_BAR_W)
        classes = "step" + (" failed" if span.failed else "") + ("" if recorded else " approx")
        tip = f"{name} · {span.step} · {span.seconds:.3f}s"
        tip += f" · {span.detail}" if span.detail else ""
        tip += " · FAILED" if span.failed else ""
        tip += "" if recorded else " · (reconstructed from durations)"
        parts.append(f'<rect class="{classes}" data-step="{_e(span.step)}" x="{bx:.2f}" y="{bar_y:.1f}" '
                     f'width="{bw:.2f}" height="{BAR_H}" fill="{STEP_COLOURS.get(span.step, "#8c959f")}">'
                     f"<title>{_e(tip)}</title></rect>")
        if span.failed:
            # Drawn after the row's bars, so the rollback that follows does not cover it.
            marks.append(f'<text class="mark" x="{bx + bw:.1f}" y="{y + 16:.1f}" text-anchor="middle">✕</text>')
    parts.extend(marks)
    outcome = run.host_outcome(name)
    record = run.hosts.get(name)
    shown = outcome.replace("_", " ")
    if outcome == "in_flight" and record is not None and record.step:
        shown = f"in flight ({record.step})"
    tip = record.error if record is not None and record.error else shown
    weight = ' font-weight="700"' if outcome in ("failed", "rolled_back") else ""
    parts.append(f'<text class="outcome outcome-{_e(outcome)}" x="{WIDTH - OUTCOME_W + 8}" y="{y + 15:.1f}" '
                 f'fill="{OUTCOME_COLOURS.get(outcome, "#24292f")}"{weight}>'
                 f"{_e(shown)}<title>{_e(tip)}</title></text>")
    parts.append("</g>")
    return parts


def _groups(run: RunRecord) -> list[_Group]:
    by_index = {b.index: b for b in run.batch_spans}
    groups: list[_Group] = []
    for position, hosts in enumerate(run.batches, start=1):
        batch = by_index.get(position - 1)  # the plan's batch indexes count from 0
        canary = batch.canary if batch is not None else (run.canary and position == 1)
        groups.append(_Group(f"batch {position}{' (canary)' if canary else ''}", tuple(hosts), batch))
    planned = {h for hosts in run.batches for h in hosts}
    rest = tuple(h for h in run.host_names if h not in planned)
    if rest:
        groups.append(_Group("outside the plan", rest, None))
    return groups


def _ticks(total: float) -> list[float]:
    """About eight round tick positions (seconds) from 0 to `total`."""
    raw = total / 8
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    for nice in (15, 30, 60, 120, 300, 600, 900, 1800, 3600):  # minutes read better on round minutes
        if step > 10 and step <= nice:
            step = nice
            break
    count = int(total / step) + 1
    return [i * step for i in range(count) if i * step <= total + 1e-9]


def _tick_label(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:g}s"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _e(text: object) -> str:
    return escape(redact(str(text)), quote=True)
