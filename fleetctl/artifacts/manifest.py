"""The artifact manifest: what was built or collected (name, version, sha256, platform, provenance), as a value
and as the JSON file written next to the artifact in `dist/`."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetctl.errors import ConfigError

MANIFEST_FORMAT = 1
# Versions end up in file names, in `-ldflags -X` (which Go splits on spaces) and in node paths.
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclass(frozen=True)
class Manifest:
    """One artifact ready to deploy. `path` is absolute; in the JSON file it is stored relative to it."""

    name: str
    version: str
    sha256: str
    size: int
    goos: str
    goarch: str
    path: Path
    go_version: str | None = None
    git_commit: str | None = None
    build_time: str = ""  # ISO 8601, UTC
    source: str = ""  # how it was produced: go, go@HOST, command, collect:path, collect:url, collect:ssh, artifact
    inputs_sha256: str | None = None  # fingerprint of the build inputs: equal means the build can be reused
    extras: tuple[str, ...] = field(default=())  # further outputs of a build.command, as produced
    url: str | None = None  # transfer: url: where the nodes download it (shown form); the controller has no copy

    def to_dict(self, *, relative_to: Path | None = None) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = MANIFEST_FORMAT
        data["extras"] = list(self.extras)
        path = self.path
        if relative_to is not None:
            path = Path(os.path.relpath(self.path, relative_to))
        data["path"] = str(path)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base_dir: Path) -> Manifest:
        required = ("name", "version", "sha256", "size", "goos", "goarch", "path")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["path"] = (base_dir / str(data["path"])).resolve()
        values["size"] = int(data["size"])
        values["extras"] = tuple(data.get("extras") or ())
        return cls(**values)

    def with_path(self, path: Path) -> Manifest:
        return replace(self, path=path)


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def check_version(version: str, *, key: str = "version") -> str:
    if not VERSION_PATTERN.match(version):
        raise ConfigError(
            f"version {version!r} is not usable: expected letters, digits and . _ + - (no spaces or slashes), "
            "starting with a letter or digit", key=key)
    return version


def artifact_filename(name: str, version: str, goos: str, goarch: str) -> str:
    """`dist/` file name of an artifact: `<name>-<version>-<goos>-<goarch>.exe` (no `.exe` off Windows)."""
    suffix = ".exe" if goos == "windows" else ""
    return f"{name}-{version}-{goos}-{goarch}{suffix}"


def manifest_path(dist_dir: Path, name: str, version: str) -> Path:
    return dist_dir / f"{name}-{version}.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_manifest(manifest: Manifest, path: Path) -> Path:
    """Write the manifest atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest.to_dict(relative_to=path.parent), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load_manifest(path: Path) -> Manifest:
    """Read a manifest file; a missing, unreadable or incomplete one is a `ConfigError` naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError("manifest file not found", file=path) from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"not a readable JSON manifest ({err})", file=path) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a JSON object", file=path)
    try:
        return Manifest.from_dict(data, base_dir=Path(path).resolve().parent)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"not a fleetctl artifact manifest: {err}", file=path) from None
