"""What a notification says: a `RunSummary` (pure data gathered from a run's events) rendered as generic JSON or
as a Slack or Microsoft Teams incoming-webhook message. Everything rendered here is redacted."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from fleetctl.config.playbook import NotifyEvent
from fleetctl.config.redaction import redact, redact_value

Format = Literal["json", "slack", "teams"]
SCHEMA = "fleetctl.notification/1"
# Failed hosts listed in a chat message; the JSON payload carries them all.
CHAT_HOSTS = 10

STATUS_BY_EVENT: dict[NotifyEvent, str] = {
    "start": "started", "success": "succeeded", "failure": "failed", "halted": "halted",
    "interrupted": "interrupted",
}
COLOUR_BY_EVENT: dict[NotifyEvent, str] = {  # Slack attachment colours / Adaptive Card text colours
    "start": "#439FE0", "success": "#2EB67D", "failure": "#E01E5A", "halted": "#E01E5A", "interrupted": "#ECB22E",
}
TEAMS_COLOUR = {"start": "Accent", "success": "Good", "failure": "Attention", "halted": "Attention",
                "interrupted": "Warning"}


@dataclass(frozen=True)
class FailedHost:
    host: str
    outcome: str
    reason: str


@dataclass(frozen=True)
class RunSummary:
    """One notification's facts. `counts`, `failed_hosts`, `finished_at` and `exit_code` are empty at start."""

    event: NotifyEvent
    run_id: str
    kind: str
    playbook: str
    service: str
    version: str | None
    release: str | None
    strategy: str
    canary: bool
    user: str
    controller: str
    hosts: int
    batches: int
    started_at: float
    finished_at: float | None = None
    exit_code: int | None = None
    message: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    failed_hosts: tuple[FailedHost, ...] = ()

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    @property
    def history_command(self) -> str:
        return f"fleetctl history show {self.run_id}"

    def headline(self) -> str:
        what = f"{self.kind} of {self.service} {self.version or self.release or ''}".rstrip()
        if self.event == "start":
            return f"{what} started on {self.hosts} host(s)"
        took = f" in {_human(self.duration)}" if self.duration is not None else ""
        return f"{what} {STATUS_BY_EVENT[self.event]}{took}: {_counts_line(self.counts)}"


def render(summary: RunSummary, fmt: Format) -> dict[str, Any]:
    """The JSON body to POST for `fmt`, redacted."""
    body = {"json": generic_json, "slack": slack_message, "teams": teams_message}[fmt](summary)
    return redact_value(body)  # type: ignore[no-any-return]


def generic_json(s: RunSummary) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "event": s.event, "status": STATUS_BY_EVENT[s.event], "run_id": s.run_id,
        "history_id": s.run_id, "history": s.history_command, "kind": s.kind, "playbook": s.playbook,
        "service": s.service, "version": s.version, "release": s.release, "strategy": s.strategy,
        "canary": s.canary, "user": s.user, "controller": s.controller, "hosts": s.hosts, "batches": s.batches,
        "started_at": _iso(s.started_at), "finished_at": _iso(s.finished_at),
        "duration_seconds": None if s.duration is None else round(s.duration, 3),
        "exit_code": s.exit_code, "message": s.message, "counts": dict(s.counts),
        "failed_hosts": [{"host": f.host, "outcome": f.outcome, "reason": f.reason} for f in s.failed_hosts],
    }


def _facts(s: RunSummary) -> list[tuple[str, str]]:
    facts = [("Service", s.service), ("Version", s.version or s.release or "-"),
             ("Strategy", s.strategy + (" with canary" if s.canary else "")), ("Hosts", str(s.hosts)),
             ("By", s.user), ("Run", s.run_id)]
    if s.event != "start":
        facts += [("Outcome", _counts_line(s.counts)), ("Took", _human(s.duration))]
        if s.exit_code is not None:
            facts.append(("Exit code", str(s.exit_code)))
    return facts


def _failed_lines(s: RunSummary) -> list[str]:
    lines = [f"{f.host}: {f.outcome}: {f.reason}" for f in s.failed_hosts[:CHAT_HOSTS]]
    if len(s.failed_hosts) > CHAT_HOSTS:
        lines.append(f"... and {len(s.failed_hosts) - CHAT_HOSTS} more (see {s.history_command})")
    return lines


def slack_message(s: RunSummary) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (notifications, fallback) plus Block Kit blocks."""
    headline = _slack_escape(s.headline())
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*fleetctl:* {headline}"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{_slack_escape(v)}"}
                                       for k, v in _facts(s)[:10]]},
    ]
    failed = _failed_lines(s)
    if failed:
        text = "\n".join(f"• {_slack_escape(line)}" for line in failed)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Failed hosts*\n{text}"[:3000]}})
    if s.message and s.event != "start":
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(s.message)[:3000]}]})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn",
                                                    "text": f"`{_slack_escape(s.history_command)}`"}]})
    return {"text": f"fleetctl: {headline}",
            "attachments": [{"color": COLOUR_BY_EVENT[s.event], "blocks": blocks}]}


def teams_message(s: RunSummary) -> dict[str, Any]:
    """A Microsoft Teams message carrying one Adaptive Card (what Teams incoming webhooks and Workflows accept)."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": True,
         "color": TEAMS_COLOUR[s.event], "text": f"fleetctl: {s.headline()}"},
        {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _facts(s)]},
    ]
    failed = _failed_lines(s)
    if failed:
        body.append({"type": "TextBlock", "weight": "Bolder", "text": "Failed hosts", "wrap": True})
        body += [{"type": "TextBlock", "text": line, "wrap": True, "spacing": "None"} for line in failed]
    if s.message and s.event != "start":
        body.append({"type": "TextBlock", "text": s.message, "wrap": True, "isSubtle": True})
    body.append({"type": "TextBlock", "text": s.history_command, "fontType": "Monospace", "isSubtle": True,
                 "wrap": True})
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": "1.4", "msteams": {"width": "Full"}, "body": body}
    return {"type": "message", "summary": f"fleetctl: {s.headline()}",
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
                             "content": card}]}


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters (links, mentions).
    return redact(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _counts_line(counts: dict[str, int]) -> str:
    order = ("deployed", "removed", "skipped", "rolled_back", "failed", "not_started")
    keys = list(order) + sorted(k for k in counts if k not in order)
    return ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in keys if counts.get(k)) or "no hosts"


def _human(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
