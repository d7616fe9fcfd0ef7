"""`fleetctl exec`'s core: the operator's own PowerShell script run on each targeted host (`Invoke-FleetCommand`),
each host's output and exit status kept apart.

The script is the operator's, by design: it travels whole as the operation's one `Script` parameter and nothing
of ours is added to it (docs/windows.md). A lab node refuses the operation with the typed code `UNSUPPORTED`
(`details.lab: true`), which is how the controller knows it needs real Windows: from the node's answer, never
from a guess at the address.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from fleetctl.node.client import NodeClient
from fleetctl.node.fleet import DEFAULT_FORKS, HostResult, run_parallel
from fleetctl.protocol.errors import NodeOperationError

ExecStatus = Literal["ok", "failed", "unsupported", "error"]


@dataclass(frozen=True)
class HostExec:
    """How the script went on one host: `ok` (exit 0), `failed` (non-zero exit), `unsupported` (a lab node:
    needs real Windows), `error` (it could not be run: unreachable, a script that does not parse)."""

    host: str
    status: ExecStatus
    output: tuple[str, ...] = ()
    exit_code: int | None = None
    message: str | None = None  # why it could not run (redacted), or the lab's refusal
    elapsed_ms: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"status": self.status, "exit_code": self.exit_code, "output": list(self.output),
                "message": self.message, "elapsed_ms": self.elapsed_ms}


def exec_on_host(client: NodeClient, script: str) -> HostExec:
    """Run the script on one host; a node's refusal or error is the host's result, not an exception."""
    try:
        result = client.invoke_fleet_command(script=script)
    except NodeOperationError as err:
        status: ExecStatus = "unsupported" if err.code == "UNSUPPORTED" else "error"
        return HostExec(client.host, status, message=err.message)
    return HostExec(client.host, "ok" if result.exit_code == 0 else "failed", result.output, result.exit_code,
                    elapsed_ms=result.elapsed_ms)


def run_exec(hosts: Sequence[str], connect: Callable[[str], NodeClient], script: str, *, forks: int = DEFAULT_FORKS,
             on_done: Callable[[HostExec], None] | None = None) -> dict[str, HostExec]:
    """The script on every host (at most `forks` at once), each result in host order; `on_done` as each ends."""
    def done(outcome: HostResult[HostExec]) -> None:
        if on_done is not None:
            on_done(_result(outcome))

    outcomes = run_parallel(list(hosts), lambda h: exec_on_host(connect(h), script), forks=forks, on_done=done)
    return {h: _result(o) for h, o in outcomes.items()}


def _result(outcome: HostResult[HostExec]) -> HostExec:
    if outcome.value is not None:
        return outcome.value
    return HostExec(outcome.host, "error", message=outcome.error or "unknown error")
