"""The error an artifact step raises: a build, collect or check that failed before anything was deployed."""

from __future__ import annotations

from fleetctl.errors import ConfigError


class ArtifactError(ConfigError):
    """No artifact could be produced (compiler error, wrong checksum, no match, not an executable ...).

    Exit code 2: nothing was changed on any host. `output` holds the build tool's own text when there is one.
    """

    def __init__(self, message: str, *, output: str = "", key: str | None = None, file: str | None = None) -> None:
        self.output = output
        super().__init__(message, key=key, file=file)
