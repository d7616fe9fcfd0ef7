"""`fleetctl logs` and `fleetctl exec` for people: each line prefixed by its host, the prefixes aligned, each host in its own colour
on a terminal and plain text when piped (rich emits no styles then); notes about hosts go to stderr.

Log lines are node data: printed as text, never as markup, with known secrets masked and control characters
escaped (`safe`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.text import Text

from fleetctl.node.adhoc import HostExec
from fleetctl.node.results import EventTail
from fleetctl.status.logs import HostLines, HostNotice, HostTail, LogEvent
from fleetctl.ui.console import safe

# Distinct, readable on dark and light backgrounds; hosts beyond these reuse them in order.
HOST_STYLES = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green")
LEVEL_STYLES = {"Error": "red", "Critical": "bold red", "Warning": "yellow"}


class HostPrefixes:
    """`web01  | ` style prefixes, padded to the longest host name so the lines line up."""

    def __init__(self, hosts: Sequence[str], *, shown: bool = True) -> None:
        self.width = max((len(safe(h)) for h in hosts), default=0)
        self.styles = {h: HOST_STYLES[i % len(HOST_STYLES)] for i, h in enumerate(hosts)}
        self.shown = shown  # one host by --host: its lines as they are, as before

    def line(self, host: str, text: str) -> Text:
        out = Text()
        if self.shown:
            out.append(f"{safe(host):<{self.width}} | ", style=self.styles.get(host, ""))
        out.append(safe(text))
        return out


class LogPrinter:
    """Prints log events as they come: lines on `out`, notices about hosts on `notes`."""

    def __init__(self, out: Console, notes: Console, prefixes: HostPrefixes) -> None:
        self.out = out
        self.notes = notes
        self.prefixes = prefixes

    def print_tails(self, tails: Iterable[HostTail], tail: int, grep: str | None) -> None:
        for t in tails:
            if t.error is not None:
                self.notice(HostNotice(t.host, t.error, error=True))
                continue
            what = f"last {tail} line(s)" + (f", {len(t.lines)} matching {grep!r}" if grep is not None else "")
            self.notes.print(Text(safe(f"==> {t.host}: {t.path} ({what})"), style="dim"), soft_wrap=True)
            for line in t.lines:
                self.out.print(self.prefixes.line(t.host, line), soft_wrap=True)

    def event(self, event: LogEvent) -> None:
        if isinstance(event, HostLines):
            for line in event.lines:
                self.out.print(self.prefixes.line(event.host, line), soft_wrap=True)
            # Followed lines are read as they come (`logs -f | grep ...`): never left in a pipe's buffer.
            self.out.file.flush()
        else:
            self.notice(event)

    def notice(self, notice: HostNotice) -> None:
        text = Text(f"{safe(notice.host)}: ", style="bold")
        text.append(safe(notice.message), style="red" if notice.error else "yellow")
        self.notes.print(text, soft_wrap=True)


def print_events(out: Console, notes: Console, prefixes: HostPrefixes, host: str, source: str,
                 result: EventTail) -> None:
    """One host's Application-log events, newest first, as `time level id message`."""
    notes.print(Text(safe(f"==> {host}: Application log, source {source} ({len(result.events)} event(s), "
                          "newest first)"), style="dim"), soft_wrap=True)
    if result.note:
        notes.print(Text(safe(result.note), style="yellow"), soft_wrap=True)
    for e in result.events:
        when = e.time.isoformat(timespec="seconds") if e.time else "-"
        line = Text()
        if prefixes.shown:
            line.append(f"{safe(host):<{prefixes.width}} | ", style=prefixes.styles.get(host, ""))
        line.append(f"{when} {safe(e.level):<11} {e.id if e.id is not None else '-':>5} ",
                    style=LEVEL_STYLES.get(e.level, ""))
        line.append(safe(e.message))
        out.print(line, soft_wrap=True)


def print_exec_result(out: Console, notes: Console, prefixes: HostPrefixes, result: HostExec) -> None:
    """`fleetctl exec`: one host's output lines, prefixed, then how it ended (on stderr)."""
    for line in result.output:
        out.print(prefixes.line(result.host, line), soft_wrap=True)
    if result.status in ("ok", "failed"):
        took = f" in {result.elapsed_ms / 1000:.1f} s" if result.elapsed_ms is not None else ""
        style = "green" if result.status == "ok" else "bold red"
        notes.print(Text(safe(f"{result.host}: exit {result.exit_code}{took}"), style=style), soft_wrap=True)


def exec_summary(results: dict[str, HostExec]) -> list[Text]:
    """The hosts the script could not run on, identical reasons grouped (one line for 500 lab nodes), then the
    counts."""
    by_reason: dict[str, list[str]] = {}
    for r in results.values():
        if r.status in ("unsupported", "error"):
            by_reason.setdefault(r.message or "unknown error", []).append(r.host)
    lines = []
    for reason, hosts in by_reason.items():
        names = ", ".join(hosts[:5]) + (f" and {len(hosts) - 5} more" if len(hosts) > 5 else "")
        line = Text(f"{safe(names)}: ", style="bold")
        line.append(safe(reason), style="red")
        lines.append(line)
    counts: dict[str, int] = {}
    for r in results.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    words = {"ok": "exited 0", "failed": "exited non-zero", "unsupported": "need real Windows", "error": "could not run"}
    lines.append(Text(", ".join(f"{counts[k]} {words[k]}" for k in words if counts.get(k)) or "no hosts",
                      style="bold"))
    return lines
