"""The one entry point deploy and `fleetctl build` call: produce the playbook's artifact (build it locally or on
a build host, collect it, or take the one given with `--artifact`) and return its manifest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fleetctl.artifacts.build import build_command, build_go
from fleetctl.artifacts.collect import collect_path, collect_ssh, collect_url, parse_ssh_url
from fleetctl.artifacts.errors import ArtifactError
from fleetctl.artifacts.manifest import Manifest, load_manifest, sha256_file
from fleetctl.artifacts.remote_build import build_go_remote
from fleetctl.artifacts.url_artifact import read_ca_pem
from fleetctl.artifacts.version import resolve_version
from fleetctl.config.inventory import Inventory
from fleetctl.config.playbook import Playbook
from fleetctl.config.project import find_project
from fleetctl.config.redaction import register_secret
from fleetctl.config.templating import render_vars
from fleetctl.errors import ConfigError

OutputCallback = Callable[[str], None]


# The loaded inventory, or a plain mapping of host name -> already rendered variables.
InventoryLike = Inventory | Mapping[str, Mapping[str, Any]]


def produce_artifact(
    playbook: Playbook,
    *,
    version: str | None = None,
    artifact: str | Path | None = None,
    inventory: InventoryLike | None = None,
    dist_dir: Path | None = None,
    on_output: OutputCallback | None = None,
    force: bool = False,
) -> Manifest:
    """Build or collect the playbook's artifact into `dist_dir` (default ./dist) and return its manifest.

    `artifact` (deploy's `--artifact PATH`) skips both: an executable is adopted as is, a manifest `.json` is
    loaded and its artifact's sha256 re-checked. `force` rebuilds even when the inputs are unchanged.
    """
    spec = playbook.artifact
    name = spec.name or playbook.name
    base = playbook.base_dir
    dist = (dist_dir or Path.cwd() / "dist").resolve()
    if artifact is not None:
        return _given_artifact(Path(artifact), name=name, version=version, spec_version=spec.version, base=base,
                               dist=dist, on_output=on_output)
    if spec.build is not None and spec.build.go is not None:
        go = spec.build.go
        ver = resolve_version(version, spec.version, (base / go.dir).resolve() if (base / go.dir).is_dir() else base)
        if go.host:
            return build_go_remote(go, host=go.host, hostvars=_host_vars(inventory, go.host, "artifact.build.go.host"),
                                   name=name, version=ver, base_dir=base, dist_dir=dist, on_output=on_output,
                                   force=force)
        return build_go(go, name=name, version=ver, base_dir=base, dist_dir=dist, on_output=on_output, force=force)
    ver = resolve_version(version, spec.version, base)
    if spec.build is not None and spec.build.command is not None:
        return build_command(spec.build.command, name=name, version=ver, base_dir=base, dist_dir=dist,
                             on_output=on_output)
    collect = spec.collect
    if collect is None:
        raise ConfigError("give artifact.build or artifact.collect", file=playbook.path, key="artifact")
    if collect.path:
        return collect_path(collect.path, name=name, version=ver, base_dir=base, dist_dir=dist,
                            sha256=collect.sha256, on_output=on_output, project=find_project(base),
                            file=playbook.path)
    if collect.url:
        if not collect.sha256:
            raise ConfigError("'sha256' is required with 'url'", file=playbook.path, key="artifact.collect.sha256")
        ca_pem = read_ca_pem(playbook, collect.ca) if collect.ca else None
        register_secret(collect.token)
        return collect_url(collect.url, collect.sha256, name=name, version=ver, dist_dir=dist, on_output=on_output,
                           size=collect.size, ca_pem=ca_pem, token=collect.token)
    if collect.ssh:
        host, _ = parse_ssh_url(collect.ssh)
        return collect_ssh(collect.ssh, hostvars=_host_vars(inventory, host, "artifact.collect.ssh"), name=name,
                           version=ver, dist_dir=dist, sha256=collect.sha256, on_output=on_output)
    raise ConfigError("give one of path, url or ssh", file=playbook.path, key="artifact.collect")


def _given_artifact(path: Path, *, name: str, version: str | None, spec_version: str | None, base: Path,
                    dist: Path, on_output: OutputCallback | None) -> Manifest:
    if path.suffix == ".json":
        manifest = load_manifest(path)
        if not manifest.path.is_file():
            raise ArtifactError(f"the manifest's artifact {manifest.path} is missing", key="--artifact")
        if sha256_file(manifest.path) != manifest.sha256:
            raise ArtifactError(f"{manifest.path} does not match the sha256 in {path}: changed since it was built",
                                key="--artifact")
        return manifest
    ver = resolve_version(version, spec_version, base)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist", key="--artifact")
    return collect_path(str(path.resolve()), name=name, version=ver, base_dir=Path.cwd(), dist_dir=dist,
                        source="artifact", key="--artifact", on_output=on_output)


def _host_vars(inventory: InventoryLike | None, host: str, key: str) -> Mapping[str, Any]:
    if inventory is None:
        raise ConfigError(f"host {host!r} is an inventory host: give an inventory (-i) that defines it", key=key)
    if isinstance(inventory, Mapping):
        if host not in inventory:
            raise ConfigError(f"host {host!r} is not in the inventory", key=key)
        return inventory[host]
    found = inventory.host(host)  # ConfigError naming the inventory when missing
    return render_vars(dict(found.vars), source=f"inventory host {host}")
