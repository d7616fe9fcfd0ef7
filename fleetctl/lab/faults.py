"""Fault injection for lab nodes: the `--faults` grammar, its parser, and the per-node fault switches.

Grammar (whitespace around separators is ignored)::

    SPEC     := RULE ("," RULE)*
    RULE     := TARGET "=" FAULT ("+" FAULT)*
    TARGET   := NODE | PERCENT "%" | "*"           NODE: a node name, `lab-node03`, or short `node03`
    FAULT    := unreachable | blackhole | auth-failure | crash-on-start | health-failing | disk-full
              | latency:DURATION | crash-after:DURATION | slow-stop:DURATION | clock-skew:[+|-]DURATION
              | idle-timeout:DURATION              (this node's WinRM shell idle timeout, for shells created after)
              | none | no-NAME                     (clear every fault / one fault: for `lab fault` at run time)
    DURATION := NUMBER ("ms" | "s" | "m" | "h")     e.g. 200ms, 5s, 1.5m

`10%=unreachable` picks ceil(10% of the nodes) nodes, never zero, by a pseudo-random choice seeded with the rule's
text: the same spec on the same lab always picks the same nodes, and two rules pick independently.
"""

from __future__ import annotations

import math
import random
import re
import threading
from dataclasses import dataclass, field, fields

from fleetctl.errors import ConfigError
from fleetctl.lab.backend import NetworkFaults

FLAG_FAULTS = ("unreachable", "blackhole", "auth-failure", "crash-on-start", "health-failing", "disk-full")
DURATION_FAULTS = ("latency", "crash-after", "slow-stop", "clock-skew", "idle-timeout")
ALL_FAULTS = FLAG_FAULTS + DURATION_FAULTS
_DURATION = re.compile(r"^([+-]?)(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SHORT_NODE = re.compile(r"^node\d+$")


@dataclass(frozen=True)
class Fault:
    """One fault: its name and, for the timed ones, a value in seconds; `clear` undoes it."""

    name: str
    seconds: float = 0.0
    clear: bool = False

    def __str__(self) -> str:
        if self.clear:
            return "none" if self.name == "*" else f"no-{self.name}"
        if self.name in DURATION_FAULTS:
            return f"{self.name}:{_format_seconds(self.seconds)}"
        return self.name


@dataclass(frozen=True)
class FaultRule:
    target: str  # node name as written, "N%" or "*"
    faults: tuple[Fault, ...]
    text: str


@dataclass
class NodeFaults:
    """The fault switches of one node; read by the server (network) and the node (disk, services, clock)."""

    unreachable: bool = False
    blackhole: bool = False
    auth_failure: bool = False
    crash_on_start: bool = False
    health_failing: bool = False
    disk_full: bool = False
    latency_s: float = 0.0
    crash_after_s: float = 0.0
    slow_stop_s: float = 0.0
    clock_skew_s: float = 0.0
    idle_timeout_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def apply(self, fault: Fault) -> None:
        with self._lock:
            if fault.name == "*":
                for f in fields(self):
                    if not f.name.startswith("_"):
                        setattr(self, f.name, f.default)
                return
            attr = _attribute(fault.name)
            if fault.name in FLAG_FAULTS:
                setattr(self, attr, not fault.clear)
            else:
                setattr(self, attr, 0.0 if fault.clear else fault.seconds)

    def network(self) -> NetworkFaults:
        return NetworkFaults(unreachable=self.unreachable, blackhole=self.blackhole,
                             latency_ms=int(self.latency_s * 1000), auth_failure=self.auth_failure,
                             idle_timeout_s=self.idle_timeout_s)

    def active(self) -> list[str]:
        """The active faults in spec spelling, e.g. `["latency:200ms", "disk-full"]`."""
        out = []
        for name in ALL_FAULTS:
            value = getattr(self, _attribute(name))
            if name in FLAG_FAULTS and value:
                out.append(name)
            elif name in DURATION_FAULTS and value:
                out.append(str(Fault(name, value)))
        return out


def _attribute(name: str) -> str:
    attr = name.replace("-", "_")
    return attr + "_s" if name in DURATION_FAULTS else attr


def _format_seconds(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    value = abs(seconds)
    if value < 1 or value != int(value):
        return f"{sign}{value * 1000:g}ms"
    return f"{sign}{int(value)}s"


def parse_duration(text: str, *, signed: bool = False, where: str = "--faults") -> float:
    match = _DURATION.match(text.strip())
    if not match or (match.group(1) and not signed):
        expected = "[+|-]" if signed else ""
        raise ConfigError(f"bad duration {text!r}: expected {expected}NUMBER followed by ms, s, m or h "
                          "(e.g. 200ms, 5s)", key=where)
    value = float(match.group(2)) * _UNITS[match.group(3)]
    return -value if match.group(1) == "-" else value


def parse_fault(text: str, where: str = "--faults") -> Fault:
    """One FAULT of the grammar."""
    name, _, arg = text.strip().partition(":")
    name = name.strip().lower()
    if name == "none" and not arg:
        return Fault("*", clear=True)
    if name.startswith("no-") and name[3:] in ALL_FAULTS and not arg:
        return Fault(name[3:], clear=True)
    if name in FLAG_FAULTS:
        if arg:
            raise ConfigError(f"fault {name!r} takes no value (got {text!r})", key=where)
        return Fault(name)
    if name in DURATION_FAULTS:
        if not arg:
            raise ConfigError(f"fault {name!r} needs a duration, e.g. {name}:5s", key=where)
        seconds = parse_duration(arg, signed=name == "clock-skew", where=where)
        if name != "clock-skew" and seconds <= 0:
            raise ConfigError(f"fault {name!r} needs a positive duration (got {arg!r})", key=where)
        return Fault(name, seconds)
    raise ConfigError(f"unknown fault {name!r}; expected one of: {', '.join(ALL_FAULTS)}, none, no-NAME",
                      key=where)


def split_faults(text: str) -> list[str]:
    """`latency:5s+clock-skew:+2m` -> the two faults: a `+` separates faults only before a fault name."""
    return re.split(r"\+(?=\s*[A-Za-z])", text)


def parse_fault_spec(spec: str, where: str = "--faults") -> list[FaultRule]:
    """Parse a whole SPEC; raises one ConfigError naming the bad part."""
    rules: list[FaultRule] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        target, sep, faults_text = item.partition("=")
        target = target.strip()
        if not sep or not target or not faults_text.strip():
            raise ConfigError(f"bad fault rule {item!r}: expected TARGET=FAULT[+FAULT...], "
                              "e.g. node03=crash-on-start or 10%=unreachable", key=where)
        if target.endswith("%"):
            try:
                percent = float(target[:-1])
            except ValueError:
                percent = -1
            if not 0 < percent <= 100:
                raise ConfigError(f"bad percentage {target!r} in {item!r}: expected 1%..100%", key=where)
        faults = tuple(parse_fault(f, where) for f in split_faults(faults_text))
        rules.append(FaultRule(target=target, faults=faults, text=item))
    if not rules:
        raise ConfigError("empty fault spec: expected TARGET=FAULT[,TARGET=FAULT...]", key=where)
    return rules


def resolve_target(target: str, node_names: list[str], seed: str, where: str = "--faults") -> list[str]:
    """The nodes a TARGET names, in lab order."""
    if target == "*":
        return list(node_names)
    if target.endswith("%"):
        count = max(1, math.ceil(float(target[:-1]) * len(node_names) / 100))
        chosen = set(random.Random(seed).sample(range(len(node_names)), min(count, len(node_names))))
        return [n for i, n in enumerate(node_names) if i in chosen]
    for candidate in (target, f"lab-{target}" if _SHORT_NODE.match(target) else None):
        if candidate in node_names:
            return [candidate]
    raise ConfigError(f"no lab node named {target!r} (nodes are {node_names[0]} .. {node_names[-1]})"
                      if node_names else "the lab has no nodes", key=where)


def assign_faults(rules: list[FaultRule], node_names: list[str], where: str = "--faults") -> dict[str, list[Fault]]:
    """Which faults each node gets from a parsed spec (nodes without faults are absent)."""
    out: dict[str, list[Fault]] = {}
    for rule in rules:
        for name in resolve_target(rule.target, node_names, rule.text, where):
            out.setdefault(name, []).extend(rule.faults)
    return out
