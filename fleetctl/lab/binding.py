"""Binding a node-protocol call the way PowerShell binds a command's parameters, and the value checks the lab
node applies: names case-insensitive, values converted to the declared types, missing/unknown names refused."""

from __future__ import annotations

import re
from typing import Any

from fleetctl.config.redaction import register_secret
from fleetctl.lab.nodeerror import NodeError
from fleetctl.protocol.operations import Operation, Param, snake_case

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")  # app and release ids become directory names
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def bind(op: Operation, parameters: dict[str, Any]) -> dict[str, Any]:
    """PowerShell-style binding: names case-insensitive, values converted to the declared types."""
    by_lower = {p.name.lower(): p for p in op.params}
    kwargs: dict[str, Any] = {}
    for name, value in parameters.items():
        param = by_lower.get(str(name).lower())
        if param is None:
            raise NodeError("INVALID_ARGUMENT", f"{op.name}: a parameter cannot be found that matches "
                            f"parameter name {name!r}", {"parameter": name})
        if param.secret:
            register_secret(value)
        kwargs[snake_case(param.name)] = convert_value(op, param, value)
    missing = [p.name for p in op.params if p.required and snake_case(p.name) not in kwargs]
    if missing:
        raise NodeError("INVALID_ARGUMENT", f"{op.name}: missing required parameter(s) {', '.join(missing)}",
                        {"missing": missing})
    return kwargs


def convert_value(op: Operation, param: Param, value: Any) -> Any:
    def bad() -> NodeError:
        shown = "********" if param.secret else repr(value)[:80]
        return NodeError("INVALID_ARGUMENT", f"{op.name}: parameter {param.name} expects {param.type}, got "
                         f"{shown}", {"parameter": param.name})

    kind = param.type
    if kind == "switch":
        if value is None or isinstance(value, bool):
            return value is not False  # a switch named without a value is present
        raise bad()
    if value is None:
        if param.required:
            raise bad()
        return None
    if kind in ("int", "long"):
        if isinstance(value, bool):
            raise bad()
        try:
            return int(value)
        except (TypeError, ValueError):
            raise bad() from None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise bad()
    if kind == "string":
        if isinstance(value, (dict, list, tuple)):
            raise bad()
        return str(value)
    if kind == "string[]":
        items = value if isinstance(value, (list, tuple)) else [value]
        return [str(v) for v in items]
    if kind == "hashtable":
        if not isinstance(value, dict):
            raise bad()
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    raise bad()


def checked_name(value: str, key: str) -> str:
    if not _NAME.match(value or ""):
        raise NodeError("INVALID_ARGUMENT", f"{key} must be letters, digits, '.', '_', '+' or '-' "
                        f"(got {value!r})", {key: value})
    return value


def checked_sha(value: str) -> str:
    if not _SHA256.match(value or ""):
        raise NodeError("INVALID_ARGUMENT", "Sha256 must be 64 lower-case hex digits", {"Sha256": value})
    return value


def checked_port(value: int, key: str) -> int:
    if not 1 <= value <= 65535:
        raise NodeError("INVALID_ARGUMENT", f"{key} must be 1..65535", {key: value})
    return value


def checked_choice(value: str, allowed: tuple[str, ...], key: str) -> str:
    for option in allowed:
        if value.lower() == option.lower():
            return option
    raise NodeError("INVALID_ARGUMENT", f"{key} must be one of {', '.join(allowed)}", {key: value})
