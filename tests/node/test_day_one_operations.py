"""The module's day-one operations (Read-FleetLog, Invoke-FleetCommand), read from FleetNode.psm1's parsed syntax
tree (tree-sitter-pwsh; no PowerShell runs here): what each returns is the protocol's result, the operator's script
is only ever handed whole to the parser and to [ScriptBlock]::Create (never pasted into other text), and the log
cursor returns complete lines only. The checkers are functions, so the drift tests feed them a modified module."""

from __future__ import annotations

from test_contract import MODULE, _descendants, _text, module_function_node, parse
from tree_sitter import Node

from fleetctl.protocol.operations import OPERATIONS

# Where the operator's script may appear in Invoke-FleetCommand: each call takes it whole, as one argument.
SCRIPT_USES = ("[string]::IsNullOrWhiteSpace(", "[Management.Automation.Language.Parser]::ParseInput(",
               "[ScriptBlock]::Create(")


def result_key_problems(source: str, operation: str) -> list[str]:
    """Where the keys of the hashtable an operation returns differ from the protocol's result keys."""
    function = module_function_node(source, operation)
    returned = [h for h in _descendants(function, "hash_literal_expression")
                if any(a.type == "flow_control_statement" and _text(a).startswith("return")
                       for a in _ancestors(h, 5))]
    if not returned:
        return [f"{operation} returns no hashtable literal"]
    keys = {_text(k) for k in _descendants(returned[-1], "key_expression")}
    want = set(OPERATIONS[operation].result)
    if keys == want:
        return []
    return [f"{operation}: returns {sorted(keys - want)} beyond and lacks {sorted(want - keys)} of its result"]


def _ancestors(node: Node, depth: int) -> list[Node]:
    found = []
    while node.parent is not None and len(found) < depth:
        node = node.parent
        found.append(node)
    return found


def script_parameter_problems(source: str) -> list[str]:
    """Every use of $Script in Invoke-FleetCommand that is not a whole argument of one of SCRIPT_USES (inside a
    string, a concatenation, any other call), and a run of the block before the parse check."""
    function = module_function_node(source, "Invoke-FleetCommand")
    problems = []
    for variable in _descendants(function, "variable"):
        if _text(variable).lower() != "$script" or (variable.parent and variable.parent.type == "script_parameter"):
            continue
        # A whole argument: variable -> unary_expression -> argument_expression (nothing built around it).
        wrapper = variable.parent
        argument = wrapper.parent if wrapper is not None else None
        call = next((a for a in _ancestors(variable, 8) if a.type == "invocation_expression"), None)
        whole = wrapper is not None and wrapper.type == "unary_expression" and argument is not None \
            and argument.type == "argument_expression" and _text(argument) == _text(variable)
        if not whole or call is None or not any(_text(call).startswith(use) for use in SCRIPT_USES):
            where = _text(call) if call is not None else _text(variable.parent or variable)
            problems.append(f"line {variable.start_point[0] + 1}: $Script used as {where[:80]!r}")
    body = _text(function)
    if body.find("& $block") < body.find("$parseErrors).Count -gt 0"):
        problems.append("the script block runs before the parse errors are checked")
    return problems


def test_the_new_operations_return_the_protocol_result() -> None:
    source = MODULE.read_text(encoding="utf-8")
    assert parse(source).has_error is False
    assert "& $block" in _text(module_function_node(source, "Invoke-FleetCommand"))
    for operation in ("Read-FleetLog", "Invoke-FleetCommand"):
        assert result_key_problems(source, operation) == []


def test_the_operators_script_is_only_handed_whole_to_the_parser_and_scriptblock() -> None:
    source = MODULE.read_text(encoding="utf-8")
    assert script_parameter_problems(source) == []
    body = _text(module_function_node(source, "Invoke-FleetCommand"))
    # Run as an ordinary script: not under the module's strict mode, errors collected instead of stopping it.
    assert body.index("Set-StrictMode -Off") < body.index("& $block 2>&1")
    assert "$ErrorActionPreference = 'Continue'" in body


def test_the_log_cursor_returns_complete_lines_and_resets_on_another_file_or_a_shorter_one() -> None:
    body = _text(module_function_node(MODULE.read_text(encoding="utf-8"), "Read-FleetLog"))
    assert "[Array]::LastIndexOf($buffer, [byte]10, $filled - 1) + 1" in body  # up to the last line feed only
    assert "$File -ne $target) -or $Offset -gt $size" in body
    assert "$next = $start + $take" in body
    # The same file resolution and sharing as Get-FleetLog, written once.
    get_log = _text(module_function_node(MODULE.read_text(encoding="utf-8"), "Get-FleetLog"))
    for body_text in (body, get_log):
        assert "Resolve-FleetLogFile $Root $Path" in body_text and "Open-FleetLogStream" in body_text


def test_a_pasted_script_or_a_drifted_result_is_caught() -> None:
    source = MODULE.read_text(encoding="utf-8")
    pasted = source.replace("$block = [ScriptBlock]::Create($Script)",
                            "$block = [ScriptBlock]::Create('Set-Location C:\\; ' + $Script)", 1)
    assert pasted != source and script_parameter_problems(pasted)
    expanded = source.replace("$block = [ScriptBlock]::Create($Script)",
                              '$block = [ScriptBlock]::Create("$Script | Out-Null")', 1)
    assert script_parameter_problems(expanded)
    early = source.replace("        $block = [ScriptBlock]::Create($Script)\n", "", 1).replace(
        "        $tokens = $null\n", "        $block = [ScriptBlock]::Create($Script)\n        & $block\n"
        "        $tokens = $null\n", 1)
    assert any("before the parse errors" in p for p in script_parameter_problems(early))
    renamed = source.replace("offset = $next; size = $size", "cursor = $next; size = $size", 1)
    assert renamed != source and result_key_problems(renamed, "Read-FleetLog")
