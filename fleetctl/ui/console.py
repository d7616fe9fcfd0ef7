"""Where output goes: rich consoles for people, one JSON document for machines; both redacted.

Every string shown to people goes through `safe`: secrets masked, control characters escaped (`printable`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console

from fleetctl.config.connection import ConnectionSettings, insecure_hosts_warning
from fleetctl.config.control_chars import printable
from fleetctl.config.redaction import redact, redact_value


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def safe(text: Any) -> str:
    """A value as text, secrets masked and control characters escaped; use for every string built from user
    or node data."""
    return printable(redact("" if text is None else str(text)))


def print_json(document: Any) -> None:
    """The `--json` output: exactly one document on stdout, secrets masked."""
    sys.stdout.write(json.dumps(redact_value(document), indent=2, default=str) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    from rich.markup import escape

    stderr().print(f"[yellow]warning:[/] {escape(safe(message))}")


def warn_insecure(connections: Iterable[ConnectionSettings]) -> None:
    """The one warning for hosts whose certificate validation is off (SPEC 9), printed by every command that
    connects to nodes (ping, status, logs, deploy and its --dry-run, rollback, remove) before it connects."""
    warning = insecure_hosts_warning(connections)
    if warning:
        warn(warning)
