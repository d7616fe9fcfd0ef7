"""Builds the one script the transport runs once per runspace pool to define the FleetNode module there.

The script is our own fixed text; the module shipped in this package travels as its parameter. No user value is
involved.
Its first line is `LOADER_FIRST_LINE`: the lab recognises the loader by that line alone.
"""

from __future__ import annotations

import base64
import gzip
import json
from functools import lru_cache
from importlib import resources
from typing import Any

from fleetctl.protocol.operations import MODULE_NAME, PROTOCOL_VERSION

LOADER_FIRST_LINE = "# FleetNode module loader"
MODULE_FILE = "FleetNode.psm1"


def module_text() -> str:
    """The PowerShell module's source as shipped in the package."""
    return resources.files("fleetctl.protocol").joinpath(MODULE_FILE).read_text(encoding="utf-8")


def loaded_result() -> dict[str, Any]:
    """The `result` of the loader's one JSON reply: which module and protocol version the runspace now has."""
    return {"module": MODULE_NAME, "version": PROTOCOL_VERSION}


def _single_quoted(text: str) -> str:
    # A PowerShell single-quoted string is literal except for the quote itself (doubled; PowerShell also treats
    # the typographic quotes U+2018/U+2019/U+201A/U+201B as quotes).
    for quote in ("'", "\u2018", "\u2019", "\u201a", "\u201b"):
        text = text.replace(quote, quote + quote)
    return "'" + text + "'"


LOADER_PARAMETER = "ModuleGzip"


@lru_cache(maxsize=1)
def loader_script() -> str:
    """The loader: unpacks the module (its `ModuleGzip` parameter), defines it in the session, imports it
    globally, writes one JSON document.

    The module travels as a parameter, gzip-compressed and base64-encoded (~17 KB instead of ~67 KB of script
    text on every new connection); `New-Module` gives it its own module scope exactly as
    `Import-Module FleetNode.psm1` would. The script itself is fixed text.
    """
    reply = json.dumps({"ok": True, "result": loaded_result()}, separators=(",", ":"))
    return (
        f"{LOADER_FIRST_LINE}\n"
        "# Sent once per runspace pool by fleetctl; defines the node protocol's functions in this session.\n"
        f"param([Parameter(Mandatory = $true)][string]${LOADER_PARAMETER})\n"
        "$ErrorActionPreference = 'Stop'\n"
        f"$packed = New-Object System.IO.MemoryStream(, [Convert]::FromBase64String(${LOADER_PARAMETER}))\n"
        "$gzip = New-Object System.IO.Compression.GZipStream($packed, [System.IO.Compression.CompressionMode]::Decompress)\n"
        "$reader = New-Object System.IO.StreamReader($gzip, [System.Text.Encoding]::UTF8)\n"
        "try { $source = $reader.ReadToEnd() } finally { $reader.Dispose() }\n"
        f"$null = New-Module -Name {MODULE_NAME} -ScriptBlock ([ScriptBlock]::Create($source)) | "
        "Import-Module -Global -Force\n"
        f"{_single_quoted(reply)}\n"
    )


@lru_cache(maxsize=1)
def loader_parameters() -> dict[str, str]:
    """The loader's parameters: the packaged module, gzip-compressed, base64-encoded."""
    packed = gzip.compress(module_text().encode("utf-8"), compresslevel=9, mtime=0)
    return {LOADER_PARAMETER: base64.b64encode(packed).decode("ascii")}
