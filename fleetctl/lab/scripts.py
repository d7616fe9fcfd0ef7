"""The few PowerShell scripts a lab node recognises and runs, by exact text, without a PowerShell engine.

A lab node cannot run arbitrary PowerShell. Script pipelines that arrive are compared, after the same
comment/blank-line stripping pypsrp applies before sending, with the scripts we know:
- pypsrp's `Client.copy` script (`copy.ps1`): input = base64 chunks, then base64 of the SHA-1 hex digest;
  arguments = (destination, expand_variables); output = the full destination path.
- pypsrp's `Client.fetch` script (`fetch.ps1`): arguments = (source, expand_variables); output = the whole file
  as one base64 string, then its SHA-1 hex digest.
- The FleetNode module loader (a script whose first line is `# FleetNode module loader`): the lab's node
  functions are built in, so loading is a no-op answering one protocol JSON document.
Anything else raises `LabUnsupported`, saying so plainly.

API: `run_known_script(script, arguments, input_objects, sandbox) -> list[Any]` (called by `LabNode.run_script`);
`ScriptError` is what a recognised script "throws" (the pipeline fails with that message).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import ntpath
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from pypsrp._utils import get_pwsh_script

from fleetctl.lab.backend import LabUnsupported
from fleetctl.protocol.operations import PROTOCOL_VERSION

LOADER_MARKER = "# FleetNode module loader"
# Same reply as the real loader (fleetctl/protocol/loader.py), plus lab: true so a lab node never passes for Windows.
LOADER_RESULT = json.dumps(
    {"ok": True, "result": {"module": "FleetNode", "version": PROTOCOL_VERSION, "lab": True}}
)

# What %VAR% expands to on a lab node when a script asks for environment expansion (pypsrp's expand_variables);
# unknown variables stay as written, as [Environment]::ExpandEnvironmentVariables leaves them.
_ENVIRONMENT = {
    "SYSTEMDRIVE": "C:",
    "SYSTEMROOT": "C:\\Windows",
    "WINDIR": "C:\\Windows",
    "PROGRAMDATA": "C:\\ProgramData",
    "PROGRAMFILES": "C:\\Program Files",
    "TEMP": "C:\\Windows\\Temp",
    "TMP": "C:\\Windows\\Temp",
}
_ENV_VAR = re.compile(r"%([^%]+)%")
_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")


class ScriptFiles(Protocol):
    """The node's file system as scripts see it (implemented by the node simulation)."""

    def read_bytes(self, windows_path: str) -> bytes: ...

    def write_bytes(self, windows_path: str, data: bytes) -> None: ...

    def resolve(self, windows_path: str) -> Path: ...


class ScriptError(Exception):
    """A recognised script failed the way the real script throws (missing file, hash mismatch)."""


def _strip_script(text: str) -> str:
    """pypsrp's comment and blank-line stripping (`pypsrp._utils.get_pwsh_script`), for comparing scripts."""
    block_comment = False
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if block_comment:
            block_comment = not line.endswith("#>")
        elif line.startswith("<#"):
            block_comment = True
        elif line and not line.startswith("#"):
            lines.append(line)
    return "\n".join(lines)


@cache
def _known_scripts() -> dict[str, str]:
    return {_strip_script(get_pwsh_script(name)): name for name in ("copy.ps1", "fetch.ps1")}


def identify_script(script: str) -> str | None:
    """"loader", "copy.ps1", "fetch.ps1", or None for a script the lab does not know."""
    if script.lstrip("\ufeff").startswith(LOADER_MARKER):
        return "loader"
    return _known_scripts().get(_strip_script(script))


def windows_path(raw: Any, expand_variables: Any) -> str:
    """The absolute, normalised Windows path a script argument names."""
    path = str(raw)
    if expand_variables is True or str(expand_variables).lower() == "true":
        path = _ENV_VAR.sub(lambda m: _ENVIRONMENT.get(m.group(1).upper(), m.group(0)), path)
    if not _ABSOLUTE.match(path):
        raise LabUnsupported(f"the lab resolves only absolute paths such as C:\\dir\\file, not {path!r}")
    return ntpath.normpath(path.replace("/", "\\"))


def _copy(arguments: list[Any], input_objects: list[Any], sandbox: ScriptFiles) -> list[Any]:
    if len(arguments) < 1:
        raise ScriptError("copy: no destination path argument")
    dest = windows_path(arguments[0], arguments[1] if len(arguments) > 1 else False)
    if not input_objects:
        raise ScriptError("copy: no input (expected base64 chunks and the SHA-1 digest)")
    try:
        chunks = [base64.b64decode(str(obj)) for obj in input_objects]
    except binascii.Error as err:
        raise ScriptError(f"copy: input is not base64: {err}") from None
    expected = chunks[-1].decode("utf-8", "replace")
    data = b"".join(chunks[:-1])
    actual = hashlib.sha1(data).hexdigest()
    if actual != expected:
        raise ScriptError(f"Transport failure, hash mismatch\r\nActual: {actual}\r\nExpected: {expected}")
    sandbox.write_bytes(dest, data)
    return [dest]


def _fetch(arguments: list[Any], sandbox: ScriptFiles) -> list[Any]:
    if len(arguments) < 1:
        raise ScriptError("fetch: no source path argument")
    src = windows_path(arguments[0], arguments[1] if len(arguments) > 1 else False)
    try:
        data = sandbox.read_bytes(src)
    except IsADirectoryError:
        raise ScriptError(f"The path at '{src}' is a directory, src must be a file") from None
    except FileNotFoundError:
        raise ScriptError(f"The path at '{src}' does not exist") from None
    return [base64.b64encode(data).decode("ascii"), hashlib.sha1(data).hexdigest()]


def run_known_script(script: str, arguments: list[Any], input_objects: list[Any], sandbox: ScriptFiles) -> list[Any]:
    """Run a recognised script against the node's sandbox; `LabUnsupported` for any other script."""
    kind = identify_script(script)
    handlers: dict[str, Callable[[], list[Any]]] = {
        "loader": lambda: [LOADER_RESULT],
        "copy.ps1": lambda: _copy(arguments, input_objects, sandbox),
        "fetch.ps1": lambda: _fetch(arguments, sandbox),
    }
    if kind is None:
        first = script.strip().splitlines()[0][:60] if script.strip() else ""
        raise LabUnsupported(
            "the lab runs only the FleetNode module loader and pypsrp's copy/fetch scripts, not arbitrary "
            f"PowerShell (script starting {first!r}); use a real Windows host for this")
    return handlers[kind]()
