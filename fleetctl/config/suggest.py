""""Did you mean": the nearest known name to a misspelt key, host, group or variable, for error messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, known: Iterable[str], *, cutoff: float = 0.6) -> str:
    """` (did you mean 'x'?)` for the closest of `known`, or '' when nothing is close; `word` itself never."""
    candidates = sorted({k for k in known if k != word})
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=cutoff)
    if not close:
        # A different case is a near miss that difflib scores low for short names (WEB vs web).
        close = [k for k in candidates if k.lower() == word.lower()][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""
