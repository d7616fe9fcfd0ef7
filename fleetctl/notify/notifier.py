"""The notification subscriber: gathers a run's facts from its events, decides which notification event the
run's end is, and sends each webhook the events it asked for, each delivery in its own thread.

Events: `start` (RunStarted); at RunFinished, `success` (exit 0), `interrupted` (130), `halted` (the engine
halted the rollout: a canary failed or the failure budget ran out, exit 3, or 1 when no host was left on the new
release), `failure` (any other non-zero exit: failed hosts within the budget, a lock held by another run).

Nothing here blocks the run: the bus subscriber only starts threads. `close()` waits for deliveries still in
flight, each no longer than its webhook's timeout counted from when the notification was due; one still running
then is abandoned (daemon thread) and reported as not delivered.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetctl.config.playbook import NotifyEvent, Playbook, Webhook
from fleetctl.config.redaction import redact
from fleetctl.errors import EXIT_INTERRUPTED, EXIT_OK, ConfigError
from fleetctl.notify.delivery import Delivery, deliver, tls_context
from fleetctl.notify.payloads import FailedHost, RunSummary, render
from fleetctl.rollout.events import (
    Event,
    EventBus,
    Halting,
    HostFinished,
    HostOutcome,
    RunFinished,
    RunStarted,
)

FAILED = ("failed", "rolled_back")
# Grace beyond a webhook's timeout for its thread to hand back its result.
JOIN_GRACE = 0.25

Sender = Callable[..., Delivery]


@dataclass
class _Pending:
    thread: threading.Thread
    deadline: float  # time.monotonic()
    webhook: int
    fmt: str
    event: NotifyEvent


class Notifier:
    """Subscribe before the engine emits RunStarted; call `close()` once the run returned (also on errors)."""

    def __init__(self, webhooks: Sequence[Webhook], *, base_dir: Path = Path("."), source: Path | None = None,
                 sender: Sender = deliver) -> None:
        self.webhooks = list(webhooks)
        self._sender = sender
        self._buses: list[EventBus] = []
        self._contexts: list[ssl.SSLContext] = []
        for index, hook in enumerate(self.webhooks):
            bundle = None
            if hook.ca_bundle:
                path = Path(hook.ca_bundle)
                bundle = path if path.is_absolute() else base_dir / path
                if not bundle.is_file():
                    raise ConfigError(f"CA bundle {bundle} does not exist", file=source,
                                      key=f"notify.webhooks.{index}.ca_bundle")
            try:
                self._contexts.append(tls_context(str(bundle) if bundle else None))
            except (OSError, ValueError) as err:
                raise ConfigError(f"cannot read CA bundle {bundle}: {err}", file=source,
                                  key=f"notify.webhooks.{index}.ca_bundle") from None
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._results: list[Delivery] = []
        self._start: RunStarted | None = None
        self._started_at = 0.0
        self._halted = False
        self._finished = False
        self._outcomes: dict[str, HostOutcome] = {}
        self._start_threads: dict[int, threading.Thread] = {}

    @classmethod
    def for_playbook(cls, settings: Playbook, *, sender: Sender = deliver) -> Notifier | None:
        """The playbook's webhooks (None when it has none); a missing CA bundle is a ConfigError (exit 2)."""
        if not settings.notify.webhooks:
            return None
        return cls(settings.notify.webhooks, base_dir=settings.base_dir, source=settings.path, sender=sender)

    # --- the subscriber ------------------------------------------------------------------------------------------

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(self.record)
        self._buses.append(bus)

    def record(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, RunStarted):
                self._start = event
                self._started_at = time.time()
                self._halted = False
                self._finished = False
                self._outcomes = {}
                self._dispatch("start", self._summary("start", None))
            elif isinstance(event, Halting):
                self._halted = True
            elif isinstance(event, HostFinished):
                self._outcomes[event.result.host] = event.result
            elif isinstance(event, RunFinished) and self._start is not None and not self._finished:
                self._finished = True
                self._outcomes.update(event.outcomes)
                kind = self.event_for(event.exit_code, self._halted)
                self._dispatch(kind, self._summary(kind, event, event.exit_code))

    def run_ended_abnormally(self, error: BaseException) -> None:
        """The run raised instead of finishing (a bug, Ctrl-C outside the engine): if it had started and its end
        was not announced, announce `interrupted` (KeyboardInterrupt) or `failure` with the error."""
        for bus in self._buses:  # what the run emitted before it raised comes first (its start, or its end)
            bus.flush(timeout=5.0)
        with self._lock:
            if self._start is None or self._finished:
                return
            interrupted = isinstance(error, KeyboardInterrupt)
            code = EXIT_INTERRUPTED if interrupted else None
            message = "interrupted" if interrupted else redact(
                f"the run stopped with an error: {type(error).__name__}: {error}")
            kind: NotifyEvent = "interrupted" if interrupted else "failure"
            self._finished = True
            self._dispatch(kind, self._summary(kind, RunFinished(self._start.run_id, code or 0, {}, message), code))

    @staticmethod
    def event_for(exit_code: int, halted: bool) -> NotifyEvent:
        if exit_code == EXIT_OK:
            return "success"
        if exit_code == EXIT_INTERRUPTED:
            return "interrupted"
        if halted:
            return "halted"
        return "failure"

    def _summary(self, kind: NotifyEvent, end: RunFinished | None, exit_code: int | None = None) -> RunSummary:
        """The facts so far; `end` is the run's end (None at start), `exit_code` its code (None: unknown)."""
        start = self._start
        assert start is not None
        planned = [h for batch in start.batches for h in batch]
        counts: dict[str, int] = {}
        failed: list[FailedHost] = []
        if end is not None:
            names = planned + [h for h in self._outcomes if h not in set(planned)]
            for name in names:
                outcome = self._outcomes.get(name) or HostOutcome(name, "not_started")
                counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
                if outcome.outcome in FAILED:
                    failed.append(FailedHost(redact(name), outcome.outcome, redact(outcome.error or "")))
        return RunSummary(
            event=kind, run_id=start.run_id, kind=start.kind, playbook=start.playbook, service=start.service,
            version=start.version, release=start.release, strategy=start.strategy, canary=start.canary,
            user=start.user, controller=socket.gethostname(), hosts=len(planned), batches=len(start.batches),
            started_at=self._started_at, finished_at=time.time() if end else None,
            exit_code=exit_code, message=end.message if end else "", counts=counts,
            failed_hosts=tuple(failed))

    def _dispatch(self, kind: NotifyEvent, summary: RunSummary) -> None:
        for index, hook in enumerate(self.webhooks):
            if kind not in hook.events:
                continue
            deadline = time.monotonic() + float(hook.timeout)
            # A webhook hears about the end after its start notification, unless that one is still stuck when
            # the end's own budget runs out.
            before = None if kind == "start" else self._start_threads.get(index)
            thread = threading.Thread(target=self._send, args=(index, hook, kind, summary, deadline, before),
                                      name=f"fleetctl-notify-{index}", daemon=True)
            if kind == "start":
                self._start_threads[index] = thread
            self._pending.append(_Pending(thread, deadline, index, hook.format, kind))
            thread.start()

    def _send(self, index: int, hook: Webhook, kind: NotifyEvent, summary: RunSummary, deadline: float,
              before: threading.Thread | None) -> None:
        if before is not None:
            before.join(max(0.0, deadline - time.monotonic()))
        left = deadline - time.monotonic()
        started = time.monotonic()
        try:
            result = self._sender(hook.url, render(summary, hook.format), index=index, fmt=hook.format, event=kind,
                                  headers=dict(hook.headers), timeout=max(left, 0.0), attempts=hook.attempts,
                                  context=self._contexts[index])
        except Exception as err:  # noqa: BLE001 - a notification never breaks the run
            result = Delivery(index, hook.format, kind, False, 0, time.monotonic() - started, None,
                              redact(f"{type(err).__name__}: {err}"))
        with self._lock:
            self._results.append(result)

    # --- the end -------------------------------------------------------------------------------------------------

    def close(self) -> list[Delivery]:
        """Wait for deliveries in flight (each at most until its deadline) and return every delivery's result,
        in the order the notifications were due."""
        for bus in self._buses:  # events still on their way from the bus may be due notifications
            bus.flush()
        with self._lock:
            pending = list(self._pending)
        for item in pending:
            item.thread.join(max(0.0, item.deadline - time.monotonic()) + JOIN_GRACE)
        with self._lock:
            results = list(self._results)
            for item in pending:
                if item.thread.is_alive() and not any(r.index == item.webhook and r.event == item.event
                                                      for r in results):
                    results.append(Delivery(item.webhook, item.fmt, item.event, False, 0, 0.0, None,
                                            "still sending when its timeout ran out: abandoned"))
            self._pending = []
            self._results = []
        order: dict[tuple[int, str], int] = {(p.webhook, p.event): i for i, p in enumerate(pending)}
        return sorted(results, key=lambda r: order.get((r.index, r.event), len(order)))
