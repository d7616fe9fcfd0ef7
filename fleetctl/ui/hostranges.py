"""Host lists for people, compactly: `web[001:005,007], db-primary` instead of seven names (Ansible's range
syntax, which inventories already use, with commas for gaps).

`compact_hosts(names)` is pure and is the one way a list of hosts is printed: plan batches, grouped errors,
collapsed rows of deploy/rollback/status/ping. Zero padding is kept (`web[001:010]` expands back to exactly the
names given); numbers padded differently are never merged (`web9`, `web010` stay apart); names without a number
are listed as they are, in the order given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class _Name:
    name: str
    parts: tuple[str, ...]  # re.split with a group: text, digits, text, ...; odd indexes are the numbers

    @property
    def family(self) -> tuple[str, ...]:
        """The name with its numbers taken out: only names of one family can share a range."""
        return self.parts[0::2]


@dataclass(frozen=True)
class _Part:
    """One comma-separated piece of the output: a plain name, or `prefix[spans]suffix`."""

    prefix: str
    spans: tuple[str, ...]  # empty: a plain name (all in `prefix`)
    suffix: str
    count: int  # how many names it stands for

    def text(self, spans: int | None = None) -> str:
        if not self.spans:
            return self.prefix
        shown = self.spans if spans is None else self.spans[:spans] + ("…",)
        return f"{self.prefix}[{','.join(shown)}]{self.suffix}"


def compact_hosts(names: Iterable[str], *, max_chars: int | None = None) -> str:
    """`names` as ranges, families in the order they first appear; duplicates are shown once.

    `max_chars` bounds the text for a table cell or a one-line message: beyond it the list is cut at a
    boundary and ends with `… (N hosts)`, N being all the names given. None: everything.
    """
    unique = list(dict.fromkeys(names))
    parts = _compact(unique)
    full = ", ".join(p.text() for p in parts)
    if max_chars is None or len(full) <= max_chars:
        return full
    total = f" ({len(unique)} hosts)"
    shown: list[str] = []
    for part in parts:
        if len(", ".join([*shown, part.text()])) + len(total) + 3 > max_chars:
            # Cut inside the first part that does not fit, keeping as many of its spans as fit.
            for keep in range(len(part.spans) - 1, 0, -1):
                cut = ", ".join([*shown, part.text(keep)])
                if len(cut) + len(total) <= max_chars:
                    return cut + total
            break
        shown.append(part.text())
    return ", ".join([*shown, "…"]) + total if shown else f"{len(unique)} hosts"


def _compact(names: Sequence[str]) -> list[_Part]:
    parsed = [_Name(n, tuple(_DIGITS.split(n))) for n in names]
    families: dict[tuple[str, ...], list[_Name]] = {}
    for p in parsed:
        families.setdefault(p.family, []).append(p)
    out: list[_Part] = []
    for members in families.values():
        out.extend(_family(members))
    return out


def _family(members: list[_Name]) -> list[_Part]:
    """One family: the range runs over whichever varying number gives the fewest parts (the last on a tie), the
    other numbers fixed per part (`web[01:02].dc1, web[01:03].dc2`)."""
    slots = range(1, len(members[0].parts), 2)
    varying = [i for i in slots if len({m.parts[i] for m in members}) > 1]
    if not varying:  # no number at all, or names that differ only in padding (`web7`, `web07`)
        return [_Part(m.name, (), "", 1) for m in members]  # names arrive deduplicated
    candidates = [_over(members, slot, slots) for slot in varying]
    return min(reversed(candidates), key=len)


def _over(members: list[_Name], slot: int, slots: range) -> list[_Part]:
    groups: dict[tuple[str, ...], list[_Name]] = {}
    for m in members:
        groups.setdefault(tuple(m.parts[i] for i in slots if i != slot), []).append(m)
    out: list[_Part] = []
    for group in groups.values():
        out.extend(_ranged(group, slot))
    return out


def _ranged(group: list[_Name], slot: int) -> list[_Part]:
    """One part per padding, as Ansible pads a range (to the width of its first number): with `01` in the
    list, `01`..`99` and `100`.. share width 2 (`n[01:500]`); a shorter unpadded number (`9`) forms its own."""
    padded_widths = sorted({len(m.parts[slot]) for m in group if _padded(m.parts[slot])})
    by_width: dict[int, list[_Name]] = {}  # 0: not padded
    for m in group:
        digits = m.parts[slot]
        fits = [w for w in padded_widths if len(digits) == w or (len(digits) > w and not _padded(digits))]
        by_width.setdefault(fits[-1] if fits else 0, []).append(m)
    out: list[_Part] = []
    for width, ms in by_width.items():
        if len(ms) == 1:
            out.append(_Part(ms[0].name, (), "", 1))
            continue
        first = ms[0].parts
        numbers = sorted({int(m.parts[slot]) for m in ms})
        spans = tuple(s for a, b in _runs(numbers) for s in _spans(a, b, width))
        out.append(_Part("".join(first[:slot]), spans, "".join(first[slot + 1:]), len(ms)))
    return out


def _padded(digits: str) -> bool:
    return len(digits) > 1 and digits.startswith("0")


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def _spans(a: int, b: int, width: int) -> tuple[str, ...]:
    def text(n: int) -> str:
        return str(n).zfill(width)

    if a == b:
        return (text(a),)
    # Two neighbours read better listed than as a range of two.
    return (text(a), text(b)) if b == a + 1 else (f"{text(a)}:{text(b)}",)
