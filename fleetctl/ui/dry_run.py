"""The dry run for people: what a deploy (or a removal) would change on each host, and with --diff how its service
definition and rendered files would change.

The preview table is cut down at fleet size as the end-of-run table is (ui/host_rows.py): hosts that could not be
asked first, then those a held lock would stop; above MAX_ROWS hosts (unless --all) hosts that would do the same
thing share one row with a compact host range (`web[001:455]  1.0.0  2.0.0 (455 hosts)  install release 2.0.0;
...`); hosts that failed the same way share a row at any size."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fleetctl.rollout.diff import FieldChange, HostDiffResult, group_identical
from fleetctl.rollout.runner import HostPreview
from fleetctl.ui.console import safe
from fleetctl.ui.host_rows import RowOptions, arrange, error_key, with_note
from fleetctl.ui.report import release_version

_LOCK_STOP = "would stop here"  # the first change of a host whose lock another run holds (rollout/runner.py)


def preview_table(previews: dict[str, HostPreview], options: RowOptions | None = None) -> RenderableType:
    """One row per host, or per group of alike hosts at fleet size; `options.show_all` (--all): a row each."""
    options = options or RowOptions()
    arranged = arrange(list(previews.values()), host=lambda p: p.host, options=options,
                       key=lambda p: _alike(p, options), problem=_problem, failed_alike=lambda p: bool(p.error))
    table = Table(title="Dry run: what would change (nothing was changed)", title_justify="left")
    for column in ("host", "current", "target", "would do"):
        table.add_column(column)
    for group in arranged.groups:
        p: HostPreview = group.items[0]
        if not group.collapsed:
            table.add_row(escape(safe(p.host)), escape(safe(p.current or "-")), escape(safe(p.target)),
                          _doing(p.error, p.changes))
            continue
        _, current, target, doing = _alike(p, options)
        table.add_row(escape(safe(group.host_cell())), escape(safe(current or "-")),
                      escape(safe(target or "-")) + f" ({len(group.items)} hosts)",
                      f"[red]{escape(safe(doing))}[/]" if p.error else _doing(None, (doing,) if doing else ()))
    if arranged.hidden_hosts:
        table.add_row(f"[dim]… {arranged.hidden_hosts} more host(s)[/]", "", "", "")
    return with_note(table, arranged.note(len(previews)))


def _doing(error: str | None, changes: tuple[str, ...]) -> str:
    if error:
        return f"[red]{escape(safe(error))}[/]"
    return escape(safe("; ".join(changes))) or "[dim]nothing (current)[/]"


def _problem(p: HostPreview) -> int | None:
    if p.error:
        return 0
    return 1 if p.changes and p.changes[0].startswith(_LOCK_STOP) else None


def _alike(p: HostPreview, options: RowOptions) -> tuple[bool, str | None, str | None, str]:
    """What hosts must share to be one row: the versions (a release id also hashes the host's own files) and
    what would be done, with the host's own release ids, name and address taken out."""
    doing = p.error or "; ".join(p.changes)
    for release in (p.current, p.target):
        if release:
            doing = doing.replace(release, release_version(release) or release)
    return (bool(p.error), release_version(p.current), release_version(p.target),
            error_key(doing, p.host, options))


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
