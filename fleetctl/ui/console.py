"""Where output goes: rich consoles for people, one JSON document for machines; both redacted."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from fleetctl.config.redaction import redact, redact_value


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def safe(text: Any) -> str:
    """A value as text, with secrets masked; use for every table cell built from user data."""
    return redact("" if text is None else str(text))


def print_json(document: Any) -> None:
    """The `--json` output: exactly one document on stdout, secrets masked."""
    sys.stdout.write(json.dumps(redact_value(document), indent=2, default=str) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    from rich.markup import escape

    stderr().print(f"[yellow]warning:[/] {escape(redact(message))}")
