"""The node-protocol contract: protocol.py, the PowerShell module, the lab and NodeClient must agree exactly.

Also: every PowerShell file in the repository parses under the tree-sitter PowerShell grammar, and the module
keeps the house rules that matter on real Windows. The checkers below are plain functions so the drift tests at
the bottom can feed them modified inputs and prove that they catch a one-sided change.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tree_sitter_pwsh
from pwsh_subset import call_function
from tree_sitter import Language, Node, Parser

from fleetctl.protocol.cmdline import quote_argument
from fleetctl.protocol.operations import (
    OPERATIONS,
    PROTOCOL_VERSION,
    Operation,
    Param,
    function_name,
    snake_case,
)

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "fleetctl" / "protocol" / "FleetNode.psm1"
PIPELINE_PARAMETER = "InputObject"  # how an advanced function receives pipeline input (docs/node-protocol.md)
SKIPPED_DIRS = {"node_modules", "__pycache__", "build", "dist"}
FORBIDDEN_COMMANDS = {"invoke-expression", "iex", "invoke-webrequest", "iwr", "invoke-restmethod", "irm",
                      "curl", "wget", "start-process"}

_PARSER = Parser(Language(tree_sitter_pwsh.language()))


# -- PowerShell side ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PsParam:
    name: str
    type: str  # lower-case type literal ("string", "string[]", ...) or "" when untyped
    mandatory: bool
    from_pipeline: bool
    has_default: bool


@dataclass(frozen=True)
class PsFunction:
    name: str
    params: tuple[PsParam, ...]
    commands: frozenset[str]  # lower-case names of the commands called inside the function


def parse(source: str) -> Node:
    return _PARSER.parse(source.encode("utf-8")).root_node


def syntax_errors(source: str) -> list[str]:
    """`line:column` of every ERROR or MISSING node (1-based), empty when the text parses cleanly."""
    found: list[str] = []

    def walk(node: Node) -> None:
        if node.type == "ERROR" or node.is_missing:
            row, col = node.start_point
            found.append(f"{row + 1}:{col + 1} ({'missing ' + node.type if node.is_missing else 'syntax error'})")
            return
        for child in node.children:
            walk(child)

    walk(parse(source))
    return found


def _text(node: Node) -> str:
    return (node.text or b"").decode("utf-8")


def _descendants(node: Node, kind: str) -> Iterable[Node]:
    for child in node.children:
        if child.type == kind:
            yield child
        yield from _descendants(child, kind)


def _attribute_flags(attribute: Node) -> dict[str, bool]:
    """`[Parameter(Mandatory = $true, ValueFromPipeline)]` -> {"mandatory": True, "valuefrompipeline": True}."""
    flags: dict[str, bool] = {}
    for argument in _descendants(attribute, "attribute_argument"):
        names = [c for c in argument.children if c.type == "simple_name"]
        if not names:
            continue
        values = [c for c in argument.children if c.type not in ("simple_name", "=")]
        flags[_text(names[0]).lower()] = not values or _text(values[0]).lower() == "$true"
    return flags


def _script_parameter(node: Node) -> PsParam:
    name = type_ = ""
    mandatory = from_pipeline = has_default = False
    for child in node.children:
        if child.type == "script_parameter_default":
            has_default = True
        elif child.type == "variable":
            name = _text(child).lstrip("$")
        elif child.type == "attribute_list":
            for attribute in child.children:
                literal = [c for c in attribute.children if c.type == "type_literal"]
                if literal:
                    type_ = _text(literal[0]).strip("[] ").lower()
                    if _text(literal[0]).replace(" ", "").endswith("[]]"):
                        type_ += "[]"
                    continue
                attribute_name = [c for c in attribute.children if c.type == "attribute_name"]
                if attribute_name and _text(attribute_name[0]).lower() == "parameter":
                    flags = _attribute_flags(attribute)
                    mandatory = flags.get("mandatory", False)
                    from_pipeline = flags.get("valuefrompipeline", False)
    return PsParam(name, type_, mandatory, from_pipeline, has_default)


def module_functions(source: str) -> dict[str, PsFunction]:
    """Top-level functions of a PowerShell module, with their declared parameters."""
    functions: dict[str, PsFunction] = {}
    for statement in _descendants(parse(source), "function_statement"):
        name = _text(next(c for c in statement.children if c.type == "function_name"))
        params: list[PsParam] = []
        blocks = [c for c in statement.children if c.type == "script_block"]
        if blocks:
            param_blocks = [c for c in blocks[0].children if c.type == "param_block"]
            if param_blocks:
                params = [_script_parameter(p) for p in _descendants(param_blocks[0], "script_parameter")]
        commands = frozenset(_text(c).lower() for c in _descendants(statement, "command_name"))
        functions[name] = PsFunction(name, tuple(params), commands)
    return functions


def exported_functions(source: str) -> list[str]:
    """The names listed in the module's `Export-ModuleMember -Function ...` call(s)."""
    names: list[str] = []
    for command in _descendants(parse(source), "command"):
        command_name = [c for c in command.children if c.type == "command_name"]
        if command_name and _text(command_name[0]).lower() == "export-modulemember":
            names += [_text(s).strip("'\"") for s in _descendants(command, "string_literal")]
    return names


def module_problems(source: str, operations: dict[str, Operation]) -> list[str]:
    """Every way the module text differs from the protocol, one readable sentence each."""
    problems = [f"FleetNode.psm1 does not parse at {where}" for where in syntax_errors(source)]
    functions = module_functions(source)
    exported = exported_functions(source)
    for extra in sorted(set(exported) - set(operations)):
        problems.append(f"PowerShell module: exports {extra}, which protocol.py does not define")
    for op in operations.values():
        if op.name not in functions:
            problems.append(f"PowerShell module: operation {op.name} is missing (no function {op.name})")
            continue
        if op.name not in exported:
            problems.append(f"PowerShell module: {op.name} is not listed in Export-ModuleMember")
        function = functions[op.name]
        if "invoke-fleetoperation" not in function.commands:
            problems.append(f"PowerShell module: {op.name} does not wrap its body in Invoke-FleetOperation")
        declared = {p.name: p for p in function.params}
        for defaulted in (p for p in function.params if p.has_default):
            problems.append(f"PowerShell module: {op.name} -{defaulted.name} has a default value in param(): "
                            "set defaults in the body (a $null from the controller must get them too, and "
                            "tree-sitter-pwsh then swallows the next parameter)")
        for param in op.params:
            ps = declared.pop(param.name, None)
            if ps is None:
                problems.append(f"PowerShell module: {op.name} lacks parameter -{param.name} ({param.type})")
                continue
            if ps.type != param.type:
                problems.append(f"PowerShell module: {op.name} -{param.name} is [{ps.type}], protocol says "
                                f"[{param.type}]")
            if ps.mandatory != param.required:
                problems.append(f"PowerShell module: {op.name} -{param.name} is "
                                f"{'Mandatory' if ps.mandatory else 'optional'}, protocol says "
                                f"{'required' if param.required else 'optional'}")
        pipeline = declared.pop(PIPELINE_PARAMETER, None)
        if op.pipeline_input and (pipeline is None or not pipeline.from_pipeline):
            problems.append(f"PowerShell module: {op.name} takes pipeline input but has no "
                            f"[Parameter(ValueFromPipeline = $true)] ${PIPELINE_PARAMETER}")
        if not op.pipeline_input and pipeline is not None:
            declared[PIPELINE_PARAMETER] = pipeline
        for extra_name in declared:
            problems.append(f"PowerShell module: {op.name} has parameter -{extra_name}, which protocol.py does "
                            "not define")
    return problems


# -- Python sides (lab and controller client) --------------------------------------------------------------------

def python_side_problems(side: str, cls: type, operations: dict[str, Operation]) -> list[str]:
    """Every way `cls` (LabNode or NodeClient) differs from the protocol: method per operation, kwargs per param.

    An operation with pipeline input may take one extra argument for that input (the client's chunks); the
    lab reads its input beside the call.
    """
    problems: list[str] = []
    expected_methods = {function_name(op.name) for op in operations.values()}
    for attribute in sorted(vars(cls)):
        if "_fleet_" in attribute and not attribute.startswith("_") and attribute not in expected_methods:
            problems.append(f"{side}: {cls.__name__}.{attribute}() looks like a node operation that protocol.py "
                            "does not define")
    for op in operations.values():
        method_name = function_name(op.name)
        method: Callable[..., Any] | None = getattr(cls, method_name, None)
        if method is None or not callable(method):
            problems.append(f"{side}: operation {op.name} is missing (no method {cls.__name__}.{method_name}())")
            continue
        parameters = [p for p in inspect.signature(method).parameters.values() if p.name != "self"]
        if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in parameters):
            problems.append(f"{side}: {cls.__name__}.{method_name}() takes *args/**kwargs, so its parameters "
                            "cannot be checked against the protocol: name them")
            continue
        have = {p.name: p for p in parameters}
        for param in op.params:
            python_name = snake_case(param.name)
            found = have.pop(python_name, None)
            if found is None:
                problems.append(f"{side}: {op.name} parameter {param.name} is missing: "
                                f"{cls.__name__}.{method_name}() has no argument '{python_name}'")
                continue
            has_default = found.default is not inspect.Parameter.empty
            if param.required and has_default:
                problems.append(f"{side}: {op.name} parameter {param.name} is required but "
                                f"{cls.__name__}.{method_name}(..., {python_name}=...) gives it a default")
            if not param.required and not has_default:
                problems.append(f"{side}: {op.name} parameter {param.name} is optional but "
                                f"{cls.__name__}.{method_name}() requires '{python_name}'")
        allowed_extra = 1 if op.pipeline_input else 0
        if len(have) > allowed_extra:
            extra = ", ".join(sorted(have))
            problems.append(f"{side}: {cls.__name__}.{method_name}() has argument(s) {extra} that the protocol's "
                            f"{op.name} does not define")
    return problems


def _import_side(module: str, attribute: str, side: str) -> type:
    try:
        imported = __import__(module, fromlist=[attribute])
    except ImportError as exc:
        pytest.fail(f"the {side} side of the node protocol is missing: cannot import {module} ({exc})")
    cls = getattr(imported, attribute, None)
    if not isinstance(cls, type):
        pytest.fail(f"the {side} side of the node protocol is missing: {module} has no class {attribute}")
    return cls


# -- the tests ---------------------------------------------------------------------------------------------------

def powershell_files(root: Path) -> list[Path]:
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        # Hidden trees (.git, .venv, caches) and build output hold no project PowerShell.
        subdirs[:] = [d for d in subdirs if not d.startswith(".") and d not in SKIPPED_DIRS]
        found += [Path(directory) / f for f in files if f.lower().endswith((".ps1", ".psm1", ".psd1"))]
    return sorted(found)


def test_every_powershell_file_in_the_repository_parses() -> None:
    files = powershell_files(REPO)
    assert MODULE in files, "the search for PowerShell files did not even find FleetNode.psm1"
    broken = {str(f.relative_to(REPO)): errors for f in files
              if (errors := syntax_errors(f.read_text(encoding="utf-8-sig")))}
    assert not broken, f"PowerShell files with syntax errors (file: line:column): {broken}"


def test_module_implements_every_operation_with_the_protocol_parameters() -> None:
    problems = module_problems(MODULE.read_text(encoding="utf-8"), OPERATIONS)
    assert not problems, "\n".join(problems)


def test_lab_implements_every_operation_with_the_protocol_parameters() -> None:
    problems = python_side_problems("lab", _import_side("fleetctl.lab.node", "LabNode", "lab"), OPERATIONS)
    assert not problems, "\n".join(problems)


def test_client_implements_every_operation_with_the_protocol_parameters() -> None:
    problems = python_side_problems("client", _import_side("fleetctl.node.client", "NodeClient", "client"),
                                    OPERATIONS)
    assert not problems, "\n".join(problems)


def test_module_declares_the_protocol_version() -> None:
    match = re.search(r"^\$script:FleetProtocolVersion = '([^']*)'", MODULE.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, "FleetNode.psm1 must set $script:FleetProtocolVersion"
    assert match.group(1) == PROTOCOL_VERSION


def test_module_keeps_the_windows_powershell_rules() -> None:
    source = MODULE.read_text(encoding="utf-8")
    for line in ("Set-StrictMode -Version Latest", "$ErrorActionPreference = 'Stop'",
                 "$ProgressPreference = 'SilentlyContinue'"):
        assert re.search(r"^" + re.escape(line) + r"\s*$", source, re.MULTILINE), f"module must start with: {line}"
    assert powershell7_only_syntax(source) == []
    called = set().union(*(f.commands for f in module_functions(source).values()))
    assert not called & FORBIDDEN_COMMANDS, f"module calls forbidden commands: {called & FORBIDDEN_COMMANDS}"


def powershell7_only_syntax(source: str) -> list[str]:
    """Constructs Windows PowerShell 5.1 cannot parse or run (the nodes run 5.1 on Server 2016-2022)."""
    tree = parse(source)
    found = []
    for kind, what in (("null_coalesce_expression", "the ?? operator"), ("ternary_expression", "a ?: ternary"),
                       ("pipeline_chain_tail", "a && or || pipeline chain")):
        found += [f"{node.start_point[0] + 1}: {what}" for node in _descendants(tree, kind)]
    for node in _descendants(tree, "assignment_operator"):
        if _text(node) == "??=":
            found.append(f"{node.start_point[0] + 1}: the ??= operator")
    for node in _descendants(tree, "command_parameter"):
        if _text(node).lower() == "-ashashtable":
            found.append(f"{node.start_point[0] + 1}: -AsHashtable (PowerShell 6+)")
    return found


def test_powershell7_only_syntax_is_recognised() -> None:
    sample = "$a = $b ?? 1\n$c = $d ? 1 : 2\nGet-X && Get-Y\n$e ??= 3\n$f = '{}' | ConvertFrom-Json -AsHashtable\n"
    assert [line.split(":")[0] for line in powershell7_only_syntax(sample)] == ["1", "2", "3", "4", "5"]


# -- the checkers catch drift ------------------------------------------------------------------------------------

def test_a_renamed_parameter_in_the_module_is_caught() -> None:
    source = MODULE.read_text(encoding="utf-8")
    drifted = source.replace("[Parameter(Mandatory = $true)][string]$DeployId,", "[Parameter(Mandatory = $true)]"
                             "[string]$DeploymentId,", 1)
    assert drifted != source
    problems = module_problems(drifted, OPERATIONS)
    assert "PowerShell module: Lock-FleetApp lacks parameter -DeployId (string)" in problems
    assert any("Lock-FleetApp has parameter -DeploymentId" in p for p in problems)


def test_a_changed_type_or_mandatory_flag_in_the_module_is_caught() -> None:
    source = MODULE.read_text(encoding="utf-8")
    drifted = source.replace("[Parameter(Mandatory = $true)][int]$TtlSeconds", "[string]$TtlSeconds", 1)
    problems = module_problems(drifted, OPERATIONS)
    assert "PowerShell module: Lock-FleetApp -TtlSeconds is [string], protocol says [int]" in problems
    assert "PowerShell module: Lock-FleetApp -TtlSeconds is optional, protocol says required" in problems
    defaulted = source.replace("[string]$ListenAddress,", "[string]$ListenAddress = '0.0.0.0',", 1)
    assert any(p.startswith("PowerShell module: Switch-FleetColour -ListenAddress has a default value")
               for p in module_problems(defaulted, OPERATIONS))


def test_a_protocol_change_without_the_module_is_caught() -> None:
    op = OPERATIONS["Get-FleetLog"]
    changed = dict(OPERATIONS)
    changed[op.name] = Operation(op.name, op.doc, op.params + (Param("Since", "string"),), op.result, op.errors)
    changed["Get-FleetNothing"] = Operation("Get-FleetNothing", "not implemented anywhere")
    problems = module_problems(MODULE.read_text(encoding="utf-8"), changed)
    assert "PowerShell module: Get-FleetLog lacks parameter -Since (string)" in problems
    assert "PowerShell module: operation Get-FleetNothing is missing (no function Get-FleetNothing)" in problems


def test_an_unwrapped_or_unexported_function_and_a_syntax_error_are_caught() -> None:
    source = MODULE.read_text(encoding="utf-8")
    unexported = source.replace(", 'Get-FleetDeployed'\n)", ")", 1)  # the last one exported
    assert "PowerShell module: Get-FleetDeployed is not listed in Export-ModuleMember" in module_problems(
        unexported, OPERATIONS)
    broken = source.replace("function Get-FleetFacts {", "function Get-FleetFacts {{", 1)
    assert any(p.startswith("FleetNode.psm1 does not parse at") for p in module_problems(broken, OPERATIONS))
    assert syntax_errors("function Get-X {\n param([string]$A\n}\n")


def _conforming_class(name: str, operations: dict[str, Operation], rename: tuple[str, str, str] | None = None
                      ) -> type:
    """A class whose methods have exactly the protocol's signatures (optionally with one argument renamed)."""
    namespace: dict[str, Any] = {}
    for op in operations.values():
        parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        for param in op.params:
            python_name = snake_case(param.name)
            if rename and rename[0] == op.name and rename[1] == python_name:
                python_name = rename[2]
            default = inspect.Parameter.empty if param.required else None
            parameters.append(inspect.Parameter(python_name, inspect.Parameter.KEYWORD_ONLY, default=default))

        def method(self: Any, **kwargs: Any) -> dict[str, Any]:
            return {}

        method.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        namespace[function_name(op.name)] = method
    return type(name, (), namespace)


def test_python_side_checker_accepts_a_conforming_class_and_names_a_renamed_argument() -> None:
    assert python_side_problems("lab", _conforming_class("LabNode", OPERATIONS), OPERATIONS) == []
    drifted = _conforming_class("LabNode", OPERATIONS, ("Install-FleetRelease", "exe_name", "exe"))
    problems = python_side_problems("lab", drifted, OPERATIONS)
    assert "lab: Install-FleetRelease parameter ExeName is missing: LabNode.install_fleet_release() has no " \
           "argument 'exe_name'" in problems
    assert any("install_fleet_release() has argument(s) exe" in p for p in problems)


def test_python_side_checker_catches_a_missing_method_and_a_wrong_default() -> None:
    cls = _conforming_class("NodeClient", OPERATIONS)
    delattr(cls, "get_fleet_log")
    cls.get_fleet_facts_extra = lambda self: None  # type: ignore[attr-defined]
    problems = python_side_problems("client", cls, OPERATIONS)
    assert "client: operation Get-FleetLog is missing (no method NodeClient.get_fleet_log())" in problems
    assert any("get_fleet_facts_extra() looks like a node operation" in p for p in problems)

    def stop(self: Any, *, name: str = "x", timeout_seconds: int) -> None: ...

    cls.stop_fleet_service = stop  # type: ignore[attr-defined]
    problems = python_side_problems("client", cls, OPERATIONS)
    assert any("Stop-FleetService parameter Name is required but" in p for p in problems)


def test_the_protocol_document_describes_every_operation_and_parameter() -> None:
    document = (REPO / "docs" / "node-protocol.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^### (\S+)\n(.*?)(?=^### |\Z)", document, re.MULTILINE | re.DOTALL))
    missing = [op.name for op in OPERATIONS.values() if op.name not in sections]
    assert not missing, f"docs/node-protocol.md has no section for: {missing}"
    for op in OPERATIONS.values():
        section = sections[op.name]
        undocumented = [p.name for p in op.params if f"| `{p.name}` | `{p.type}` |" not in section]
        undocumented += [f"result {key}" for key in op.result if f"`{key}`" not in section]
        undocumented += [f"error {code}" for code in op.errors if f"`{code}`" not in section]
        assert not undocumented, f"docs/node-protocol.md, {op.name}: not described: {undocumented}"
        assert "Example" in section and '{"ok":' in section, f"docs/node-protocol.md, {op.name}: no example"
    extra = sorted(set(sections) - set(OPERATIONS))
    assert not extra, f"docs/node-protocol.md documents operations protocol.py does not define: {extra}"


# -- the quoting function: one algorithm in Python and PowerShell --------------------------------------------------

QUOTING_VECTORS = REPO / "tests" / "protocol" / "cmdline_vectors.json"


def module_function_node(source: str, name: str) -> Node:
    for statement in _descendants(parse(source), "function_statement"):
        if _text(next(c for c in statement.children if c.type == "function_name")) == name:
            return statement
    raise AssertionError(f"FleetNode.psm1 has no function {name}")


def quoting_problems(source: str) -> list[str]:
    """Where the module's ConvertTo-FleetCommandLineArgument quotes a shared vector's argument differently from
    fleetctl/protocol/cmdline.py (run by tests/node/pwsh_subset.py, an evaluator of the subset it is written in)."""
    function = module_function_node(source, "ConvertTo-FleetCommandLineArgument")
    problems = []
    for case in json.loads(QUOTING_VECTORS.read_text(encoding="utf-8"))["cases"]:
        for argument in case["args"]:
            got, want = call_function(function, argument=argument), quote_argument(argument)
            if got != want:
                problems.append(f"{case['name']}: {argument!r} -> module {got!r}, cmdline.py {want!r}")
    return problems


def test_the_module_quotes_every_shared_vector_as_cmdline_py_does() -> None:
    source = MODULE.read_text(encoding="utf-8")
    assert quoting_problems(source) == []
    # The join is the quoting function applied to each argument, separated by single spaces, like join_command_line.
    join = _text(module_function_node(source, "Join-FleetCommandLine"))
    assert "ForEach-Object { ConvertTo-FleetCommandLineArgument $_ }) -join ' '" in join


def test_a_drifted_module_quoting_function_is_caught() -> None:
    source = MODULE.read_text(encoding="utf-8")
    for old, new in (("2 * $backslashes + 1", "2 * $backslashes"), ("'[ \\t\\n\\v\"]'", "'[ \"]'"),
                     ("Append($slash, 2 * $backslashes) }", "Append($slash, $backslashes) }")):
        assert old in source, old
        assert quoting_problems(source.replace(old, new, 1)), f"not caught: {old} -> {new}"


# -- the lock rule: one decision in Python (the lab) and PowerShell (the module) ------------------------------------

def lock_decision_problems(source: str) -> list[str]:
    """Where the module's Get-FleetLockDecision decides differently from fleetctl/protocol/locking.py on any case:
    free / ours / another holder, expired or live, freeze or run, TakeOver absent / naming the holder / another."""
    from itertools import product

    from fleetctl.protocol.locking import lock_decision

    function = module_function_node(source, "Get-FleetLockDecision")
    problems = []
    for held_by, expired, freeze, take_over in product(("", "run-a", "RUN-A", "run-b"), (False, True), (False, True),
                                                       ("", "run-a", "run-b", "run-c")):
        args = {"heldby": held_by, "expired": expired, "freeze": freeze, "deployid": "run-b", "takeover": take_over}
        got = call_function(function, **args)
        want = lock_decision(held_by, expired, freeze, "run-b", take_over)
        if got != want:
            problems.append(f"{args}: module {got!r}, locking.py {want!r}")
    return problems


def test_the_module_decides_every_lock_case_as_the_lab_does() -> None:
    source = MODULE.read_text(encoding="utf-8")
    assert lock_decision_problems(source) == []
    # Lock-FleetApp acts on that decision only: no other path to writing lock.json over someone else's lock.
    lock = _text(module_function_node(source, "Lock-FleetApp"))
    assert "Get-FleetLockDecision -HeldBy $heldBy -Expired $expired -Freeze $freeze -DeployId $DeployId" in lock
    assert "$Force" not in lock


def test_a_drifted_module_lock_rule_is_caught() -> None:
    source = MODULE.read_text(encoding="utf-8")
    for old, new in (("if ($Freeze) { return 'held' }", "if ($Freeze) { return 'take-over' }"),
                     ("if ($TakeOver -ceq $HeldBy) { return 'take-over' }", "if ($TakeOver) { return 'take-over' }"),
                     ("if ($HeldBy -ceq $DeployId) { return 'renew' }", "if ($HeldBy -ceq $DeployId) { return 'take' }"),
                     ("if ($Expired) { return 'replace-expired' }", "if ($Expired) { return 'held' }")):
        assert old in source, old
        try:
            caught = bool(lock_decision_problems(source.replace(old, new, 1)))
        except Exception:  # noqa: BLE001 - a construct the evaluator refuses is caught too
            caught = True
        assert caught, f"not caught: {old} -> {new}"
