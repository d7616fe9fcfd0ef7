"""The deploy history journal: a SQLite file under `.fleetctl/` written event by event as a rollout progresses.

Wiring (deploy/rollback): `journal = Journal(); journal.subscribe(bus)` before the engine emits `RunStarted`,
and `journal.close()` in a `finally`. The bus's delivery thread hands the journal every event that queued up
since its last write, and they are committed together in one transaction (the host threads never wait for
SQLite), so a controller that crashes mid-deploy leaves a run row still marked `running`; readers report such a run as `interrupted` when the
process that wrote it (pid + start time, on this controller) is gone. Every text stored goes through
`fleetctl.config.redaction` first: the database never holds a secret.

Readers: `Journal(path).runs(playbook=..., limit=...)` and `Journal(path).run(run_id_or_prefix)`.

Timeline (schema 2): each step a host ran is kept as a span (step, start, end, failed, detail) from
`HostStepFinished`, and each batch's start and end from `BatchStarted`/`BatchFinished`, so a run report can draw
when things happened. Spans are held in memory and written with the host's row (at its next step, its outcome
and the end of the run), never one commit per step. A run recorded under schema 1 has only per-step durations:
`HostRecord.timeline()` lays those end to end from the host's start and says it did (`recorded=False`).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fleetctl.config.project import STATE_DIR, state_dir
from fleetctl.config.redaction import redact, redact_value
from fleetctl.errors import (
    EXIT_BAD_INPUT,
    EXIT_HALTED,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_ROLLOUT_FAILED,
    ConfigError,
)
from fleetctl.rollout.events import (
    BatchFinished,
    BatchStarted,
    Event,
    EventBus,
    HostFinished,
    HostOutcome,
    HostStepFinished,
    HostStepStarted,
    RunFinished,
    RunInfo,
    RunStarted,
)
from fleetctl.rollout.lock_keeper import process_start_marker  # one reading of /proc for runs and locks

SCHEMA_VERSION = 4
DEFAULT_PATH = Path(STATE_DIR) / "history.db"  # under the project root (config.project.state_dir)
PATH_ENV = "FLEETCTL_HISTORY_DB"

# The status a finished run gets from its exit code (the stable exit codes of docs/cli.md).
STATUS_BY_EXIT = {
    EXIT_OK: "succeeded",
    EXIT_ROLLOUT_FAILED: "failed",
    EXIT_BAD_INPUT: "bad-input",
    EXIT_HALTED: "halted",
    EXIT_LOCKED: "locked",
    EXIT_INTERRUPTED: "interrupted",
}

# Version N of the schema is reached by running _MIGRATIONS[N-1]; a new version appends a script, never edits one.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        playbook TEXT NOT NULL,
        playbook_key TEXT NOT NULL,
        service TEXT NOT NULL,
        version TEXT,
        release TEXT,
        strategy TEXT NOT NULL,
        user TEXT NOT NULL,
        canary INTEGER NOT NULL,
        batches TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        message TEXT,
        controller TEXT NOT NULL,
        pid INTEGER NOT NULL,
        pid_started TEXT
    );
    CREATE INDEX runs_started ON runs (started_at);
    CREATE TABLE hosts (
        run_id TEXT NOT NULL REFERENCES runs (id),
        host TEXT NOT NULL,
        outcome TEXT,
        step TEXT,
        release TEXT,
        error TEXT,
        timings TEXT NOT NULL DEFAULT '{}',
        started_at REAL,
        finished_at REAL,
        PRIMARY KEY (run_id, host)
    );
    """,
    # 2: when each step and batch ran (timelines), and how the run's notifications went; NULL for runs before.
    """
    ALTER TABLE hosts ADD COLUMN spans TEXT;
    ALTER TABLE runs ADD COLUMN batch_spans TEXT;
    ALTER TABLE runs ADD COLUMN notifications TEXT;
    """,
    # 3: the release that failed its gate (or start) on the host in that run, so rollback never returns to it.
    """
    ALTER TABLE hosts ADD COLUMN failed_release TEXT;
    """,
    # 4: what started a run (a person or a schedule entry) and what it was asked (options, artifact, commit).
    """
    ALTER TABLE runs ADD COLUMN trigger TEXT NOT NULL DEFAULT 'manual';
    ALTER TABLE runs ADD COLUMN schedule TEXT;
    ALTER TABLE runs ADD COLUMN inputs TEXT NOT NULL DEFAULT '{}';
    """,
)

# The order steps run in, for laying out a schema-1 host's durations (which kept no start times).
STEP_ORDER = ("connect", "lock", "transfer", "install", "service", "stop", "switch", "start", "health", "record",
              "retention", "rollback", "remove", "unlock")


def default_path() -> Path:
    """Where the journal lives: $FLEETCTL_HISTORY_DB, else `.fleetctl/history.db` at the project root (the
    directory of the fleet.yml found walking up from the cwd, else the cwd), so a deploy run from the root and
    `history` run from a subdirectory read the same journal."""
    env = os.environ.get(PATH_ENV)
    return Path(env) if env else state_dir() / DEFAULT_PATH.name


@dataclass(frozen=True)
class StepSpan:
    """One step of one host as it ran: wall-clock start and end (seconds since the epoch)."""

    step: str
    start: float
    end: float
    failed: bool = False
    detail: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def to_json(self) -> list[Any]:
        return [self.step, round(self.start, 3), round(self.end, 3), self.failed, self.detail]

    @classmethod
    def from_json(cls, item: list[Any]) -> StepSpan:
        return cls(str(item[0]), float(item[1]), float(item[2]), bool(item[3]), str(item[4]) if len(item) > 4 else "")


@dataclass(frozen=True)
class BatchSpan:
    """When one batch ran; `finished` None if the run ended (or crashed) inside it."""

    index: int
    canary: bool
    hosts: tuple[str, ...]
    started: float
    finished: float | None = None
    passed: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "canary": self.canary, "hosts": list(self.hosts), "started": self.started,
                "finished": self.finished, "passed": self.passed}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BatchSpan:
        return cls(int(doc["index"]), bool(doc["canary"]), tuple(doc["hosts"]), float(doc["started"]),
                   None if doc.get("finished") is None else float(doc["finished"]), doc.get("passed"))


@dataclass(frozen=True)
class HostRecord:
    """One host's line in a run: `outcome` is None while the host was still in flight (`step` says where)."""

    host: str
    outcome: str | None
    step: str | None
    release: str | None
    error: str | None
    timings: dict[str, float]
    started_at: float | None
    finished_at: float | None
    spans: tuple[StepSpan, ...] | None = None  # None: recorded before schema 2 (durations only)

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def timeline(self) -> tuple[tuple[StepSpan, ...], bool]:
        """The host's steps in time, and whether they were recorded as they ran (True) or reconstructed from a
        schema-1 row's per-step durations laid end to end from the host's start (False)."""
        if self.spans is not None:
            return self.spans, True
        if self.started_at is None or not self.timings:
            return (), False
        spans: list[StepSpan] = []
        at = self.started_at
        order = {name: i for i, name in enumerate(STEP_ORDER)}
        for step, seconds in sorted(self.timings.items(), key=lambda kv: order.get(kv[0], len(order))):
            spans.append(StepSpan(step, at, at + float(seconds)))
            at += float(seconds)
        return tuple(spans), False

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome, "step": self.step, "release": self.release, "error": self.error,
            "timings": self.timings, "started_at": _iso(self.started_at), "finished_at": _iso(self.finished_at),
            "steps": [{"step": s.step, "started_at": _iso_ms(s.start), "seconds": round(s.seconds, 3),
                       "failed": s.failed, "detail": s.detail} for s in self.timeline()[0]],
        }


@dataclass(frozen=True)
class RunRecord(RunInfo):
    """One run as the journal knows it: what it is (the `RunInfo` its `RunStarted` announced), its batches, how it
    ended and its hosts; `status` already accounts for crashed controllers."""

    canary: bool
    batches: tuple[tuple[str, ...], ...]
    started_at: float
    finished_at: float | None
    status: str  # running, succeeded, failed, bad-input, halted, locked, interrupted
    exit_code: int | None
    message: str | None
    controller: str
    pid: int
    hosts: dict[str, HostRecord] = field(default_factory=dict)
    batch_spans: tuple[BatchSpan, ...] = ()  # empty for runs recorded before schema 2
    # One dict per webhook delivery (fleetctl.notify.Delivery.to_json()), as the run's controller recorded them.
    notifications: tuple[dict[str, Any], ...] = ()

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    @property
    def host_names(self) -> list[str]:
        """Every host of the run: planned hosts in batch order, then any host recorded outside the plan."""
        names = [h for batch in self.batches for h in batch]
        return names + [h for h in self.hosts if h not in set(names)]

    def outcome_counts(self) -> dict[str, int]:
        """Hosts per outcome; a planned host with no final outcome counts as `not_started` once the run ended,
        `in_flight` if it had begun, or `pending` while the run is still running."""
        counts: dict[str, int] = {}
        for name in self.host_names:
            counts[self.host_outcome(name)] = counts.get(self.host_outcome(name), 0) + 1
        return counts

    def host_outcome(self, name: str) -> str:
        record = self.hosts.get(name)
        if record is not None and record.outcome:
            return record.outcome
        if self.status == "running":
            return "in_flight" if record is not None else "pending"
        return "in_flight" if record is not None and self.status == "interrupted" else "not_started"

    def to_json(self, *, with_hosts: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.run_id, "kind": self.kind, "playbook": self.playbook, "service": self.service,
            "version": self.version, "release": self.release, "strategy": self.strategy, "user": self.user,
            "canary": self.canary, "started_at": _iso(self.started_at), "finished_at": _iso(self.finished_at),
            "status": self.status, "exit_code": self.exit_code, "message": self.message,
            "controller": self.controller, "pid": self.pid, "outcomes": self.outcome_counts(),
            "trigger": self.trigger, "schedule": self.schedule, "inputs": self.inputs,
            "notifications": list(self.notifications),
        }
        if with_hosts:
            doc["hosts"] = {}
            for name in self.host_names:
                record = self.hosts.get(name)
                entry = record.to_json() if record else {"outcome": None, "step": None, "release": None,
                                                         "error": None, "timings": {}, "started_at": None,
                                                         "finished_at": None, "steps": []}
                entry["outcome"] = self.host_outcome(name)
                doc["hosts"][name] = entry
        return doc


class Journal:
    """The history database. As a subscriber it records events; as a reader it lists runs.

    Thread-safe: events arrive from the engine's worker threads.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._run_id: str | None = None
        self._warned = False
        self._spans: dict[str, list[StepSpan]] = {}  # host -> its steps so far in the current run
        self._batches: dict[int, BatchSpan] = {}
        self._buses: list[EventBus] = []

    # --- connection and schema ---------------------------------------------------------------------------------

    def _connect(self, *, create: bool) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        if not create and not self.path.exists():
            return None
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # One connection shared by the worker threads, serialised by self._lock.
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._migrate(db)
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"cannot use the history database: {err}", file=self.path) from None
        except OSError as err:
            raise ConfigError(f"cannot create the history database: {err.strerror or err}", file=self.path) from None
        self._db = db
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"the history database has schema version {version}, newer than this fleetctl understands "
                    f"({SCHEMA_VERSION}); upgrade fleetctl or point {PATH_ENV} at another file",
                    file=self.path,
                )
            for script in _MIGRATIONS[version:]:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._flush_buses()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # --- writing: the event subscriber -------------------------------------------------------------------------

    def subscribe(self, bus: EventBus) -> None:
        """Record every event `bus` emits from now on, a batch of events per transaction. Opens (creating if
        needed) the database now, so a bad path fails before the rollout starts."""
        with self._lock:
            self._connect(create=True)
        self._buses.append(bus)
        bus.subscribe_batches(self.record_batch)

    def record(self, event: Event) -> None:
        """Commit the effect of one event (see `record_batch`)."""
        self.record_batch((event,))

    def record_batch(self, events: Sequence[Event]) -> None:
        """Commit the effect of several events, in order, in one transaction. A database failure mid-rollout must
        not break the rollout: it is reported once on stderr and the rollout goes on (the batch is lost, later
        batches are tried again)."""
        recorded = [e for e in events if isinstance(e, (RunStarted, HostStepStarted, HostStepFinished, BatchStarted,
                                                        BatchFinished, HostFinished, RunFinished))]
        if not recorded:
            return
        try:
            with self._lock:
                db = self._connect(create=True)
                assert db is not None
                db.execute("BEGIN")
                try:
                    for event in recorded:
                        self._apply(db, event)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except (sqlite3.Error, ConfigError) as err:
            if not self._warned:
                self._warned = True
                print(f"warning: history not recorded in {self.path}: {redact(str(err))}", file=sys.stderr)

    def _apply(self, db: sqlite3.Connection, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._run_started(db, event)
        elif isinstance(event, HostStepStarted):
            self._host_step(db, event)
        elif isinstance(event, HostStepFinished):
            # Kept in memory; written with the host's next row update.
            self._spans.setdefault(event.host, []).append(StepSpan(
                event.step, event.started_at, event.started_at + event.seconds, event.failed, redact(event.detail)))
        elif isinstance(event, (BatchStarted, BatchFinished)):
            self._batch(db, event)
        elif isinstance(event, HostFinished):
            self._host_finished(db, event.result)
        elif isinstance(event, RunFinished):
            self._run_finished(db, event)

    def _flush_buses(self) -> None:
        # Events still on their way from a bus this journal listens to belong to what a reader should see.
        for bus in self._buses:
            bus.flush()

    def _run_started(self, db: sqlite3.Connection, e: RunStarted) -> None:
        self._run_id = e.run_id
        self._spans = {}
        self._batches = {}
        db.execute(
            "INSERT OR REPLACE INTO runs (id, kind, playbook, playbook_key, service, version, release, strategy,"
            " user, canary, batches, started_at, status, controller, pid, pid_started, trigger, schedule, inputs)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
            (
                redact(e.run_id), e.kind, redact(e.playbook), playbook_key(e.playbook), redact(e.service),
                _r(e.version), _r(e.release), redact(e.strategy), redact(e.user), int(e.canary),
                json.dumps(redact_value([list(b) for b in e.batches])), time.time(), socket.gethostname(),
                os.getpid(), process_start_marker(os.getpid()), e.trigger, _r(e.schedule),
                json.dumps(redact_value(e.inputs), default=str),
            ),
        )

    def _host_step(self, db: sqlite3.Connection, e: HostStepStarted) -> None:
        if self._run_id is None:
            return
        # The first step creates the host's row (started_at); later steps only move `step`, so a crash shows
        # where each in-flight host was.
        db.execute(
            "INSERT INTO hosts (run_id, host, step, started_at, spans) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (run_id, host) DO UPDATE SET spans = excluded.spans,"
            " step = CASE WHEN outcome IS NULL THEN excluded.step ELSE step END",
            (redact(self._run_id), redact(e.host), e.step, time.time(), self._spans_json(e.host)),
        )

    def _spans_json(self, host: str) -> str:
        return json.dumps([s.to_json() for s in self._spans.get(host, [])])

    def _batch(self, db: sqlite3.Connection, e: BatchStarted | BatchFinished) -> None:
        if self._run_id is None:
            return
        if isinstance(e, BatchStarted):
            self._batches[e.index] = BatchSpan(e.index, e.canary, tuple(redact(h) for h in e.hosts), time.time())
        elif e.index in self._batches:
            self._batches[e.index] = replace(self._batches[e.index], finished=time.time(), passed=e.passed)
        db.execute("UPDATE runs SET batch_spans = ? WHERE id = ?",
                   (json.dumps([b.to_json() for b in self._batches.values()]), redact(self._run_id)))

    def _host_finished(self, db: sqlite3.Connection, r: HostOutcome, *, only_if_missing: bool = False) -> None:
        if self._run_id is None:
            return
        now = time.time()
        conflict = "DO NOTHING" if only_if_missing else (
            "DO UPDATE SET outcome = excluded.outcome, release = excluded.release, error = excluded.error,"
            " timings = excluded.timings, finished_at = excluded.finished_at, spans = excluded.spans,"
            " failed_release = COALESCE(excluded.failed_release, failed_release)")
        started = now - sum(r.timings.values()) if r.timings else None  # None: never started here
        spans = self._spans.get(r.host)
        if spans:
            started = spans[0].start
        db.execute(
            "INSERT INTO hosts (run_id, host, outcome, release, error, timings, started_at, finished_at, spans,"
            " failed_release)"
            f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, host) {conflict}",
            (redact(self._run_id), redact(r.host), r.outcome, _r(r.release), _r(r.error),
             _timings_json(r), started, now, self._spans_json(r.host), _r(r.failed_release)),
        )


    def _run_finished(self, db: sqlite3.Connection, e: RunFinished) -> None:
        self._run_id = self._run_id or e.run_id
        for outcome in e.outcomes.values():
            # The run's final word on each host wins (a canary that passed may have been rolled back when
            # another canary failed); hosts never reported individually (not_started) get their row now.
            # Timings and start times already recorded are kept.
            self._host_finished(db, outcome, only_if_missing=True)
            db.execute(
                "UPDATE hosts SET outcome = ?, release = ?, error = ?,"
                " finished_at = CASE WHEN outcome IS NULL THEN ? ELSE finished_at END,"
                " failed_release = COALESCE(?, failed_release)"
                " WHERE run_id = ? AND host = ?",
                (outcome.outcome, _r(outcome.release), _r(outcome.error), time.time(),
                 _r(outcome.failed_release), redact(e.run_id), redact(outcome.host)),
            )
            if outcome.timings:
                db.execute("UPDATE hosts SET timings = ? WHERE run_id = ? AND host = ?",
                           (_timings_json(outcome), redact(e.run_id), redact(outcome.host)))
            # Steps after a host's outcome (unlock) are written now.
            db.execute("UPDATE hosts SET spans = ? WHERE run_id = ? AND host = ?",
                       (self._spans_json(outcome.host), redact(e.run_id), redact(outcome.host)))
        db.execute(
            "UPDATE runs SET finished_at = ?, exit_code = ?, status = ?, message = ? WHERE id = ?",
            (time.time(), e.exit_code, STATUS_BY_EXIT.get(e.exit_code, "failed"), _r(e.message or None),
             redact(e.run_id)),
        )
        self._run_id = None
        self._spans = {}
        self._batches = {}

    # --- reading -------------------------------------------------------------------------------------------------

    def runs(self, playbook: str | None = None, limit: int = 20, environment: str | None = None) -> list[RunRecord]:
        """The most recent runs first, optionally only those of `playbook` (path as given, the same file by
        another path, or the service name) and of a fleet.yml `environment` (recorded in the run's inputs)."""
        self._flush_buses()
        with self._lock:
            db = self._connect(create=False)
            if db is None:
                return []
            where: list[str] = []
            args: list[object] = []
            if playbook:
                where.append("(playbook = ? OR playbook_key = ? OR service = ?)")
                args += [playbook, playbook_key(playbook), playbook]
            if environment:
                where.append("json_extract(inputs, '$.environment') = ?")
                args.append(environment)
            clause = f" WHERE {' AND '.join(where)}" if where else ""
            # Only fixed SQL is joined; every value is a parameter.
            rows = db.execute(f"SELECT * FROM runs{clause} ORDER BY started_at DESC, rowid DESC LIMIT ?",
                              (*args, limit)).fetchall()
            return [self._record(db, row) for row in rows]

    def gate_failures(self, service: str) -> dict[str, dict[str, str]]:
        """host -> {release id: why} for every release that failed its gate (or start) on a host in a recorded
        run of `service` (the node keeps the same mark; this covers a node that could not be told)."""
        self._flush_buses()
        with self._lock:
            db = self._connect(create=False)
            if db is None:
                return {}
            rows = db.execute(
                "SELECT h.host, h.failed_release, h.error FROM hosts h JOIN runs r ON r.id = h.run_id"
                " WHERE r.service = ? AND h.failed_release IS NOT NULL ORDER BY r.started_at", (service,)).fetchall()
        failures: dict[str, dict[str, str]] = {}
        for row in rows:
            failures.setdefault(row["host"], {})[row["failed_release"]] = row["error"] or "failed its health gate"
        return failures

    def record_notifications(self, run_id: str, deliveries: list[dict[str, Any]]) -> None:
        """Keep how a run's webhook deliveries went (after the run: they may finish after RunFinished). A
        database failure is a warning, as for events."""
        self._flush_buses()
        try:
            with self._lock:
                db = self._connect(create=True)
                assert db is not None
                db.execute("UPDATE runs SET notifications = ? WHERE id = ?",
                           (json.dumps(redact_value(deliveries)), redact(run_id)))
        except (sqlite3.Error, ConfigError) as err:
            print(f"warning: notification results not recorded in {self.path}: {redact(str(err))}", file=sys.stderr)

    def last_run(self) -> RunRecord:
        """The newest run (`history show last`); ConfigError when the history is empty."""
        runs = self.runs(limit=1)
        if not runs:
            raise ConfigError("no run recorded yet, so there is no 'last' run (see `fleetctl history`)",
                              file=self.path, key="RUN_ID")
        return runs[0]

    def run(self, run_id: str) -> RunRecord:
        """One run with its hosts, by id or unique id prefix; ConfigError if none or several match."""
        self._flush_buses()
        with self._lock:
            db = self._connect(create=False)
            rows = [] if db is None else db.execute(
                "SELECT * FROM runs WHERE id = ? UNION SELECT * FROM runs WHERE substr(id, 1, ?) = ? LIMIT 5",
                (run_id, len(run_id), run_id),
            ).fetchall()
            exact = [r for r in rows if r["id"] == run_id]
            rows = exact or rows
            if not rows:
                raise ConfigError(f"no run with id '{run_id}' in the history (see `fleetctl history`)",
                                  file=self.path, key="RUN_ID")
            if len(rows) > 1:
                ids = ", ".join(r["id"] for r in rows)
                raise ConfigError(f"run id prefix '{run_id}' is ambiguous: {ids}", file=self.path, key="RUN_ID")
            assert db is not None
            return self._record(db, rows[0])

    def finished_run(self, run_id: str) -> str | None:
        """"finished at TIME (STATUS)" when this history records run `run_id` as ended, else None (unknown here, or
        still running). A finished run never touches a lock again: what it left on a node is provably abandoned."""
        self._flush_buses()
        with self._lock:
            db = self._connect(create=False)
            row = None if db is None else db.execute(
                "SELECT status, finished_at FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or row["status"] == "running" or row["finished_at"] is None:
            return None
        return f"finished at {_iso(row['finished_at'])} ({row['status']})"

    def _record(self, db: sqlite3.Connection, row: sqlite3.Row) -> RunRecord:
        status = row["status"]
        if status == "running" and not writer_alive(row["controller"], row["pid"], row["pid_started"]):
            status = "interrupted"
        hosts = {
            h["host"]: HostRecord(
                host=h["host"], outcome=h["outcome"], step=h["step"], release=h["release"], error=h["error"],
                timings=json.loads(h["timings"] or "{}"), started_at=h["started_at"], finished_at=h["finished_at"],
                spans=None if h["spans"] is None else tuple(StepSpan.from_json(s) for s in json.loads(h["spans"])),
            )
            for h in db.execute("SELECT * FROM hosts WHERE run_id = ? ORDER BY rowid", (row["id"],))
        }
        return RunRecord(
            run_id=row["id"], kind=row["kind"], playbook=row["playbook"], service=row["service"],
            version=row["version"], release=row["release"], strategy=row["strategy"], user=row["user"],
            canary=bool(row["canary"]), batches=tuple(tuple(b) for b in json.loads(row["batches"])),
            started_at=row["started_at"], finished_at=row["finished_at"], status=status,
            exit_code=row["exit_code"], message=row["message"], controller=row["controller"], pid=row["pid"],
            hosts=hosts, trigger=row["trigger"], schedule=row["schedule"], inputs=json.loads(row["inputs"] or "{}"),
            batch_spans=tuple(BatchSpan.from_json(b) for b in json.loads(row["batch_spans"] or "[]")),
            notifications=tuple(json.loads(row["notifications"] or "[]")),
        )


# --- liveness of the writing process --------------------------------------------------------------------------


def writer_alive(controller: str, pid: int, pid_started: str | None) -> bool:
    """Whether the process that wrote a `running` run may still be running it. A run written on another
    controller cannot be checked from here and is assumed alive."""
    if controller != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if pid_started is not None:
        current = process_start_marker(pid)
        if current is not None and current != pid_started:
            return False
        if current is None:
            return False  # /proc worked when the run was written, so the process is gone (or a zombie)
    return True


def playbook_key(playbook: str) -> str:
    """A playbook's identity for filtering: its resolved path when it names a file, else the text."""
    try:
        path = Path(playbook)
        return str(path.resolve()) if path.is_file() else redact(playbook)
    except OSError:
        return redact(playbook)


def _timings_json(outcome: HostOutcome) -> str:
    return json.dumps({redact(k): round(float(v), 3) for k, v in outcome.timings.items()})


def _r(value: str | None) -> str | None:
    return None if value is None else redact(value)


def _iso_ms(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
