"""The balancer host over SSH: run a command, read a file, replace a file atomically, keep the previous one.

Everything goes through `fleetctl.transport.ssh` (fabric; host keys checked; argv quoted by its one quoting
function). Files are written over SFTP to a temporary name in the same directory and renamed into place
(`posix-rename`), so nginx or HAProxy never reads half a file.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from fleetctl.protocol.errors import TransportError
from fleetctl.transport.ssh import RemoteResult, SshSession, SshSettings, connect


class BalancerError(Exception):
    """The balancer could not be reached, or refused or failed a change; `message` says which and where."""

    def __init__(self, message: str, *, host: str) -> None:
        super().__init__(message)
        self.message = message
        self.host = host


@dataclass
class BalancerHost:
    """One SSH connection to the balancer's Linux host, opened on first use."""

    settings: SshSettings
    _conn: SshSession | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.settings.host_name

    def connection(self) -> SshSession:
        if self._conn is None:
            try:
                self._conn = connect(self.settings)
            except TransportError as err:
                raise BalancerError(f"load balancer {self.name} is unreachable: {err.reason}", host=self.name) from None
        return self._conn

    def run(self, argv: Sequence[str], *, timeout: float = 30.0) -> RemoteResult:
        try:
            return self.connection().run(argv, timeout=timeout)
        except TransportError as err:
            raise BalancerError(f"load balancer {self.name}: {err.reason}", host=self.name) from None

    def read_text(self, path: str) -> str | None:
        """The file's text, or None when it does not exist."""
        try:
            return self.connection().read_bytes(path).decode("utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            raise BalancerError(f"load balancer {self.name}: cannot read {path}: {err}", host=self.name) from None

    def write_beside(self, path: str, text: str, suffix: str) -> str:
        """Write `text` to `<path><suffix>` (through a temporary name in the same directory); returns that path."""
        target = path + suffix
        temp = f"{path}.fleetctl-{uuid.uuid4().hex[:8]}.tmp"
        session = self.connection()
        try:
            session.upload(text.encode("utf-8"), temp)
            session.rename(temp, target)
        except OSError as err:
            try:
                session.remove(temp)
            except OSError:
                pass
            raise BalancerError(f"load balancer {self.name}: cannot write {target}: {err}", host=self.name) from None
        return target

    def rename(self, source: str, target: str) -> None:
        """Atomically replace `target` with `source` (both on the balancer, same directory)."""
        try:
            self.connection().rename(source, target)
        except OSError as err:
            raise BalancerError(f"load balancer {self.name}: cannot move {source} to {target}: {err}",
                                host=self.name) from None

    def remove(self, path: str) -> None:
        try:
            self.connection().remove(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise BalancerError(f"load balancer {self.name}: cannot remove {path}: {err}", host=self.name) from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
