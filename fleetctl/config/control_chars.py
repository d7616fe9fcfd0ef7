"""Control characters: shown, never obeyed, in every terminal output; refused where they would hide in a name.

Anything a node returns (log lines, event messages, service states, errors) may hold what its service or a
hostile user wrote: ESC/CSI/OSC sequences that retitle the window, clear the screen or fake output, C1 controls
that some terminals treat as ESC, and bidi overrides that make `evil` read as `live`. `printable` turns every such
character into a visible escape (`\\x1b`, `\\u202e`), keeping newlines and tabs, which the layout handles.
It lives with the configuration because input validation (host names) refuses the same characters.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, C1 controls, and Unicode's bidi embedding/override/isolate/mark
# characters (the "Trojan Source" set) plus the line/paragraph separators that break a line like a newline.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control character replaced by a visible escape; newlines and tabs are kept."""
    return _CONTROL.sub(_visible, text) if text else text


def has_control(text: str) -> bool:
    """Whether `text` holds a character `printable` would escape (for refusing such names in input)."""
    return bool(_CONTROL.search(text))
