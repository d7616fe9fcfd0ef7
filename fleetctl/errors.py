"""The error hierarchy; each error carries the process exit code the CLI maps it to (docs/cli.md, Exit codes)."""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_ROLLOUT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_HALTED = 3
EXIT_LOCKED = 4
EXIT_INTERRUPTED = 130


class FleetError(Exception):
    """Base of every error fleetctl reports to the user. `str(err)` is the one-line message."""

    exit_code = 1


class ConfigError(FleetError):
    """Bad input: a file, key or value that is not what fleetctl expects. Nothing was changed.

    The message names the file (and line when known), the key and what was expected.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = key
        self.detail = message
        where = ""
        if self.file:
            where = self.file + (f":{line}" if line else "")
        parts = [p for p in (where, f"key '{key}'" if key else "") if p]
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class RolloutFailed(FleetError):
    """Some hosts failed and were rolled back; the rollout finished or halted cleanly."""

    exit_code = EXIT_ROLLOUT_FAILED


class Halted(FleetError):
    """The rollout stopped with hosts on mixed versions."""

    exit_code = EXIT_HALTED


class LockHeld(FleetError):
    """Another deploy holds the lock on a node."""

    exit_code = EXIT_LOCKED


class Interrupted(FleetError):
    """The user pressed Ctrl-C; in-flight work was finished or rolled back."""

    exit_code = EXIT_INTERRUPTED
