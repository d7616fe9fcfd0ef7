"""`fleetctl status` for people: a summary (hosts per release and per health state, a rollout in progress),
then the hosts table (problems first; identical rows collapsed at scale) and notes, identical ones grouped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from rich.console import Group
from rich.table import Table
from rich.text import Text

from fleetctl.status.collect import FleetStatus, HostStatus, ReleaseRef, RunInProgress
from fleetctl.ui.console import safe
from fleetctl.ui.host_rows import MAX_ROWS, RowOptions, arrange, error_key, group_errors, with_note
from fleetctl.ui.hostranges import compact_hosts

# Problems first, in this order: not reached, unhealthy, drifting, a failing scheduled task.
_NOT_ANSWERED, _UNHEALTHY, _DRIFT, _TASKS = range(4)


def status_table(result: FleetStatus, name: str, options: RowOptions | None = None) -> Group:
    """The summary lines, the hosts table, then one note per problem that needs words (a host that did not
    answer or is unhealthy, a failing task), identical notes grouped. Notes are long: a table column would
    squeeze everything else."""
    options = options or RowOptions()
    arranged = arrange(list(result.hosts.values()), host=lambda s: s.host, key=lambda s: _row_key(s, options),
                       problem=_problem, options=options, failed_alike=lambda s: not s.answered)
    blue_green = any(s.colours for s in result.hosts.values())
    table = Table()
    columns = ("host", *(("hosts",) if arranged.collapsed else ()), "current", "previous", "service", "health",
               *(("colours",) if blue_green else ()), "tasks", "lock", "drift")
    for column in columns:
        # Names and releases are what people scan for: never cut them.
        table.add_column(column, overflow="fold", justify="right" if column == "hosts" else "left",
                         no_wrap=column in ("host", "current", "service", "health", "drift"))
    for group in arranged.groups:
        s: HostStatus = group.items[0]
        shown = (lambda ref: _version(ref)) if group.collapsed else _release
        table.add_row(
            Text(safe(group.host_cell())),
            *((Text(str(len(group.items))),) if arranged.collapsed else ()),
            Text(safe(shown(s.current))),
            Text(safe(shown(s.previous)), style="dim"),
            Text(safe(s.service), style="green" if s.service == "Running" else "bold red"
                 if s.service in ("unreachable", "error") else "yellow"),
            _health(s),
            *((_colours(s),) if blue_green else ()),
            _tasks(s),
            Text(safe(_lock(s)), style="yellow" if s.lock and not s.lock.expired else "dim"),
            _drift(s),
        )
    if arranged.hidden_hosts:
        table.add_row(Text(f"… {arranged.hidden_hosts} more host(s)", style="dim"), *([""] * (len(columns) - 1)))
    shown_hosts = [h for g in arranged.groups for h in g.hosts]
    return Group(*summary_lines(result, name), with_note(table, arranged.note(len(result.hosts))),
                 *_notes([result.hosts[h] for h in shown_hosts], options))


def summary_lines(result: FleetStatus, name: str) -> list[Text]:
    """`Status of hello: 498/500 host(s) answered`, hosts per release, per health state, a run in progress."""
    hosts = list(result.hosts.values())
    answered = [s for s in hosts if s.answered]
    majority = f", majority {result.majority}" if result.majority else ""
    lines = [Text(safe(f"Status of {name}: {len(answered)}/{len(hosts)} host(s) answered{majority}"),
                  style="bold")]
    releases = Counter(s.current.key if s.current else None for s in answered)
    if releases:
        parts = [f"{n} on {safe(k)}" for k, n in releases.most_common() if k is not None]
        if releases.get(None):
            parts.append(f"{releases[None]} without a release")
        lines.append(Text("releases: " + ", ".join(parts)))
    health = Counter(_health(s).plain if s.answered else s.service for s in hosts)
    order = ("healthy", "unhealthy", "CRASH LOOP", "-", "unreachable", "error")
    labels = {"-": "not probed", "CRASH LOOP": "crash loop"}
    lines.append(Text("health: " + ", ".join(f"{health[k]} {labels.get(k, k)}" for k in
                                             sorted(health, key=lambda k: order.index(k) if k in order else 9))))
    for run in result.runs:
        lines.append(_run_line(run, [result.hosts[h] for h in run.hosts]))
    drifting = result.drifting
    if drifting:
        lines.append(Text(f"drift: {len(drifting)} host(s) not on {safe(result.majority)} "
                          f"({safe(compact_hosts(drifting, max_chars=60))})", style="yellow"))
    return lines


def _run_line(run: RunInProgress, members: Iterable[HostStatus]) -> Text:
    """`rollout in progress (run R, by U, since T): 43 rolling out to 2.0.0, 455 waiting`."""
    since = run.since.strftime("%Y-%m-%d %H:%M:%SZ") if run.since else "?"
    places = Counter(s.rollout for s in members)
    target = f" to {', '.join(run.target)}" if run.target else ""
    counts = [f"{places['rolling out']} rolling out{target}"] if places.get("rolling out") else []
    counts += [f"{places[p]} {p}" for p in ("waiting", "rolled back") if places.get(p)]
    text = Text("rollout in progress", style="bold cyan")
    text.append(safe(f" (run {run.run_id}, by {run.owner}, since {since}): {', '.join(counts)}"))
    return text


def _notes(shown: list[HostStatus], options: RowOptions) -> list[Text]:
    """Errors and failing tasks of the hosts shown, hosts with the same note grouped into one line."""
    by_host = {s.host: s for s in shown}
    errors = {s.host: s.error for s in shown if s.error}
    notes: list[Text] = []
    for group in group_errors(errors, options.addresses):
        reached = by_host[group.hosts[0]].answered  # one text: all of the group answered, or none did
        notes.append(Text(safe(group.line()), style="yellow" if reached else "red"))
    tasks: dict[str, str] = {}
    for s in shown:
        for task in s.tasks:
            # A task that is missing or whose last run failed is worth a line; healthy guards are not.
            if not task.exists or task.failed:
                what = ("is missing" if not task.exists else
                        f"last run failed with result {task.last_result} (0x{task.last_result:x})")
                tasks[s.host] = f"scheduled task {task.name} {what}"
    notes += [Text(safe(g.line()), style="yellow") for g in group_errors(tasks)]
    if len(notes) > MAX_ROWS:
        notes = notes[:MAX_ROWS - 1] + [Text(f"… {len(notes) - MAX_ROWS + 1} more note(s) (--json has all)",
                                             style="dim")]
    return notes


def _problem(s: HostStatus) -> int | None:
    if not s.answered:
        return _NOT_ANSWERED
    if not s.healthy:
        return _UNHEALTHY
    if s.drift:
        return _DRIFT
    if any(not t.exists or t.failed for t in s.tasks):
        return _TASKS
    return None


def _row_key(s: HostStatus, options: RowOptions) -> tuple[object, ...]:
    """What two hosts share to be one row: everything shown but the host and its own release ids (and, for a
    host that did not answer, why: its note is grouped the same way)."""
    why = error_key(s.error, s.host, options) if not s.answered else None
    return (_version(s.current), _version(s.previous), s.service, _health(s).plain, _colours(s).plain,
            _tasks(s).plain, _lock(s), _drift(s).plain, why)


def _health(s: HostStatus) -> Text:
    if s.healthy:
        return Text("healthy", style="green")
    if not s.answered:
        return Text("-", style="dim")
    return Text("CRASH LOOP" if s.crash_loop else "unhealthy", style="red")


def _drift(s: HostStatus) -> Text:
    if s.rollout is not None:  # a run in progress: not drift, a host on its way
        return Text(s.rollout, style="cyan")
    return Text("-" if s.drift is None else ("DRIFT" if s.drift else "no"),
                style="bold yellow" if s.drift else "dim")


def _version(ref: ReleaseRef | None) -> str:
    return ref.key if ref is not None else "-"


def _release(ref: ReleaseRef | None) -> str:
    if ref is None:
        return "-"
    return ref.release if not ref.version or ref.release.startswith(ref.version) else f"{ref.version} ({ref.release})"


def _colours(s: HostStatus) -> Text:
    """Blue-green: `live green 2.1.0 ok · idle blue 2.0.0 Running ok` (each colour's release and own health)."""
    if not s.colours:
        return Text("-", style="dim")
    text = Text()
    for i, c in enumerate(sorted(s.colours, key=lambda c: not c.live)):
        if i:
            text.append(" · ", style="dim")
        text.append(f"{'live' if c.live else 'idle'} {c.colour} ", style="bold" if c.live else "")
        text.append(safe(_release(c.release)) + " ")
        if c.service != "Running":
            text.append(c.service, style="dim" if not c.live else "red")
        else:
            text.append("ok" if c.healthy else "unhealthy", style="green" if c.healthy else "red")
    return text


def _tasks(s: HostStatus) -> Text:
    """`-` without tasks, else how many last ran fine (a failed or missing one shows, with a note below)."""
    if not s.tasks:
        return Text("-", style="dim")
    bad = [t for t in s.tasks if not t.exists or t.failed]
    if bad:
        return Text(f"{len(bad)}/{len(s.tasks)} failing", style="yellow")
    return Text(f"{len(s.tasks)} ok", style="green")


def _lock(s: HostStatus) -> str:
    if s.lock is None:
        return "-"
    text = f"{s.lock.owner} ({s.lock.deploy_id})" if not s.lock.freeze else f"frozen by {s.lock.owner}: {s.lock.reason}"
    return text + " expired" if s.lock.expired else text
