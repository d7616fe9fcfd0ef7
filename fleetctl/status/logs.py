"""The core of `fleetctl logs` across hosts: the last lines of each host's service log, then (with -f) every line
written after, read on the nodes with a byte cursor (`Read-FleetLog`) so that no line is lost or shown twice.

    follower = LogFollower(targets, fleet.client, grep=compiled)
    tails = follower.tail(100)                     # each host's last lines, and its cursor at their end
    follower.follow(on_event, stop)                # poll every host from its cursor until `stop` is set

Nothing here prints: what happens is handed to `on_event` as values (`HostLines`, `HostNotice`); ui/logs.py
renders them. `--grep` is applied here, on the controller, with Python's `re` (one syntax whatever the node runs,
compiled once before any host is asked, and never sent to a node): of the lines fetched, only the matching ones
are shown. A host that stops answering while followed is reported once and asked again at every poll from the
same cursor, so what it wrote meanwhile still arrives; when it answers again, that is reported too.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fleetctl.config.redaction import redact
from fleetctl.errors import ConfigError, FleetError
from fleetctl.node.client import NodeClient
from fleetctl.node.fleet import run_parallel
from fleetctl.node.results import LogChunk
from fleetctl.protocol.errors import NodeOperationError, TransportError

FOLLOW_INTERVAL = 1.0  # seconds between polls of a host that had nothing new (bounded: never longer)
MAX_CATCH_UP = 20  # reads in a row of a host that says `more` before the next host's turn


def compile_grep(pattern: str | None) -> re.Pattern[str] | None:
    """--grep checked on the controller before any host is asked: a bad regex is one ConfigError (exit 2)."""
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"not a valid regular expression ({err.msg}"
                          f"{f' at position {err.pos}' if err.pos is not None else ''}): {pattern!r}",
                          key="--grep") from None


@dataclass(frozen=True)
class LogTarget:
    host: str
    app: str
    root: str
    path: str | None = None  # relative to root; None: the newest file under shared\logs


@dataclass(frozen=True)
class HostLines:
    """Lines a host's log gained (already filtered by --grep)."""

    host: str
    path: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class HostNotice:
    """Something about a host worth one line: it failed, came back, or its log rotated."""

    host: str
    message: str
    error: bool = False


LogEvent = HostLines | HostNotice


@dataclass
class _Cursor:
    file: str | None = None
    offset: int | None = None
    failing: str | None = None  # the error last reported for this host, while it keeps failing


@dataclass(frozen=True)
class HostTail:
    host: str
    path: str | None
    lines: tuple[str, ...]
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "lines": list(self.lines), "error": self.error}


@dataclass
class LogFollower:
    targets: Sequence[LogTarget]
    connect: Callable[[str], NodeClient]
    grep: re.Pattern[str] | None = None
    forks: int = 50
    _cursors: dict[str, _Cursor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_host = {t.host: t for t in self.targets}
        self._cursors = {t.host: _Cursor() for t in self.targets}

    def _matching(self, lines: Sequence[str]) -> tuple[str, ...]:
        grep = self.grep
        return tuple(lines) if grep is None else tuple(line for line in lines if grep.search(line))

    def _read(self, host: str, *, tail: int | None = None) -> LogChunk:
        target, cursor = self._by_host[host], self._cursors[host]
        chunk = self.connect(host).read_fleet_log(app=target.app, root=target.root, path=target.path,
                                                  file=cursor.file if tail is None else None,
                                                  offset=cursor.offset if tail is None else None, tail=tail)
        cursor.file, cursor.offset = chunk.path, chunk.offset
        return chunk

    def tail(self, lines: int) -> dict[str, HostTail]:
        """Each host's last `lines` lines (those matching --grep), and its cursor set at their end."""
        def one(host: str) -> HostTail:
            try:
                chunk = self._read(host, tail=lines)
            except NodeOperationError as err:
                if err.code == "NOT_FOUND":
                    self._cursors[host].offset = 0  # a log that appears later is followed from its first line
                    return HostTail(host, None, (), f"no log found: {err.message}")
                raise
            return HostTail(host, chunk.path, self._matching(chunk.lines))

        outcomes = run_parallel([t.host for t in self.targets], one, forks=self.forks)
        return {h: o.value if o.value is not None else HostTail(h, None, (), o.error or "unknown error")
                for h, o in outcomes.items()}

    def poll(self) -> list[LogEvent]:
        """One round: every host read from its cursor; the events in host order."""
        outcomes = run_parallel([t.host for t in self.targets], self._poll_host, forks=self.forks)
        events: list[LogEvent] = []
        for host, outcome in outcomes.items():
            events.extend(outcome.value if outcome.value is not None else
                          [HostNotice(host, outcome.error or "unknown error", error=True)])
        return events

    def _poll_host(self, host: str) -> list[LogEvent]:
        cursor = self._cursors[host]
        events: list[LogEvent] = []
        try:
            for _ in range(MAX_CATCH_UP):
                # A host whose first read failed has no cursor yet: it starts at the end of its log, as `tail` would.
                chunk = self._read(host, tail=0) if cursor.offset is None else self._read(host)
                if chunk.reset:
                    events.append(HostNotice(host, f"{chunk.path}: the log was rotated or truncated; reading it "
                                                   "from its beginning"))
                shown = self._matching(chunk.lines)
                if shown:
                    events.append(HostLines(host, chunk.path, shown))
                if not chunk.more:
                    break
        except (TransportError, NodeOperationError, FleetError) as err:
            if isinstance(err, NodeOperationError) and err.code == "NOT_FOUND":
                cursor.file, cursor.offset = None, 0  # not there yet: once it is, from its first line
            reason = redact(getattr(err, "reason", None) or str(err))
            if cursor.failing != reason:
                events.append(HostNotice(host, f"{reason} (asking again every {FOLLOW_INTERVAL:g} s)", error=True))
            cursor.failing = reason
            return events
        if cursor.failing is not None:
            events.insert(0, HostNotice(host, "answering again"))
            cursor.failing = None
        return events

    def follow(self, on_event: Callable[[LogEvent], None], stop: threading.Event,
               interval: float = FOLLOW_INTERVAL) -> None:
        """Poll every host until `stop` is set (Ctrl-C sets it); each event goes to `on_event` as it comes."""
        while not stop.is_set():
            for event in self.poll():
                on_event(event)
            stop.wait(interval)
