"""Run locks that mean something: who holds a lock and whether that holder is provably gone (what `--force` may
take over), and the heartbeat that keeps a live run's locks renewed well inside their TTL.

"Provably gone" (docs/rollouts.md) is one of, decided on the controller:
- the lock has expired on the node (its run stopped renewing it);
- this project's history records the lock's run as finished (a finished run never touches a lock again; it only
  left this one behind because the node could not be reached to release it);
- the lock's controller process is on this machine (same host name, boot and pid namespace) and is no longer
  running (its pid is gone, or now belongs to a process that started at another time).
Anything else, a run on another controller that still renews its lock, is live: nothing takes its lock. A change
freeze (a lock with a reason, `fleetctl lock`) is held by a person, not a process, and is never "gone".

The heartbeat (`LockKeeper`) renews every held lock every third of the TTL through `Update-FleetAppLock`, which
never re-takes a lock. A lock that was taken over, or that cannot be renewed before it would expire, is lost:
the keeper tells the engine (`on_lost`), which halts before changing more hosts.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fleetctl.node.client import NodeClient
from fleetctl.node.results import LockInfo
from fleetctl.protocol.errors import NodeOperationError
from fleetctl.rollout.events import EventBus, Notice
from fleetctl.rollout.host_steps import describe_error

# The fewest seconds between two renewals of one lock (a very short TTL in a test still gets three tries).
MIN_RENEW_INTERVAL_S = 0.2
FinishedRun = Callable[[str], str | None]  # deploy id -> "finished at ... (status)" when the history knows it ended


# --- the controller process that holds a lock -----------------------------------------------------------------


def process_start_marker(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), so a reused pid is not mistaken for
    the process that took a lock. None where /proc is not available (or for a zombie, which has finished)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may contain spaces, so split after its closing paren.
    fields = stat[stat.rfind(")") + 2:].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or "-"
    except OSError:
        return "-"


def _pid_namespace() -> str:
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return "-"
    return "".join(ch for ch in link if ch.isdigit()) or "-"


def _safe(text: str) -> str:
    return text.replace("/", "_") or "-"


def this_process() -> str:
    """This controller process as a lock's `Process`: `host/boot id/pid namespace/pid/start marker`. A field
    this platform cannot tell is `-`, and then no other process can prove this one gone (only expiry can)."""
    pid = os.getpid()
    return "/".join((_safe(socket.gethostname()), _boot_id(), _pid_namespace(), str(pid),
                     process_start_marker(pid) or "-"))


def process_gone(process: str | None) -> str | None:
    """Why the controller process named by a lock's `Process` is provably no longer running, or None when it may
    be (another machine, boot or pid namespace, a field unknown, or it runs)."""
    parts = (process or "").split("/")
    if len(parts) != 5 or "-" in parts:
        return None
    host, boot, namespace, pid_text, started = parts
    if (host, boot, namespace) != (_safe(socket.gethostname()), _boot_id(), _pid_namespace()):
        return None
    try:
        pid = int(pid_text)
    except ValueError:
        return None
    if pid == os.getpid():
        return None  # ourselves: certainly not gone
    gone = f"its controller process {pid} on this machine is no longer running"
    current = process_start_marker(pid)
    if current is not None:
        return None if current == started else gone  # another start time: the pid was reused
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return gone
    except OSError:
        return None  # it exists (owned by someone else) and /proc would not say when it started
    return None  # exists, but unreadable /proc (or a zombie): no proof either way


# --- judging a holder -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HolderJudge:
    """Decides whether a lock's holder is provably gone; `finished` asks this project's history (given by the
    CLI, which owns the journal)."""

    finished: FinishedRun | None = None

    def gone(self, lock: LockInfo) -> str | None:
        """Why `lock`'s holder is provably gone, or None if it is (or may be) live. A freeze is never gone."""
        if lock.expired:
            return f"its lock expired at {_when(lock.expires_at)}"
        if lock.freeze:
            return None
        if self.finished is not None:
            finished = self.finished(lock.deploy_id)
            if finished:
                return f"run {lock.deploy_id} {finished} in this project's history"
        return process_gone(lock.process)


def _when(value: datetime | None) -> str:
    return value.replace(microsecond=0).isoformat().replace("+00:00", "Z") if value is not None else "?"


def describe_holder(host: str, lock: LockInfo) -> str:
    """One line naming who holds `host`'s lock: owner, deploy, since, renewed, expires (or the freeze's reason)."""
    if lock.freeze:
        return (f"{host} is frozen by {lock.owner} since {_when(lock.acquired_at)} until {_when(lock.expires_at)}: "
                f"{lock.reason}")
    renewed = f", renewed {_when(lock.renewed_at)}" if lock.renewed_at else ""
    return (f"{host} is locked by {lock.owner} (deploy {lock.deploy_id}, since {_when(lock.acquired_at)}{renewed}, "
            f"expires {_when(lock.expires_at)})")


def refusal(host: str, lock: LockInfo, *, gone: str | None, force: bool, playbook: str) -> str:
    """What the user is told when `host`'s lock stops a run (exit 4): `--force` is suggested only for a holder
    that is provably gone, and a live lock or a freeze is refused even with `--force`."""
    held = describe_holder(host, lock)
    if lock.freeze:
        lead = "--force does not lift a change freeze: " if force else ""
        return f"{lead}{held}; `fleetctl unlock {playbook}` lifts it"
    if gone:
        return f"{held}; that run is gone ({gone}): pass --force to take its lock over"
    if force:
        return (f"--force refused: {held} and that run is live (it renews its lock while it runs); --force takes "
                f"only an expired lock or one whose run is provably gone")
    return f"{held}; wait for that run to finish (it renews its lock while it runs)"


# --- the heartbeat --------------------------------------------------------------------------------------------


@dataclass
class _Held:
    client: NodeClient
    expires: float  # monotonic time by which the node's lock has surely expired unless renewed
    renewing: Future[None] | None = None


class LockKeeper:
    """Renews the locks one run holds, every `ttl/3`, until `stop()`; calls `on_lost(reason)` once when a lock is
    taken over or cannot be renewed before it expires."""

    def __init__(self, *, app: str, deploy_id: str, ttl_seconds: int, bus: EventBus,
                 on_lost: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.deploy_id = deploy_id
        self.ttl = float(ttl_seconds)
        self.interval = max(MIN_RENEW_INTERVAL_S, self.ttl / 3)
        self.bus = bus
        self._on_lost = on_lost
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._guard = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.lost: str | None = None
        self.renewals = 0

    def hold(self, host: str, client: NodeClient, locked_at: float) -> None:
        """`host`'s lock was taken (or renewed) by a request sent at monotonic `locked_at`."""
        with self._guard:
            self._held[host] = _Held(client, locked_at + self.ttl)

    def start(self) -> None:
        if self._thread is not None or not self._held:
            return
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(8, len(self._held))),
                                        thread_name_prefix="fleetctl-lock-keeper")
        self._thread = threading.Thread(target=self._beat, name="fleetctl-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (before the run releases its locks); waits for renewals in flight."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _beat(self) -> None:
        while not self._stopping.wait(self.interval):
            now = self._clock()
            with self._guard:
                held = list(self._held.items())
            for host, entry in held:
                if entry.renewing is not None and not entry.renewing.done():
                    # Still waiting for the host's connection (a long call in progress): lost once it expired.
                    if now >= entry.expires:
                        self._lose(f"the lock on {host} expired while its renewal waited for the host")
                    continue
                assert self._pool is not None
                try:
                    entry.renewing = self._pool.submit(self._renew, host, entry)
                except RuntimeError:
                    return  # shutting down

    def _renew(self, host: str, entry: _Held) -> None:
        if self._stopping.is_set():
            return
        sent = self._clock()
        try:
            entry.client.update_fleet_app_lock(app=self.app, deploy_id=self.deploy_id, ttl_seconds=int(self.ttl))
        except NodeOperationError as err:
            if err.code == "LOCK_NOT_OWNED":
                holder = LockInfo.from_result(err.details.get("holder"))
                now_held = f"; {describe_holder(host, holder)}" if holder else " (the lock is gone)"
                self._lose(f"lost the lock on {host}{now_held}")
                return
            self._failed(host, entry, describe_error(err))
            return
        except Exception as err:  # noqa: BLE001 - unreachable, timeout...: retried next beat while time allows
            self._failed(host, entry, describe_error(err))
            return
        entry.expires = sent + self.ttl
        with self._guard:
            self.renewals += 1

    def _failed(self, host: str, entry: _Held, error: str) -> None:
        if self._stopping.is_set():
            return
        if self._clock() + self.interval >= entry.expires:
            self._lose(f"could not renew the lock on {host} before it expires: {error}")
        else:
            self.bus.emit(Notice(f"could not renew the lock on {host} (retrying in {self.interval:g}s): {error}"))

    def _lose(self, reason: str) -> None:
        with self._guard:
            if self.lost is not None or self._stopping.is_set():
                return
            self.lost = reason
        self._on_lost(reason)
