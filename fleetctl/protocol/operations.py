"""The one definition of the node protocol: operations, their parameters, results and error codes.

The controller's `NodeClient`, the PowerShell module (`FleetNode.psm1`) and the lab's node simulation all
implement exactly this; `tests/node/test_contract.py` fails when one side drifts. `docs/node-protocol.md`
describes the same operations for people.

Wire rules (both sides):
- An operation is a PowerShell function `Verb-FleetNoun`, invoked as a command with *named* parameters
  (`add_cmdlet(name).add_parameter(...)`); user values are never pasted into script text.
- It writes exactly one string to the output stream: a JSON document, either
  `{"ok": true, "result": {...}}` or `{"ok": false, "error": {"code": CODE, "message": TEXT, "details": {...}}}`.
- Operations marked `pipeline_input` read their input objects (strings) from the pipeline.
- Every operation is idempotent: calling it twice with the same parameters leaves the node as after once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PROTOCOL_VERSION = "1"
MODULE_NAME = "FleetNode"

# Types as the PowerShell side declares them: string, int, long, bool (sent as [bool] values, not switches),
# switch (present or absent), string[] (a list of strings), hashtable (a dict of string -> string).
ParamType = Literal["string", "int", "long", "bool", "switch", "string[]", "hashtable"]


@dataclass(frozen=True)
class Param:
    name: str
    type: ParamType
    required: bool = False
    secret: bool = False  # never logged, never shown; the value is redacted in every error and report
    doc: str = ""


@dataclass(frozen=True)
class Operation:
    name: str
    doc: str
    params: tuple[Param, ...] = ()
    result: dict[str, str] = field(default_factory=dict)  # result key -> description
    errors: tuple[str, ...] = ()
    pipeline_input: bool = False

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)


# Error codes any operation may return, with what each means. Operations list the specific ones they use.
ERROR_CODES: dict[str, str] = {
    "INVALID_ARGUMENT": "A parameter is missing or has an unusable value.",
    "NOT_FOUND": "The thing named (release, service, artifact, log) does not exist on the node.",
    "LOCK_HELD": "Another owner holds the app lock and it has not expired; details: holder.",
    "LOCK_NOT_OWNED": "Unlock or renew by a deploy id that does not hold the lock; details: holder (or null).",
    "CHECKSUM_MISMATCH": "The received or downloaded bytes do not hash to the expected sha256; nothing kept.",
    "DISK_FULL": "Not enough free space to store the artifact or release.",
    "DOWNLOAD_FAILED": "The node could not download the artifact URL; details: status or reason.",
    "FILE_IN_USE": "A file is locked by a running process (Windows sharing violation).",
    "SERVICE_START_FAILED": "The service did not reach Running; details: state, exit code, reason.",
    "SERVICE_START_TIMEOUT": "The service did not reach Running within the timeout.",
    "SERVICE_STOP_TIMEOUT": "The service did not reach Stopped within the timeout (the process was not killed).",
    "RELEASE_IN_USE": "The release asked to remove is current or previous.",
    "UNSUPPORTED": "The node cannot perform this (for example arbitrary PowerShell in the lab).",
    "INTERNAL": "An unexpected error on the node; message holds the exception text.",
}


def _p(name: str, type_: ParamType, required: bool = False, doc: str = "", secret: bool = False) -> Param:
    return Param(name=name, type=type_, required=required, doc=doc, secret=secret)


APP = _p("App", "string", True, "Application (service) name; keys the node state and lock.")
ROOT = _p("Root", "string", True, "Install root on the node, e.g. C:\\apps\\hello.")
SERVICE_NAME = _p("Name", "string", True, "Windows service name.")

OPERATIONS_LIST: tuple[Operation, ...] = (
    Operation(
        "Get-FleetFacts",
        "Facts about the node: identity, OS, PowerShell, disk and clock.",
        (),
        {
            "hostname": "computer name",
            "os_name": "e.g. Microsoft Windows Server 2022 Datacenter",
            "os_version": "e.g. 10.0.20348",
            "os_build": "build number as a string",
            "ps_version": "PowerShell version, e.g. 5.1.20348.2031",
            "drives": "object: drive letter -> free bytes",
            "utc_now": "ISO 8601 UTC time on the node",
            "module_version": "the FleetNode module's protocol version",
            "lab": "true on a lab node (never on Windows)",
        },
    ),
    Operation(
        "Lock-FleetApp",
        "Take the per-app lock. Succeeds if free, expired, already ours (same DeployId), or held by exactly the "
        "deploy named in TakeOver (a holder the controller proved gone); never takes a live lock otherwise, and "
        "never takes over a change freeze.",
        (
            APP,
            _p("Owner", "string", True, "user@controller that takes the lock"),
            _p("DeployId", "string", True, "the run (or change freeze) that holds the lock"),
            _p("TtlSeconds", "int", True, "the lock expires this long after it was taken or last renewed"),
            _p("Process", "string", False, "the controller process holding the lock (opaque to the node: "
                                             "machine/boot/pid-namespace/pid/start), so a controller on the same "
                                             "machine can prove it gone"),
            _p("Reason", "string", False, "makes the lock a change freeze, held by a person with this reason"),
            _p("TakeOver", "string", False, "deploy id of a live holder the controller proved gone: replace "
                                              "its lock, and only its lock"),
        ),
        {"lock": "object: owner, deploy_id, acquired_at, renewed_at, expires_at (ISO), ttl_seconds, process, "
                 "reason", "taken_over": "previous holder or null"},
        ("LOCK_HELD",),
    ),
    Operation(
        "Update-FleetAppLock",
        "Renew the lock held by DeployId (the run's heartbeat): expires_at = now + TtlSeconds. Never takes a lock: "
        "a lock that is gone or held by another deploy id is LOCK_NOT_OWNED.",
        (APP, _p("DeployId", "string", True, "the run that holds the lock"),
         _p("TtlSeconds", "int", True, "the lock expires this long after now")),
        {"lock": "the renewed lock object"},
        ("LOCK_NOT_OWNED",),
    ),
    Operation(
        "Unlock-FleetApp",
        "Release the per-app lock held by DeployId (compare and delete: another holder's lock is never removed). "
        "Unlocking a free lock is ok.",
        (APP, _p("DeployId", "string", True, "the run (or change freeze) that holds the lock")),
        {"released": "true if a lock was removed"},
        ("LOCK_NOT_OWNED",),
    ),
    Operation(
        "Test-FleetArtifact",
        "Whether the artifact cache holds a file with this sha256.",
        (_p("Sha256", "string", True, "lower-case hex"),),
        {"present": "bool", "path": "cache path or null", "size": "bytes or null"},
    ),
    Operation(
        "Receive-FleetArtifact",
        "Store an artifact streamed as pipeline input: base64 strings of consecutive chunks of the "
        "(optionally gzip-compressed) bytes. Verified against Sha256 of the uncompressed bytes, then moved "
        "into the cache atomically; on mismatch nothing is kept.",
        (
            _p("Sha256", "string", True),
            _p("Size", "long", True, "uncompressed size in bytes"),
            _p("Compression", "string", False, "gzip (default) or none"),
        ),
        {"path": "cache path", "sha256": "verified hash", "size": "bytes stored", "received": "bytes received"},
        ("CHECKSUM_MISMATCH", "DISK_FULL"),
        pipeline_input=True,
    ),
    Operation(
        "Save-FleetArtifactFromUrl",
        "Pull and url modes: download Url (sending Token as a bearer token), verify Sha256 and Size, store "
        "atomically.",
        (
            _p("Url", "string", True, "the controller's pull server, or where the artifact lives (transfer: url); "
               "its query string is masked like a secret"),
            _p("Sha256", "string", True),
            _p("Size", "long", True),
            _p("Token", "string", False, "bearer token: the pull server's per-deploy one, or the repository's",
               secret=True),
            _p("CaCertificate", "string", False, "PEM of the one CA to trust for an https Url"),
        ),
        {"path": "cache path", "sha256": "verified hash", "size": "bytes", "received": "bytes downloaded"},
        ("CHECKSUM_MISMATCH", "DISK_FULL", "DOWNLOAD_FAILED"),
    ),
    Operation(
        "Install-FleetRelease",
        "Create <Root>\\releases\\<Release>\\ holding the cached artifact as ExeName plus rendered Files "
        "(relative path -> text), and record the release in the node state. Existing release: no-op.",
        (
            APP,
            ROOT,
            _p("Release", "string", True, "release id: version plus short hash, e.g. 1.2.0-3fa9c1d2"),
            _p("Version", "string", True),
            _p("Sha256", "string", True, "artifact in the cache"),
            _p("ExeName", "string", True, "file name of the exe inside the release"),
            _p("Files", "hashtable", False, "relative path -> file content (text)"),
        ),
        {"release": "id", "path": "release directory", "created": "false if it already existed"},
        ("NOT_FOUND", "DISK_FULL"),
    ),
    Operation(
        "Set-FleetService",
        "Create or update the Windows service definition; reports which fields changed.",
        (
            SERVICE_NAME,
            _p("DisplayName", "string"),
            _p("Description", "string"),
            _p("BinaryPath", "string", True, "full path of the exe (under <Root>\\current)"),
            _p("Arguments", "string[]"),
            _p("Environment", "hashtable"),
            _p("Account", "string", False, "LocalSystem (default), NT AUTHORITY\\NetworkService, or DOMAIN\\user"),
            _p("Password", "string", False, "password of Account", secret=True),
            _p("StartType", "string", False, "auto (default), delayed-auto, manual or disabled"),
            _p("Dependencies", "string[]"),
            _p("RecoveryRestartSeconds", "int", False, "restart after N s on failure; 0 = no recovery action"),
            _p("RecoveryResetSeconds", "int", False, "reset failure count after N s"),
            _p("RecoveryActions", "string[]", False, "per failure (first, second, later): restart/<ms> or none/0; "
               "overrides RecoveryRestartSeconds"),
            _p("StopTimeoutSeconds", "int"),
            _p("Hosting", "string", False, "native (default: the exe talks to the SCM itself) or nssm (a console "
               "exe run by nssm.exe)"),
            _p("WrapperSha256", "string", False, "nssm: the nssm.exe to use, by sha256 in the artifact cache"),
            _p("WorkingDirectory", "string", False, "nssm: AppDirectory (default: the directory of BinaryPath)"),
            _p("StdoutPath", "string", False, "nssm: AppStdout, the file receiving the program's stdout"),
            _p("StderrPath", "string", False, "nssm: AppStderr (the same path as StdoutPath: one file for both)"),
            _p("RotateBytes", "long", False, "nssm: rotate the output files when they exceed this size (AppRotate*)"),
            _p("RestartDelayMilliseconds", "int", False, "nssm: AppRestartDelay before restarting an exited program"),
            _p("ThrottleMilliseconds", "int", False, "nssm: AppThrottle; a program that ran less is restarted "
               "with a growing delay"),
        ),
        {"created": "bool", "changed": "list of changed field names (empty when up to date)",
         "image_path": "the command line the SCM starts (for nssm: the quoted nssm.exe path)"},
        ("NOT_FOUND",),
    ),
    Operation(
        "Stop-FleetService",
        "Stop the service and wait until it is Stopped. Already stopped or absent: ok.",
        (SERVICE_NAME, _p("TimeoutSeconds", "int", True)),
        {"state": "Stopped", "waited_ms": "int", "was": "state before"},
        ("SERVICE_STOP_TIMEOUT",),
    ),
    Operation(
        "Start-FleetService",
        "Start the service and wait until it is Running. Already running: ok.",
        (SERVICE_NAME, _p("TimeoutSeconds", "int", True)),
        {"state": "Running", "pid": "int", "waited_ms": "int", "was": "state before"},
        ("NOT_FOUND", "SERVICE_START_FAILED", "SERVICE_START_TIMEOUT"),
    ),
    Operation(
        "Switch-FleetRelease",
        "Repoint the <Root>\\current junction at releases\\<Release> and record current/previous. "
        "The service should be stopped first (the controller does that).",
        (APP, ROOT, _p("Release", "string", True),
         _p("Colour", "string", False, "blue-green: repoint <Root>\\<Colour> (blue or green) instead of "
            "<Root>\\current and record that colour's release; current/previous are left to Switch-FleetColour")),
        {"current": "release id (of the colour, with Colour)", "previous": "release id or null", "changed": "bool"},
        ("NOT_FOUND",),
    ),
    Operation(
        "Switch-FleetColour",
        "Blue-green: point the port proxy ListenAddress:ListenPort at the colour's ConnectPort and record Colour "
        "as live, in one step: current becomes the colour's release, previous the release that was current. "
        "Calling it again finishes a switch that was interrupted.",
        (
            APP,
            ROOT,
            _p("Colour", "string", True, "blue or green; its release was set by Switch-FleetRelease -Colour"),
            _p("ListenPort", "int", True, "the public port"),
            _p("ListenAddress", "string", False, "default 0.0.0.0"),
            _p("ConnectPort", "int", True, "the colour's own port"),
            _p("ConnectAddress", "string", False, "default 127.0.0.1"),
        ),
        {"live": "colour", "current": "release id", "previous": "release id or null",
         "connect": "address:port the proxy forwards to", "changed": "bool"},
        ("NOT_FOUND",),
    ),
    Operation(
        "Set-FleetReleaseVerdict",
        "Record in the node state that a release failed its health gate here (Verdict failed, with Reason), or "
        "clear that mark (Verdict cleared). A rollback never returns to a release marked failed unless forced.",
        (APP, _p("Release", "string", True), _p("Verdict", "string", True, "failed or cleared"),
         _p("Reason", "string", False, "one line: why the gate failed (already redacted by the controller)")),
        {"release": "release id", "gate_failed": "the recorded reason, or null when cleared"},
        ("NOT_FOUND", "INVALID_ARGUMENT"),
    ),
    Operation(
        "Get-FleetState",
        "The node's truth about one app: releases kept, current, previous, service, lock and its scheduled tasks.",
        (APP, ROOT, _p("ServiceName", "string", False, "defaults to App"),
         _p("TaskNames", "string[]", False, "scheduled tasks (in \\fleetctl\\) to report"),
         _p("ProxyPort", "int", False, "blue-green: report the port proxy listening on this port")),
        {
            "releases": "list of {release, version, sha256, installed_at, gate_failed (reason or null)}, oldest first",
            "current": "release id or null",
            "previous": "release id or null",
            "service": "{exists, state, pid, start_time, restarts, recent_restarts, binary_path}: restarts since "
                       "the current release was switched in, recent_restarts in the last 10 minutes",
            "lock": "lock object or null (expired locks are reported with expired=true)",
            "history": "list of {at, action, release} (last 50)",
            "tasks": "list of {name, exists, state, last_run, last_result, next_run}, one per TaskNames entry",
            "colours": "blue-green: object colour -> {release, previous, service} for each colour that has a "
                       "release; service is <ServiceName>-<colour> as in `service`",
            "live": "blue-green: the colour Switch-FleetColour recorded as live, or null",
            "proxy": "{listen, connect} (address:port) of the port proxy on ProxyPort, or null",
        },
    ),
    Operation(
        "Test-FleetHealth",
        "Probe an HTTP URL from the node itself (node-local health checks).",
        (_p("Url", "string", True), _p("TimeoutSeconds", "int", True)),
        {"status": "HTTP status or null", "body": "first 4 KiB of the body", "elapsed_ms": "int", "error": "text or null"},
    ),
    Operation(
        "Remove-FleetRelease",
        "Retention: delete the oldest releases beyond Keep, never current, previous or a blue-green colour's "
        "release. With -Release, delete that one release (refused if it is one of those).",
        (APP, ROOT, _p("Keep", "int", False), _p("Release", "string", False)),
        {"removed": "list of release ids", "kept": "list of release ids"},
        ("RELEASE_IN_USE", "FILE_IN_USE"),
    ),
    Operation(
        "Set-FleetFirewallRule",
        "Ensure an inbound/outbound firewall rule (by Name) with these settings, or remove it.",
        (
            _p("Name", "string", True),
            _p("Port", "int", True),
            _p("Protocol", "string", False, "TCP (default) or UDP"),
            _p("Direction", "string", False, "Inbound (default) or Outbound"),
            _p("Action", "string", False, "Allow (default) or Block"),
            _p("RemoteAddress", "string[]"),
            _p("Remove", "switch"),
        ),
        {"changed": "bool"},
    ),
    Operation(
        "Set-FleetScheduledTask",
        "Ensure a scheduled task (by Name, in the \\fleetctl\\ folder) running Execute with Arguments on its triggers "
        "(at startup, every N minutes, daily At HH:MM), or remove it; -RunNow starts it once.",
        (
            _p("Name", "string", True),
            _p("Execute", "string", False),
            _p("Arguments", "string[]"),
            _p("At", "string", False, "HH:MM: a daily trigger"),
            _p("AtStartup", "switch", doc="a trigger at system startup"),
            _p("EveryMinutes", "int", False, "a trigger repeating every N minutes, indefinitely"),
            _p("User", "string", False, "account, default SYSTEM"),
            _p("RestartCount", "int", False, "restart attempts when a run fails (default 0)"),
            _p("RestartIntervalMinutes", "int", False, "minutes between those attempts (default 1)"),
            _p("ExecutionTimeLimitMinutes", "int", False, "stop a run after N minutes; 0 = no limit (default 4320, "
               "Windows' 72 h)"),
            _p("Remove", "switch"),
            _p("RunNow", "switch"),
        ),
        {"changed": "bool", "last_run": "ISO time or null", "last_result": "exit code of the last run, or null if "
         "it never ran"},
        ("NOT_FOUND",),
    ),
    Operation(
        "Set-FleetPortProxy",
        "Ensure a TCP port proxy ListenAddress:ListenPort -> ConnectAddress:ConnectPort, or remove it.",
        (
            _p("ListenPort", "int", True),
            _p("ListenAddress", "string", False, "default 0.0.0.0"),
            _p("ConnectPort", "int", False),
            _p("ConnectAddress", "string", False, "default 127.0.0.1"),
            _p("Remove", "switch"),
        ),
        {"changed": "bool", "connect": "address:port or null"},
    ),
    Operation(
        "Get-FleetEvents",
        "The newest Application-log events written under an event source (the service's name), newest first.",
        (_p("Source", "string", True, "event source, normally the service name"),
         _p("Max", "int", False, "at most this many events (default 50)")),
        {"events": "list of {time (ISO or null), level (Information, Warning, Error), id (int or null), message}",
         "note": "what the node cannot report (the lab says so here), or null"},
    ),
    Operation(
        "Remove-FleetService",
        "Retire a Windows service: stop it (waiting TimeoutSeconds) and delete its definition. Absent: ok.",
        (SERVICE_NAME, _p("TimeoutSeconds", "int", True)),
        {"removed": "true if a service was deleted", "was": "state before, or Absent"},
        ("SERVICE_STOP_TIMEOUT",),
    ),
    Operation(
        "Remove-FleetApp",
        "Retire an app's files after its service is gone: the <Root>\\current junction (and the blue and green "
        "ones), and with -Purge also "
        "releases\\, shared\\, the empty Root and the node state. Absent: ok.",
        (APP, ROOT, _p("Purge", "switch", doc="also delete releases, shared files and the node's state")),
        {"removed": "list of the paths deleted", "kept": "list of the paths left in place"},
        ("FILE_IN_USE",),
    ),
    Operation(
        "Get-FleetLog",
        "The last Tail lines of the service's log file under <Root>\\shared\\logs (or Path, relative to Root).",
        (APP, ROOT, _p("Tail", "int", False, "default 100"), _p("Path", "string", False)),
        {"path": "file read", "lines": "list of strings"},
        ("NOT_FOUND",),
    ),
    # -- the day-one commands: `fleetctl logs -f` (a read cursor) and `fleetctl exec` (the user's own script) --
    Operation(
        "Read-FleetLog",
        "Read the service's log (as Get-FleetLog finds it) from a byte cursor: complete lines only, and the cursor "
        "to pass next time, so a follower neither loses nor repeats a line. Without Offset: the last Tail lines.",
        (
            APP,
            ROOT,
            _p("Path", "string", False, "log file or directory relative to Root (default shared\\logs)"),
            _p("File", "string", False, "the path the cursor belongs to (the last answer's path): another file "
               "now found there starts from its beginning"),
            _p("Offset", "long", False, "byte offset to read from (the last answer's offset)"),
            _p("Tail", "int", False, "without Offset: how many of the last lines (default 100)"),
        ),
        {"path": "file read", "lines": "list of complete lines (without their line ends)",
         "offset": "byte offset just after the last line returned: the next call's Offset",
         "size": "file length in bytes", "reset": "true when the cursor did not apply (another file, or the file "
         "shrank) and the file was read from its beginning", "more": "true when more bytes follow than one answer "
         "carries (1 MiB): call again at once"},
        ("NOT_FOUND",),
    ),
    Operation(
        "Invoke-FleetCommand",
        "Run the operator's own PowerShell script (fleetctl exec): sent whole as one parameter, parsed first, run "
        "outside the module's strict mode; its output and error records come back as text lines.",
        (_p("Script", "string", True, "the operator's PowerShell text, never combined with any other value"),),
        {"output": "list of output lines (error records as 'ERROR: ...')", "errors": "number of error records",
         "exit_code": "$LASTEXITCODE of the last native program when non-zero, else 1 after any error, else 0",
         "elapsed_ms": "int"},
        ("UNSUPPORTED",),
    ),
    Operation(
        "Get-FleetDeployed",
        "Read-only, for `deploy --dry-run --diff`: the service definition as the SCM has it now and the files of "
        "a release (the current one by default), to compare with what a deploy would write.",
        (APP, ROOT, _p("ServiceName", "string", False, "defaults to App"),
         _p("Release", "string", False, "whose files to list; default the current release")),
        {
            "release": "the release whose files are listed, or null (none current)",
            "files": "list of {path (relative to the release, with backslashes), size, sha256, text (UTF-8 "
                     "content, or null when over 256 KiB or not UTF-8)} for every file of the release but its exe",
            "service": "null when absent, else {binary_path, arguments, display_name, description, environment "
                       "(object name -> value; a node may mask secret ones), environment_sha256 (list of {name, "
                       "sha256} of each value, to compare without the value), account, start_type, dependencies, recovery_actions, recovery_reset_seconds, "
                       "stop_timeout_seconds, hosting, working_directory, stdout_path, stderr_path, rotate_bytes, "
                       "restart_delay_milliseconds, throttle_milliseconds, image_path}",
        },
        ("NOT_FOUND",),
    ),
)

OPERATIONS: dict[str, Operation] = {op.name: op for op in OPERATIONS_LIST}


def secret_params(operation: str) -> frozenset[str]:
    """Parameter names of an operation whose values must never be shown."""
    return frozenset(p.name for p in OPERATIONS[operation].params if p.secret)


def snake_case(name: str) -> str:
    """The Python spelling of a protocol parameter name: `TtlSeconds` -> `ttl_seconds`, `Sha256` -> `sha256`.

    The lab's handlers and `NodeClient`'s methods take parameters under these names; the contract test relies
    on this mapping.
    """
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i > 0 and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def function_name(operation: str) -> str:
    """The Python spelling of an operation name: `Get-FleetFacts` -> `get_fleet_facts`."""
    verb, noun = operation.split("-", 1)
    return snake_case(verb) + "_" + snake_case(noun)
