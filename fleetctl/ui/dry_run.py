"""The dry run for people: what a deploy (or a removal) would change on each host, and with --diff how its service
definition and rendered files would change."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fleetctl.rollout.diff import FieldChange, HostDiffResult, group_identical
from fleetctl.rollout.runner import HostPreview
from fleetctl.ui.console import safe


def preview_table(previews: dict[str, HostPreview]) -> Table:
    table = Table(title="Dry run: what would change (nothing was changed)", title_justify="left")
    for column in ("host", "current", "target", "would do"):
        table.add_column(column)
    for host, p in previews.items():
        doing = f"[red]{escape(safe(p.error))}[/]" if p.error else (
            escape(safe("; ".join(p.changes))) or "[dim]nothing (current)[/]")
        table.add_row(escape(safe(host)), escape(safe(p.current or "-")), escape(safe(p.target)), doing)
    return table


# --- deploy --dry-run --diff ----------------------------------------------------------------------------------

_DIFF_STYLES = (("+++", "bold"), ("---", "bold"), ("@@", "cyan"), ("+", "green"), ("-", "red"))


def diff_view(results: dict[str, HostDiffResult]) -> Group:
    """Per group of hosts with the same diff: the service fields that change (old -> new, secrets as ***) and a
    unified diff of each rendered file; "no changes" when a deploy would change neither."""
    parts: list[RenderableType] = [Text("Diff: service definition and rendered files (nothing was changed)",
                                        style="bold")]
    for hosts, result in group_identical(results):
        head = Text(safe(", ".join(hosts[:8]) + (f" and {len(hosts) - 8} more" if len(hosts) > 8 else "")),
                    style="bold cyan")
        if len(hosts) > 1:
            head.append(f" ({len(hosts)} hosts, the same diff)", style="dim")
        parts.append(Text())
        parts.append(head)
        diff = result.diff
        if diff is None:
            parts.append(Text(f"  could not be read: {safe(result.error)}", style="red"))
            continue
        if diff.unchanged:
            parts.append(Text("  no changes", style="dim"))
            continue
        if diff.service:
            verb = "update" if diff.service_exists else "create"
            parts.append(Text(f"  service {safe(diff.service_name)} ({verb}):"))
            parts.extend(_field_line(change) for change in diff.service)
        for change in diff.files:
            parts.append(Text(f"  file {safe(change.path)} ({change.change}):"))
            parts.extend(_diff_line(line) for line in change.lines)
    return Group(*parts)


def _field_line(change: FieldChange) -> Text:
    line = Text(f"    {change.name}: ")
    if change.new is None:
        line.append("removed", style="red")
    elif change.old is None:
        line.append(safe(change.new), style="green")
    else:
        line.append(safe(change.old), style="red")
        line.append(" -> ")
        line.append(safe(change.new), style="green")
    if change.secret:
        line.append("  (secret: changed, values not shown)" if change.old is not None and change.new is not None
                    else "  (secret)", style="dim")
    return line


def _diff_line(line: str) -> Text:
    style = next((s for prefix, s in _DIFF_STYLES if line.startswith(prefix)), "")
    return Text("    " + safe(line), style=style)
