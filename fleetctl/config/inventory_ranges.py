"""Host entries as inventories write them: `name[:port]` with Ansible-style ranges (`web[01:20]`, `node[a:f]`).

The rules follow Ansible's `expand_hostname_range`/`parse_address` so existing inventories expand to the same
host names; where Ansible silently yields nothing (a backwards range) we raise instead.
"""

from __future__ import annotations

import re
import string

# Ansible accepts `host:port` only when what precedes the port is a recognisable address, so a colon inside
# a range (`web[1:3]`) or an odd name is never mistaken for a port.
_BRACKETED_HOSTPORT = re.compile(r"^\[(.+)\]:([0-9]+)$")
_HOSTPORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+|[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]"
_LABEL = rf"(?:\w|{_RANGE})(?:[\w-]|{_RANGE})*(?<![_-])"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.IGNORECASE)
_IPV4_PART = r"(?:[01]?[0-9]{1,2}|2[0-4][0-9]|25[0-5]|\[[0-9]+:[0-9]+(?::[0-9]+)?\])"
_IPV4 = re.compile(rf"^(?:{_IPV4_PART}\.){{3}}{_IPV4_PART}$")
_IPV6 = re.compile(r"^[0-9a-f:.\[\]]*:[0-9a-f:.\[\]]*$", re.IGNORECASE)


class HostRangeError(ValueError):
    """A host entry whose range cannot be expanded; the caller adds file and line."""


def _is_address(text: str) -> bool:
    return bool(_HOSTNAME.match(text) or _IPV4.match(text) or _IPV6.match(text))


def split_port(entry: str) -> tuple[str, int | None]:
    """`web1:2222` -> ("web1", 2222); entries that are not a plain address keep their text and get no port."""
    for pattern in (_BRACKETED_HOSTPORT, _HOSTPORT):
        m = pattern.match(entry)
        if m and _is_address(m.group(1)):
            return m.group(1), int(m.group(2))
    return entry, None


def expand_range(entry: str) -> list[str]:
    """All names an entry stands for, ranges expanded left to right (`db[1:2]-[a:b]` gives four names)."""
    if "[" not in entry:
        return [entry]
    head, _, rest = entry.partition("[")
    body, closing, tail = rest.partition("]")
    if not closing:
        raise HostRangeError(f"host range in '{entry}' has no closing ']'")
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise HostRangeError(f"host range '[{body}]' must be [begin:end] or [begin:end:step]")
    begin, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise HostRangeError(f"host range '[{body}]' must give an end value")
    try:
        step = int(step_text)
    except ValueError:
        raise HostRangeError(f"host range '[{body}]' has step '{step_text}', expected a positive integer") from None
    if step < 1:
        raise HostRangeError(f"host range '[{body}]' has step {step}, expected a positive integer")
    width = 0
    if begin[0] == "0" and len(begin) > 1:
        # A leading zero means fixed width (web[01:20]); Ansible insists both ends are written the same way.
        width = len(begin)
        if len(end) != width:
            raise HostRangeError(f"host range '[{body}]' must write begin and end with the same number of digits")
    letters = string.ascii_letters
    if begin in letters and end in letters and len(begin) == len(end) == 1:
        first, last = letters.index(begin), letters.index(end)
        if first > last:
            raise HostRangeError(f"host range '[{body}]' must have begin <= end")
        items = list(letters[first:last + 1:step])
    else:
        try:
            first, last = int(begin), int(end)
        except ValueError:
            raise HostRangeError(
                f"host range '[{body}]' must be numbers ([01:20]) or single letters ([a:f])") from None
        if first > last:
            raise HostRangeError(f"host range '[{body}]' must have begin <= end")
        items = [str(i).zfill(width) for i in range(first, last + 1, step)]
    names: list[str] = []
    for item in items:
        name = head + item + tail
        if "[" in tail:
            names.extend(expand_range(name))
        else:
            names.append(name)
    return names


def expand_host_entry(entry: str) -> tuple[list[str], int | None]:
    """An inventory host entry -> (host names, port or None)."""
    name, port = split_port(entry)
    return expand_range(name), port
