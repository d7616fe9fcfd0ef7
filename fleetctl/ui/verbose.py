"""`-v` / `-vv` for people: the node operation log (`fleetctl.node`, node/op_log.py) and the transport log
(`fleetctl.transport`, transport/trace.py) as plain lines on stderr, secrets masked, control characters escaped.

    -v    fleetctl.node at INFO:       web03  Switch-FleetRelease  0.41 s  ok
    -vv   fleetctl.node at DEBUG (plus parameter names) and fleetctl.transport at DEBUG (round trips, connects,
          authentication legs, retries, pool reopens)

Lines go to whatever `sys.stderr` is when they are written, so a rich status spinner on stderr (which redirects
it) prints them above itself. A live view on the same terminal registers its console with `show_above`; lines
are then printed through that console, above the live region, instead of tearing through it. With stderr
redirected elsewhere (`2>verbose.log`) they go to stderr regardless.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from rich.console import Console
from rich.text import Text

from fleetctl.ui.console import safe

NODE_LOGGER = "fleetctl.node"
TRANSPORT_LOGGER = "fleetctl.transport"

_lock = threading.Lock()
_display: Console | None = None


class VerboseHandler(logging.Handler):
    """One plain line per record on stderr, or above the live display that `show_above` registered."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = safe(record.getMessage())
            display = _display
            if display is not None:
                display.print(Text(line, style="dim"), markup=False, highlight=False, soft_wrap=True)
                return
            stream = sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never break the command it reports on
            self.handleError(record)


_handler = VerboseHandler()


def set_verbosity(level: int) -> None:
    """0: off (the loggers' cost is one `isEnabledFor` check per client); 1: operations; 2+: also transport."""
    node, transport = logging.getLogger(NODE_LOGGER), logging.getLogger(TRANSPORT_LOGGER)
    with _lock:
        for logger in (node, transport):
            logger.removeHandler(_handler)
            logger.setLevel(logging.NOTSET)
        if level <= 0:
            return
        node.setLevel(logging.DEBUG if level >= 2 else logging.INFO)
        node.addHandler(_handler)
        if level >= 2:
            transport.setLevel(logging.DEBUG)
            transport.addHandler(_handler)


def verbosity() -> int:
    node = logging.getLogger(NODE_LOGGER)
    if _handler not in node.handlers:
        return 0
    return 2 if node.level <= logging.DEBUG else 1


def show_above(console: Console | None, *, same_terminal: bool | None = None) -> None:
    """A live display started (`console`) or stopped (None). Its console takes the lines only when it writes to
    the terminal stderr writes to (`same_terminal` overrides the check, for tests)."""
    global _display
    if console is not None and not (same_terminal if same_terminal is not None else _shares_stderr(console)):
        console = None
    with _lock:
        _display = console


def _shares_stderr(console: Console) -> bool:
    try:
        ours, theirs = console.file.fileno(), sys.stderr.fileno()
        return os.isatty(ours) and os.path.samestat(os.fstat(ours), os.fstat(theirs))
    except (AttributeError, OSError, ValueError):
        return False
