"""What a lab service writes to the Windows Event Log, as far as Wine lets the lab see it.

Wine 8 has no event log: `ReportEventW` (what Go's `x/sys/windows/svc/eventlog` and C services call) only writes
each message string to Wine's `eventlog` debug channel, as `<tid>:trace:eventlog:ReportEventW L"text"` (trace for
information, warn for warnings, err for errors) on the process's stderr. The lab turns that channel on for the
Windows exes it runs as services and reads those lines back from the service's output; NSSM-hosted programs have
them diverted from AppStderr (fleetctl/lab/nssm.py) so shared\\logs stays the program's own.
What the lab cannot know: the event ID and category (Wine does not print them), the time an event was written,
and the source name a program registered (every event of a service's process is taken as the service's).
Linux executables have no event log at all.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# Given to Windows exes run as services: only the eventlog channel, nothing else of Wine's debug output.
WINEDEBUG_EVENTS = "-all,trace+eventlog,warn+eventlog,err+eventlog"
_LINE = re.compile(rb'^[0-9a-f]{4,8}:(trace|warn|err):eventlog:ReportEventW L"(.*)"\s*$')
_CHANNEL = re.compile(rb"^[0-9a-f]{4,8}:(trace|warn|err|fixme):eventlog:")  # any line of Wine's channel
_LEVELS = {b"trace": "Information", b"warn": "Warning", b"err": "Error"}
LAB_NOTE = ("lab: events come from Wine's eventlog debug channel (ReportEventW); Wine does not give their event ID "
            "or time, and Linux executables write none")


def is_event_line(line: bytes) -> bool:
    """A line of Wine's eventlog channel (ReportEventW, or Wine's own event-log service starting): not output."""
    return _CHANNEL.match(line) is not None


def parse_events(path: Path, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` events in a service's captured output, newest first."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    events = []
    for line in data.splitlines():
        match = _LINE.match(line)
        if match:
            events.append({"time": None, "level": _LEVELS[match.group(1)], "id": None,
                           "message": _unescape(match.group(2).decode("ascii", "replace"))})
    return list(reversed(events))[:limit]


def _unescape(text: str) -> str:
    """Undo Wine's debugstr_w escaping: \\n \\r \\t \\\\ \\" and \\NNNN (four hex digits) for anything else."""
    simple = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}
    return re.sub(r"\\([0-9a-fA-F]{4}|.)",
                  lambda m: chr(int(m.group(1), 16)) if len(m.group(1)) == 4 else simple.get(m.group(1), m.group(0)),
                  text)
