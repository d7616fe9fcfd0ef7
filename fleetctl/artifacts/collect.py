"""Collecting an artifact built elsewhere: a local path or glob, a URL with a required sha256, or
`ssh://HOST/path` over SFTP. Each is checked, copied into dist/ and described by the same manifest as a build."""

from __future__ import annotations

import glob
import hashlib
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fleetctl.artifacts.errors import ArtifactError
from fleetctl.artifacts.manifest import (
    Manifest,
    artifact_filename,
    manifest_path,
    save_manifest,
    sha256_file,
    utc_now,
)
from fleetctl.artifacts.pe import inspect_executable
from fleetctl.config.connection import SshSettings
from fleetctl.config.project import Project
from fleetctl.config.redaction import redact
from fleetctl.transport import http, ssh

OutputCallback = Callable[[str], None]
_URL_TIMEOUT = 60.0
_CHUNK = 1 << 20


def find_single(pattern: str, base_dir: Path, *, key: str = "artifact.collect.path",
                project: Project | None = None, file: Path | None = None) -> Path:
    """The one file `pattern` (a path or glob, relative to `base_dir`) names; none or several is an error
    that lists what matched. With `project`, a match outside the project directory is an error too."""
    full = pattern if Path(pattern).is_absolute() else str(base_dir / pattern)
    matches = sorted(Path(p).resolve() for p in glob.glob(full, recursive=True) if Path(p).is_file())
    if project is not None:
        for match in matches:
            project.readable(match, base=base_dir, what="artifact", file=file, key=key)
    if not matches:
        raise ArtifactError(f"no file matches {pattern!r} (looked in {base_dir})", key=key)
    if len(matches) > 1:
        listed = "\n  ".join(str(m) for m in matches)
        raise ArtifactError(f"{pattern!r} matches {len(matches)} files, expected exactly one:\n  {listed}", key=key)
    return matches[0]


def collect_path(pattern: str, *, name: str, version: str, base_dir: Path, dist_dir: Path,
                 sha256: str | None = None, source: str = "collect:path",
                 key: str = "artifact.collect.path", on_output: OutputCallback | None = None,
                 project: Project | None = None, file: Path | None = None) -> Manifest:
    """Adopt the one file `pattern` names; `project` confines it to the project directory (a playbook's
    `collect.path`; deploy's `--artifact`, typed by the operator, is not confined)."""
    found = find_single(pattern, base_dir, key=key, project=project, file=file)
    if sha256 is not None:
        _check_sha256(sha256_file(found), sha256, str(found))
    if on_output:
        on_output(f"collected {found}")
    return adopt(found, name=name, version=version, dist_dir=dist_dir, source=source, key=key, copy=True)


def collect_url(url: str, sha256: str, *, name: str, version: str, dist_dir: Path,
                on_output: OutputCallback | None = None, size: int | None = None, ca_pem: str | None = None,
                token: str | None = None) -> Manifest:
    """Download `url` (http/https/file) into dist/, refusing it unless its sha256 (and `size`, when given) is the
    one given; `ca_pem` replaces the system's trust store for https, `token` is sent as a bearer token."""
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise ArtifactError(f"unsupported URL scheme {scheme!r}: expected http, https or file",
                            key="artifact.collect.url")
    dist_dir.mkdir(parents=True, exist_ok=True)
    partial = dist_dir / f".{name}-{version}.download"
    shown = redact(url)
    digest = hashlib.sha256()

    def write(data: bytes) -> None:
        digest.update(data)
        out.write(data)

    try:
        with open(partial, "wb") as out:
            received = http.download(url, write, _URL_TIMEOUT, chunk=_CHUNK, token=token, ca_pem=ca_pem,
                                     max_bytes=size)
    except http.DownloadFailed as err:
        partial.unlink(missing_ok=True)
        raise ArtifactError(f"download of {shown} failed: {err.reason}", key="artifact.collect.url") from None
    except OSError as err:  # dist/ not writable
        partial.unlink(missing_ok=True)
        raise ArtifactError(f"download of {shown} failed: {redact(str(err))}", key="artifact.collect.url") from None
    try:
        if size is not None and received != size:
            raise ArtifactError(f"size mismatch for {shown}: expected {size} bytes, got "
                                f"{'more' if received > size else received}; refusing it", key="artifact.collect.size")
        _check_sha256(digest.hexdigest(), sha256, shown)
        if on_output:
            on_output(f"downloaded {shown}, sha256 verified")
        return adopt(partial, name=name, version=version, dist_dir=dist_dir, source="collect:url",
                     key="artifact.collect.url", copy=False)
    finally:
        partial.unlink(missing_ok=True)


def parse_ssh_url(url: str) -> tuple[str, str]:
    """`ssh://HOST/abs/path` -> (HOST, /abs/path)."""
    parts = urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname or not parts.path or parts.path == "/":
        raise ArtifactError(f"expected ssh://HOST/absolute/path with HOST an inventory host, got {url!r}",
                            key="artifact.collect.ssh")
    return parts.netloc, parts.path


def collect_ssh(url: str, *, hostvars: Mapping[str, Any], name: str, version: str, dist_dir: Path,
                sha256: str | None = None, on_output: OutputCallback | None = None) -> Manifest:
    """Fetch `ssh://HOST/path` over SFTP into dist/ (and check the sha256 when one is given)."""
    host, remote_path = parse_ssh_url(url)
    settings = SshSettings.from_hostvars(host, hostvars)
    dist_dir.mkdir(parents=True, exist_ok=True)
    partial = dist_dir / f".{name}-{version}.download"
    conn = ssh.connect(settings)
    try:
        try:
            conn.download(remote_path, partial)
        except FileNotFoundError:
            raise ArtifactError(f"{remote_path} does not exist on {host}", key="artifact.collect.ssh") from None
        except OSError as err:
            raise ArtifactError(f"cannot fetch {remote_path} from {host} over SFTP: {err}",
                                key="artifact.collect.ssh") from None
    finally:
        conn.close()
    try:
        if sha256 is not None:
            _check_sha256(sha256_file(partial), sha256, url)
        if on_output:
            on_output(f"fetched {url} over SFTP")
        return adopt(partial, name=name, version=version, dist_dir=dist_dir, source="collect:ssh",
                     key="artifact.collect.ssh", copy=False)
    finally:
        partial.unlink(missing_ok=True)


def adopt(path: Path, *, name: str, version: str, dist_dir: Path, source: str, key: str, copy: bool) -> Manifest:
    """Put an executable into dist/ under its canonical name and write its manifest."""
    info = inspect_executable(path)
    if info is None:
        raise ArtifactError(f"{path} is not an executable (neither PE nor ELF)", key=key)
    dist_dir.mkdir(parents=True, exist_ok=True)
    final = dist_dir / artifact_filename(name, version, info.goos, info.goarch)
    if path.resolve() != final.resolve():
        if copy:
            shutil.copyfile(path, final)
        else:
            shutil.move(str(path), final)
    manifest = Manifest(
        name=name, version=version, sha256=sha256_file(final), size=final.stat().st_size, goos=info.goos,
        goarch=info.goarch, path=final.resolve(), build_time=utc_now(), source=source,
    )
    save_manifest(manifest, manifest_path(dist_dir, name, version))
    return manifest


def _check_sha256(actual: str, expected: str, what: str) -> None:
    if actual.lower() != expected.lower():
        raise ArtifactError(f"sha256 mismatch for {what}: expected {expected.lower()}, got {actual}; refusing it",
                            key="artifact.collect.sha256")
