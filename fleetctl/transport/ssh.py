"""SSH to Linux hosts (build hosts, load balancers) with fabric: the only code that opens SSH connections.

Connections come from inventory variables, read by `fleetctl.config.connection.SshSettings` (the same variable
reader as WinRM's: `ansible_host`, `ansible_port`, `ansible_user`, `ansible_ssh_private_key_file`,
`ansible_password`; fleetctl's `fleet_ssh_*` names win). Host keys are always
checked: an unknown or changed key is refused, never added. Remote commands are built from argument lists by
`quote_command`, the single place where values are quoted for a remote shell.
"""

from __future__ import annotations

import io
import shlex
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import paramiko
from fabric import Connection

from fleetctl.config.connection import SshSettings
from fleetctl.config.redaction import redact
from fleetctl.protocol.errors import AuthenticationFailed, HostTimeout, HostUnreachable, TransportError


def quote_command(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
                  merge_stderr: bool = False) -> str:
    """A POSIX shell command line that runs `argv` exactly (every word quoted), optionally with `env` set and in
    `cwd`. The one function that turns values into remote shell text."""
    words = [shlex.quote(str(a)) for a in argv]
    if env:
        for key in env:
            if not key.replace("_", "a").isalnum() or key[0].isdigit():
                raise ValueError(f"not an environment variable name: {key!r}")
        words = ["env", *(shlex.quote(f"{k}={v}") for k, v in env.items()), *words]
    command = " ".join(words)
    if merge_stderr:
        command += " 2>&1"
    if cwd is not None:
        command = f"cd {shlex.quote(cwd)} && {command}"
    return command


def connect(settings: SshSettings) -> SshSession:
    """An open, authenticated session with the host (its key checked); failures become transport errors."""
    return SshSession(_open(settings), settings.host_name)


def _open(settings: SshSettings) -> Connection:
    """An open, authenticated fabric Connection, host key checked; failures become transport errors."""
    connect_kwargs: dict[str, Any] = {"banner_timeout": settings.connect_timeout,
                                      "auth_timeout": settings.connect_timeout}
    if settings.key_file or settings.password:
        # Explicit credentials: do not also try whatever keys or agent this machine happens to have.
        connect_kwargs.update(look_for_keys=False, allow_agent=False)
    if settings.key_file:
        connect_kwargs["key_filename"] = settings.key_file
    if settings.password:
        connect_kwargs["password"] = settings.password
    conn = Connection(settings.address, user=settings.user, port=settings.port, connect_kwargs=connect_kwargs,
                      connect_timeout=settings.connect_timeout)
    # fabric auto-adds unknown host keys by default; a deploy tool must refuse them instead.
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if settings.known_hosts:
        conn.client.get_host_keys().load(settings.known_hosts)
    host = settings.host_name
    try:
        conn.open()
    except paramiko.BadHostKeyException:
        raise TransportError(f"host key of {settings.address}:{settings.port} does not match known_hosts: "
                             "refusing to connect (was the host reinstalled, or is this not the host?)",
                             host=host) from None
    except paramiko.AuthenticationException as err:
        how = f"key {settings.key_file}" if settings.key_file else ("password" if settings.password else "default keys")
        raise AuthenticationFailed(f"SSH authentication to {settings.target} failed ({how}): {err}",
                                   host=host) from None
    except paramiko.ssh_exception.NoValidConnectionsError:
        raise HostUnreachable(f"cannot reach {settings.address}:{settings.port} over SSH (connection refused)",
                              host=host, transient=True) from None
    except TimeoutError:
        raise HostTimeout(f"SSH connection to {settings.address}:{settings.port} timed out after "
                          f"{settings.connect_timeout:g} s", host=host) from None
    except socket.gaierror as err:
        raise HostUnreachable(f"cannot resolve {settings.address}: {err}", host=host, transient=False) from None
    except paramiko.SSHException as err:
        text = str(err)
        if "known_hosts" in text:
            where = settings.known_hosts or "~/.ssh/known_hosts"
            raise TransportError(f"unknown SSH host key for {settings.address}:{settings.port}: add it to {where} "
                                 "(fleet_ssh_known_hosts) after checking it, e.g. with ssh-keyscan",
                                 host=host) from None
        raise TransportError(f"SSH to {settings.target} failed: {redact(text)}", host=host) from None
    except OSError as err:
        raise HostUnreachable(f"cannot reach {settings.address}:{settings.port} over SSH: {err}", host=host,
                              transient=True) from None
    return conn


class _LineWriter:
    """A file-like sink for fabric's output streams that hands complete lines to a callback."""

    def __init__(self, on_line: Callable[[str], None] | None) -> None:
        self.on_line = on_line
        self.lines: list[str] = []
        self._partial = ""

    def write(self, data: str) -> int:
        self._partial += data
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            self._emit(line)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = ""

    def _emit(self, line: str) -> None:
        line = redact(line.rstrip("\r"))
        self.lines.append(line)
        if self.on_line:
            self.on_line(line)


@dataclass(frozen=True)
class RemoteResult:
    """What a remote command did: its exit code and its output (stdout and stderr merged, redacted)."""

    exited: int
    output: str

    @property
    def ok(self) -> bool:
        return self.exited == 0


class SshSession:
    """One SSH connection: every remote action on the host goes through it (fabric's `Connection` stays in this
    module). Close it with `close()` or a `with` block."""

    def __init__(self, connection: Connection, host_name: str) -> None:
        self._connection = connection
        self.host_name = host_name

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
            on_output: Callable[[str], None] | None = None, timeout: float | None = None) -> RemoteResult:
        """Run `argv` on the host (quoted by `quote_command`), streaming merged output lines to `on_output`."""
        writer = _LineWriter(on_output)
        command = quote_command(argv, env=env, cwd=cwd, merge_stderr=True)
        try:
            result = self._connection.run(command, hide=True, warn=True, pty=False, in_stream=False,
                                          out_stream=writer, err_stream=writer, timeout=timeout)
        except Exception as err:  # noqa: BLE001 - invoke's CommandTimedOut, paramiko's socket errors, ...
            raise TransportError(f"remote command failed to run: {redact(str(err))}",
                                 host=self.host_name) from None
        writer.close()
        return RemoteResult(exited=result.exited, output="\n".join(writer.lines))

    def upload(self, data: bytes, remote_path: str) -> None:
        """Write `data` to `remote_path` over SFTP (OSError when the host refuses)."""
        self._connection.sftp().putfo(io.BytesIO(data), remote_path)

    def download(self, remote_path: str, local_path: str | Path) -> None:
        """Copy `remote_path` to `local_path` over SFTP (FileNotFoundError, OSError)."""
        self._connection.sftp().get(remote_path, str(local_path))

    def read_bytes(self, remote_path: str) -> bytes:
        """The file's bytes over SFTP (FileNotFoundError, OSError)."""
        with self._connection.sftp().open(remote_path, "r") as handle:
            return bytes(handle.read())

    def rename(self, source: str, target: str) -> None:
        """Atomically replace `target` with `source` over SFTP (posix-rename; OSError when the host refuses)."""
        self._connection.sftp().posix_rename(source, target)

    def remove(self, remote_path: str) -> None:
        """Remove a file over SFTP (FileNotFoundError, OSError)."""
        self._connection.sftp().remove(remote_path)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
