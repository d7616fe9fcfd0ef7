"""Builds the one script the transport runs once per runspace pool to define the FleetNode module there.

The script holds only our own text (the module shipped in this package and constant JSON), never a user value.
Its first line is `LOADER_FIRST_LINE`: the lab recognises the loader by that line alone.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from fleetctl.node.protocol import MODULE_NAME, PROTOCOL_VERSION

LOADER_FIRST_LINE = "# FleetNode module loader"
MODULE_FILE = "FleetNode.psm1"


def module_text() -> str:
    """The PowerShell module's source as shipped in the package."""
    return resources.files("fleetctl.node").joinpath(MODULE_FILE).read_text(encoding="utf-8")


def loaded_result() -> dict[str, Any]:
    """The `result` of the loader's one JSON reply: which module and protocol version the runspace now has."""
    return {"module": MODULE_NAME, "version": PROTOCOL_VERSION}


def _single_quoted(text: str) -> str:
    # A PowerShell single-quoted string is literal except for the quote itself (doubled; PowerShell also treats
    # the typographic quotes U+2018/U+2019/U+201A/U+201B as quotes).
    for quote in ("'", "\u2018", "\u2019", "\u201a", "\u201b"):
        text = text.replace(quote, quote + quote)
    return "'" + text + "'"


@lru_cache(maxsize=1)
def loader_script() -> str:
    """The loader: defines the module in the session, imports it globally, writes one JSON document.

    The module text goes into a script block verbatim (lines unchanged, so here-strings keep their column-0
    terminators); `New-Module` gives it its own module scope exactly as `Import-Module FleetNode.psm1` would.
    """
    body = module_text()
    if not body.endswith("\n"):
        body += "\n"
    reply = json.dumps({"ok": True, "result": loaded_result()}, separators=(",", ":"))
    return (
        f"{LOADER_FIRST_LINE}\n"
        "# Sent once per runspace pool by fleetctl; defines the node protocol's functions in this session.\n"
        f"$null = New-Module -Name {MODULE_NAME} -ScriptBlock {{\n"
        f"{body}"
        "} | Import-Module -Global -Force\n"
        f"{_single_quoted(reply)}\n"
    )

