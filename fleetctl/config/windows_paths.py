"""What Windows accepts as a file name or path, checked on the controller so a bad one never reaches a node.

Windows refuses `<>:"/\\|?*` and control characters in names, treats `CON`, `PRN`, `AUX`, `NUL`, `COM1`-`COM9`
and `LPT1`-`LPT9` as devices whatever the extension (`nul.json` is the null device), silently drops a trailing dot
or space (`app.json.` and `app.json` are one file), and reads `name:stream` as an alternate data stream of `name`.
Each check returns the reason a value is refused, or None.
"""

from __future__ import annotations

import re

_INVALID = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(\..*)?$", re.IGNORECASE)
MAX_PATH = 240  # MAX_PATH is 260 with the drive and the file names fleetctl adds below a root


def file_name_problem(name: str) -> str | None:
    """Why `name` cannot be one Windows file or directory name, or None."""
    if not name:
        return "is empty"
    if name in (".", ".."):
        return f"is {name!r}, not a name"
    bad = _INVALID.search(name)
    if bad:
        char = bad.group()
        shown = repr(char) if char.isprintable() else f"\\x{ord(char):02x}"
        what = " (an alternate data stream)" if char == ":" else ""
        return f"holds {shown}{what}, which Windows does not allow in a file name"
    if name[-1] in ". ":
        return "ends with a dot or a space, which Windows drops (it would name another file)"
    if _RESERVED.match(name):
        return f"is the reserved device name {name.split('.')[0].upper()} (whatever the extension)"
    return None


def relative_path_problem(path: str) -> str | None:
    """Why `path` (relative, `\\` or `/` separated) cannot name a file inside a directory, or None."""
    if not path:
        return "is empty"
    if re.match(r"^[A-Za-z]:", path) or path[0] in "\\/":
        return "must be relative to the release directory"
    # Windows collapses repeated separators (`conf\\app.json`), so an empty component is no problem.
    for part in [p for p in re.split(r"[\\/]", path) if p]:
        problem = file_name_problem(part)
        if problem:
            return f"component {part!r} {problem}"
    if len(path) > MAX_PATH:
        return f"is longer than {MAX_PATH} characters"
    return None


def absolute_path_problem(path: str) -> str | None:
    """Why `path` is not a plain absolute Windows directory such as `C:\\apps\\hello`, or None."""
    if not re.match(r"^[A-Za-z]:\\", path):
        return r"expected an absolute Windows path such as C:\apps\hello"
    rest = path[3:].rstrip("\\")
    if not rest:
        return r"must be a directory below the drive's root, such as C:\apps\hello"
    if "/" in rest:
        return r"expected backslashes (C:\apps\hello), not slashes"
    for part in [p for p in rest.split("\\") if p]:
        problem = file_name_problem(part)
        if problem:
            return f"component {part!r} {problem}"
    if len(path) > MAX_PATH:
        return f"is longer than {MAX_PATH} characters"
    return None
