"""Ctrl-C during a run: the interruption state the engine and the hosts share, the SIGINT handler that presses it,
and what each press does, in words, for the operator to read at once.

What a press does (docs/rollouts.md): the first stops new hosts (no further batch, no host of the current batch
that has not started, no more staging; a canary bake ends) while in-flight hosts finish their whole sequence,
health gates included; the second makes health gates give up at once: a host in its gate fails it and returns to
its previous release, whose service state is checked instead of a second gate, and a host still staging stops
before its service is touched. Later presses change nothing: every host must end in a known state and the locks
are released at the end.

The SIGINT handler does as little as a signal handler may: it writes a byte to a pipe. A watcher thread reads it
and presses; pressing from the handler itself could deadlock on a lock the interrupted main thread holds (the
event bus's, an Event's), and the notice must not wait for the main thread's next check either.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Literal

PressListener = Callable[[int], None]  # called with how many times Ctrl-C was pressed so far


class Interruption:
    """Ctrl-C state shared by the engine and in-flight hosts: first press stops new hosts, second aborts gates."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.abort = threading.Event()
        self._presses = 0
        self._listeners: list[PressListener] = []
        self._lock = threading.Lock()

    @property
    def presses(self) -> int:
        return self._presses

    def press(self) -> None:
        with self._lock:
            self._presses += 1
            presses = self._presses
            if self.requested.is_set():
                self.abort.set()
            self.requested.set()
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(presses)
            except Exception as err:  # noqa: BLE001 - a notice that fails must not undo the press
                print(f"warning: telling what Ctrl-C does failed: {type(err).__name__}: {err}", file=sys.stderr)

    def listen(self, listener: PressListener) -> Callable[[], None]:
        """Call `listener(presses)` after every press from now on; returns the call that stops it."""
        with self._lock:
            self._listeners.append(listener)

        def stop() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return stop


@contextmanager
def sigint_handler(interruption: Interruption) -> Iterator[None]:
    """While active, Ctrl-C presses the interruption instead of raising KeyboardInterrupt (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def on_sigint(signum: int, frame: object) -> None:
        with suppress(OSError):  # a full pipe already holds presses enough
            os.write(write_fd, b"i")

    def watch() -> None:
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            for byte in data:
                if byte != ord("i"):
                    return
                interruption.press()
            if not data:
                return

    watcher = threading.Thread(target=watch, name="fleetctl-sigint", daemon=True)
    watcher.start()
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        os.set_blocking(write_fd, True)
        os.write(write_fd, b"q")  # after any press still in the pipe: those are pressed first
        watcher.join(timeout=10)
        os.close(write_fd)
        os.close(read_fd)


Phase = Literal["locking", "batch", "baking", "ending"]


@dataclass(frozen=True)
class RunStage:
    """Where a run stands when Ctrl-C is pressed (the engine's view), for `interruption_notice`."""

    phase: Phase
    in_flight: int = 0  # hosts at work in the current batch
    gating: int = 0  # of those, hosts in a health gate now
    batches_left: tuple[int, ...] = ()  # numbers (from 1) of the batches that will not start


def interruption_notice(presses: int, stage: RunStage) -> str:
    """What this press does, exactly as the engine and the host steps carry it out (module docstring)."""
    hosts = _hosts(stage.in_flight)
    if presses == 1:
        if stage.phase == "locking":
            return ("Ctrl-C: stopping before any host is changed; the locks are released once every host has "
                    "answered")
        if stage.phase == "ending":
            return "Ctrl-C: every batch has run; finishing and releasing the locks"
        skipped = f"; {_batches(stage.batches_left)} will not start" if stage.batches_left else ""
        if stage.phase == "baking":
            return f"Ctrl-C: the canary bake ends now{skipped}; releasing the locks"
        if stage.in_flight == 0:
            return f"Ctrl-C: no new hosts start{skipped}; releasing the locks"
        gating = f", {stage.gating} in a health gate" if stage.gating else ""
        return (f"Ctrl-C: no new hosts start{skipped}; finishing {hosts} in flight{gating}, then releasing the "
                "locks; Ctrl-C again to stop waiting for health gates")
    if presses == 2:
        if stage.in_flight == 0:
            return "Ctrl-C again: no host is in flight; releasing the locks"
        return ("Ctrl-C again: not waiting for health gates: a host in its gate fails it now and goes back to its "
                "previous release (its service state is checked instead of a gate); a host still staging stops "
                f"before its service is touched; a stop or start under way finishes first ({hosts} in flight). "
                "Another Ctrl-C changes nothing more")
    waiting = f"waiting for {hosts} to reach a known state, then " if stage.in_flight else ""
    return (f"Ctrl-C ({presses}x): already stopping; {waiting}releasing the locks (killing fleetctl now would "
            "leave hosts mid-step and their locks until the lock TTL)")


def _hosts(count: int) -> str:
    return f"{count} host" if count == 1 else f"{count} hosts"


def _batches(numbers: tuple[int, ...]) -> str:
    if len(numbers) == 1:
        return f"batch {numbers[0]}"
    return f"batches {numbers[0]}–{numbers[-1]}"
