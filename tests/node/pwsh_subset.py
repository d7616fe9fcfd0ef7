"""A tiny evaluator for the small PowerShell subset that FleetNode.psm1's quoting function (and its lock rule,
`Get-FleetLockDecision`) is written in.

No PowerShell runs on this machine, yet the module's `ConvertTo-FleetCommandLineArgument` must be the same
algorithm as `fleetctl/protocol/cmdline.py`. This walks the tree-sitter-pwsh syntax tree of one function and
executes it: variables (a `[bool]` parameter as given), integer and string literals, `[char]N` casts,
`-eq -ceq -gt -and -cnotmatch`, `+ *`, `$x++`,
`if/elseif`, `foreach`, `continue`, `return`, `New-Object System.Text.StringBuilder` and its `Append`/`ToString`,
and a string's `.Length`/`.ToCharArray()`. Anything else raises `Unsupported`, so the module cannot drift into
code this evaluator would misread. What it assumes rather than proves: that PowerShell's semantics for these few
constructs are the ones below (`-eq` on two [char]s compares code units; `-cnotmatch` is a case-sensitive .NET
regex, here evaluated with Python's `re`, which agrees for a plain character class).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tree_sitter import Node

# Nodes that only wrap one meaningful child.
_WRAPPERS = {"pipeline", "pipeline_chain", "unary_expression", "expression_with_unary_operator", "assignment_value",
             "left_assignment_expression", "statement_block", "argument_expression", "script_block_body",
             "parenthesized_expression", "integer_literal"}


_BINARY = {"comparison_expression", "logical_expression", "additive_expression", "multiplicative_expression",
           "logical_argument_expression", "comparison_argument_expression", "additive_argument_expression",
           "multiplicative_argument_expression"}


class Unsupported(Exception):
    """The function uses PowerShell this evaluator does not know."""


class _Return(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


class _Continue(Exception):
    pass


@dataclass
class _StringBuilder:
    parts: list[str] = field(default_factory=list)


def _text(node: Node) -> str:
    return (node.text or b"").decode("utf-8")


def _named(node: Node) -> list[Node]:
    return [c for c in node.children if c.is_named and c.type != "comment"]


def call_function(function: Node, **arguments: Any) -> Any:
    """Run a `function_statement` node with its parameters bound by name; returns what it `return`s."""
    body = next(c for c in function.children if c.type == "script_block")
    scope: dict[str, Any] = {"null": None}
    for parameter in (n for n in _descendants(body, "script_parameter")):
        name = _text(next(c for c in parameter.children if c.type == "variable")).lstrip("$").lower()
        scope[name] = arguments.get(name, "")
    try:
        for statement in _named(next(c for c in body.children if c.type == "script_block_body")):
            _execute(statement, scope)
    except _Return as done:
        return done.value
    return None


def _descendants(node: Node, kind: str) -> list[Node]:
    found = []
    for child in node.children:
        if child.type == kind:
            found.append(child)
        found += _descendants(child, kind)
    return found


def _execute(node: Node, scope: dict[str, Any]) -> None:
    kind = node.type
    if kind in ("statement_list", "statement_block", "script_block_body"):
        for child in _named(node):
            _execute(child, scope)
    elif kind == "empty_statement":
        pass
    elif kind == "if_statement":
        _execute_if(node, scope)
    elif kind == "foreach_statement":
        variable = _text(next(c for c in node.children if c.type == "variable")).lstrip("$").lower()
        source = next(c for c in node.children if c.type == "pipeline")
        block = next(c for c in node.children if c.type == "statement_block")
        for item in _evaluate(source, scope):
            scope[variable] = item
            try:
                _execute(block, scope)
            except _Continue:
                continue
    elif kind == "flow_control_statement":
        word = _text(node.children[0]).lower()
        if word == "continue":
            raise _Continue()
        if word == "return":
            values = _named(node)
            raise _Return(_evaluate(values[0], scope) if values else None)
        raise Unsupported(f"flow control {word!r}")
    else:
        _evaluate(node, scope)


def _execute_if(node: Node, scope: dict[str, Any]) -> None:
    children = _named(node)
    if _truthy(_evaluate(children[0], scope)):
        _execute(children[1], scope)
        return
    for clause in children[2:]:
        if clause.type == "elseif_clauses":
            for elseif in _named(clause):
                condition, block = _named(elseif)
                if _truthy(_evaluate(condition, scope)):
                    _execute(block, scope)
                    return
        elif clause.type == "else_clause":
            _execute(_named(clause)[0], scope)
            return
        else:
            raise Unsupported(f"if clause {clause.type}")


def _truthy(value: Any) -> bool:
    return bool(value)


def _evaluate(node: Node, scope: dict[str, Any]) -> Any:
    kind = node.type
    children = _named(node)
    if (kind in _WRAPPERS or kind in _BINARY) and len(children) == 1 and len(node.children) == 1:
        return _evaluate(children[0], scope)
    if kind == "decimal_integer_literal":
        return int(_text(node))
    if kind == "string_literal":
        text = _text(node)
        if not (text.startswith("'") and text.endswith("'")):
            raise Unsupported(f"only single-quoted strings: {text}")
        return text[1:-1].replace("''", "'")
    if kind == "variable":
        name = _text(node).lstrip("$").lower()
        if name not in scope:
            raise Unsupported(f"undefined variable ${name}")
        return scope[name]
    if kind == "assignment_expression":
        target, operator, value = node.children[0], _text(node.children[1]), node.children[2]
        if operator != "=":
            raise Unsupported(f"assignment operator {operator}")
        name = _text(target).strip().lstrip("$").lower()
        result = _evaluate(value, scope)
        if name != "null":
            scope[name] = result
        return None
    if kind == "post_increment_expression":
        name = _text(children[0]).lstrip("$").lower()
        scope[name] += 1
        return None
    if kind == "cast_expression":
        type_name = _text(children[0]).strip("[] ").lower()
        value = _evaluate(children[1], scope)
        if type_name == "char" and isinstance(value, int):
            return chr(value)
        raise Unsupported(f"cast to {type_name}")
    if kind in _BINARY and len(node.children) >= 3:
        return _binary(node, scope)
    if kind == "member_access":
        target = _evaluate(children[0], scope)
        member = _text(children[1]).lower()
        if member == "length" and isinstance(target, str):
            return len(target)
        raise Unsupported(f"member {member}")
    if kind == "invocation_expression":
        return _invoke(node, scope)
    if kind == "command":
        words = [_text(c) for c in node.children if c.type in ("command_name",)] + \
            [_text(c) for c in _descendants(node, "generic_token")]
        if [w.lower() for w in words] == ["new-object", "system.text.stringbuilder"]:
            return _StringBuilder()
        raise Unsupported(f"command {' '.join(words)}")
    raise Unsupported(f"{kind}: {_text(node)[:60]}")


def _binary(node: Node, scope: dict[str, Any]) -> Any:
    parts = node.children
    result = _evaluate(parts[0], scope)
    for index in range(1, len(parts), 2):
        operator = _text(parts[index]).lower()
        if operator == "-and":
            result = _truthy(result) and _truthy(_evaluate(parts[index + 1], scope))
            continue
        right = _evaluate(parts[index + 1], scope)
        if operator in ("-eq", "-ceq"):  # -ceq: case-sensitive, as Python's == is
            result = result == right
        elif operator == "-gt":
            result = result > right
        elif operator == "-cnotmatch":
            result = re.search(right, result) is None
        elif operator == "+":
            result = result + right
        elif operator == "*":
            result = result * right
        else:
            raise Unsupported(f"operator {operator}")
    return result


def _invoke(node: Node, scope: dict[str, Any]) -> Any:
    children = _named(node)
    target = _evaluate(children[0], scope)
    method = _text(children[1]).lower()
    lists = _descendants(children[2], "argument_expression_list") if len(children) > 2 else []
    arguments = [_evaluate(a, scope) for a in _named(lists[0])] if lists else []
    if isinstance(target, str) and method == "tochararray" and not arguments:
        return list(target)
    if isinstance(target, _StringBuilder) and method == "append":
        if len(arguments) == 1 and isinstance(arguments[0], str):
            target.parts.append(arguments[0])
        elif len(arguments) == 2 and isinstance(arguments[0], str) and isinstance(arguments[1], int):
            target.parts.append(arguments[0] * arguments[1])  # StringBuilder.Append(char, repeatCount)
        else:
            raise Unsupported(f"Append{tuple(arguments)!r}")
        return target
    if isinstance(target, _StringBuilder) and method == "tostring" and not arguments:
        return "".join(target.parts)
    raise Unsupported(f"method {method} on {type(target).__name__}")
