"""The module loader script: recognisable first line, the module verbatim, valid PowerShell, one JSON reply."""

from __future__ import annotations

import base64
import gzip
import json
import re

import tree_sitter_pwsh
from tree_sitter import Language, Parser

from fleetctl.protocol import loader
from fleetctl.protocol.operations import MODULE_NAME, PROTOCOL_VERSION

_PARSER = Parser(Language(tree_sitter_pwsh.language()))


def test_loader_starts_with_the_line_the_lab_recognises() -> None:
    assert loader.loader_script().split("\n", 1)[0] == "# FleetNode module loader" == loader.LOADER_FIRST_LINE


def test_loader_carries_the_shipped_module_as_its_gzip_parameter_and_imports_it_globally() -> None:
    script = loader.loader_script()
    module = loader.module_text()
    assert "function Receive-FleetArtifact" in module  # the packaged file, not an empty resource
    parameters = loader.loader_parameters()
    assert list(parameters) == [loader.LOADER_PARAMETER]
    unpacked = gzip.decompress(base64.b64decode(parameters[loader.LOADER_PARAMETER])).decode("utf-8")
    assert unpacked == module  # byte for byte, so here-strings keep their column-0 terminators
    assert len(parameters[loader.LOADER_PARAMETER]) < len(module) / 3  # the point of packing it
    assert f"[string]${loader.LOADER_PARAMETER})" in script and "function " not in script
    assert re.search(rf"New-Module -Name {MODULE_NAME} -ScriptBlock \(\[ScriptBlock\]::Create\(\$source\)\) \| "
                     r"Import-Module -Global -Force$", script, re.MULTILINE)


def test_loader_parses_as_powershell() -> None:
    tree = _PARSER.parse(loader.loader_script().encode("utf-8"))
    assert not tree.root_node.has_error


def test_loader_writes_exactly_one_json_document_naming_module_and_version() -> None:
    last_line = loader.loader_script().rstrip("\n").rsplit("\n", 1)[1]
    # A single-quoted PowerShell string is literal: its content is what the pipeline outputs.
    assert last_line.startswith("'") and last_line.endswith("'")
    document = json.loads(last_line[1:-1].replace("''", "'"))
    assert document == {"ok": True, "result": {"module": "FleetNode", "version": PROTOCOL_VERSION}}
    assert document["result"] == loader.loaded_result()


def test_single_quoting_doubles_every_quote_powershell_recognises() -> None:
    quoted = loader._single_quoted("it's \u2019x\u2019")
    assert quoted == "'it''s \u2019\u2019x\u2019\u2019'"
    assert not _PARSER.parse(("$a = " + quoted + "\n").encode("utf-8")).root_node.has_error

