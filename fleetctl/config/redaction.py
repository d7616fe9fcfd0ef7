"""The one place secrets are redacted: every output, log, report, journal entry and error goes through `redact`.

Values are registered as secret when they come from `env()`/`file()` in templates, when their variable name
says password/secret/token, or when a protocol parameter is marked secret. Registration is process-wide.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

MASK = "********"
SECRET_NAME = re.compile(r"(pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|credential)", re.IGNORECASE)
# Short values would redact ordinary words and numbers everywhere; they are still masked where they appear as
# the value of a secret-named key (see `redact_mapping`).
_MIN_LEN = 4

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


@functools.lru_cache(maxsize=65536)
def is_secret_name(name: str) -> bool:
    # Cached: output of a big inventory asks about the same few variable names a hundred thousand times.
    return bool(SECRET_NAME.search(name))


def register_secret(value: Any) -> None:
    """Remember a value that must never be shown."""
    global _pattern
    if value is None:
        return
    text = str(value)
    if len(text) < _MIN_LEN:
        return
    with _lock:
        if text in _secrets:
            return
        _secrets.add(text)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def forget_secrets() -> None:
    """For tests: clear the registry."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def redact(text: str) -> str:
    """`text` with every registered secret replaced by the mask."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def redact_value(value: Any) -> Any:
    """Redact strings inside nested lists/dicts; dict values under secret-named keys are masked outright."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_name(k) and v not in (None, "")
                    else redact_value(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value
