"""`deploy --dry-run --diff`: what a deploy would change in each host's service definition (binary path, arguments,
account, start type, recovery, environment, hosting) and in each rendered file, against what the host has now.

`diff_host(release, deployed)` is pure: the host's release as the deploy would install it (`rollout/release.py`,
the same value the deploy carries out) against `Get-FleetDeployed`'s answer. `read_diffs(prepared)` asks every
targeted host, read-only, in parallel (blue-green: the colour the deploy starts against the live one);
`read_rollback_diffs` does the same for the release a rollback returns to. Secrets never reach a diff: an environment variable whose name says
secret or whose value is a known secret shows as `***` on both sides (a changed one still shows as changed, a
removed variable never shows its old value); a file line that names a password/secret/token has its value
masked; everything else passes through redaction.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleetctl.config.redaction import is_secret_name, redact
from fleetctl.errors import ConfigError
from fleetctl.node.client import NodeClient
from fleetctl.node.fleet import run_parallel
from fleetctl.node.results import Deployed, DeployedService
from fleetctl.protocol.cmdline import join_command_line
from fleetctl.rollout.bluegreen import live_colour, other
from fleetctl.rollout.bluegreen_run import ColourSet
from fleetctl.rollout.host_steps import describe_error
from fleetctl.rollout.preparation import Connect, PreparedDeploy, PreparedRollback
from fleetctl.rollout.release import SERVICE_DEFINITION_FILE, Release, ServiceDefinition
from fleetctl.rollout.rollback_target import RollbackPlan

DIFF_MASK = "***"
# What Set-FleetService applies when a definition leaves a field out (FleetNode.psm1 and the lab alike).
DEFAULT_ACCOUNT = "LocalSystem"
DEFAULT_START_TYPE = "auto"
DEFAULT_RECOVERY_RESET_SECONDS = 86400
_SECRET_ASSIGNMENT = re.compile(
    r"((?:pass(?:word|wd)?|secret|token|api[_-]?key|private[_-]?key|credential)[^:=\n]*[:=]\s*)(\S.*)$",
    re.IGNORECASE)


@dataclass(frozen=True)
class FieldChange:
    """One field of the service definition: `old` None means not set now (a new service, an added variable),
    `new` None means removed. Values are already masked."""

    name: str
    old: str | None
    new: str | None
    secret: bool = False


@dataclass(frozen=True)
class FileChange:
    """One rendered file: `change` is added, removed or changed; `lines` its unified diff (masked) or a note."""

    path: str
    change: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class HostDiff:
    """What a deploy would change on one host; equal values are equal diffs (hosts are grouped by it)."""

    service_name: str
    service_exists: bool
    service: tuple[FieldChange, ...]
    files: tuple[FileChange, ...]

    @property
    def unchanged(self) -> bool:
        return not self.service and not self.files

    def to_json(self) -> dict[str, Any]:
        return {"service_name": self.service_name, "service_exists": self.service_exists,
                "unchanged": self.unchanged,
                "service": [{"field": c.name, "old": c.old, "new": c.new, "masked": c.secret} for c in self.service],
                "files": [{"path": f.path, "change": f.change, "diff": list(f.lines)} for f in self.files]}


@dataclass(frozen=True)
class HostDiffResult:
    """One host's diff, or why the host could not be read."""

    host: str
    diff: HostDiff | None
    error: str | None = None


def diff_json(result: HostDiffResult | None) -> dict[str, Any]:
    """A host's `--json` entry for --diff: `{"diff": ...}` (the diff, or `{"error": ...}`); empty without --diff."""
    if result is None:
        return {}
    return {"diff": result.diff.to_json() if result.diff is not None else {"error": result.error}}


def diff_host(release: Release, deployed: Deployed) -> HostDiff:
    """What deploying `release` changes on a host that has `deployed`. Pure."""
    wanted, have = release.service, deployed.service
    return HostDiff(wanted.name, have is not None, tuple(service_changes(wanted, have)),
                    tuple(file_changes(release, deployed)))


def service_changes(wanted: ServiceDefinition, have: DeployedService | None) -> list[FieldChange]:
    """The definition's fields that differ, in the order an operator reads a service (`have` None: all new)."""
    changes: list[FieldChange] = []

    def compare(name: str, new: Any, old: Any, *, fold_case: bool = False) -> None:
        new_text, old_text = _text(new), (None if have is None else _text(old))
        same = (new_text or "").lower() == (old_text or "").lower() if fold_case else new_text == old_text
        if not same:
            changes.append(FieldChange(name, None if old_text is None else redact(old_text),
                                       None if new_text is None else redact(new_text)))

    compare("binary path", wanted.binary_path, have and have.binary_path, fold_case=True)
    changes += _argument_changes(wanted.arguments, None if have is None else have.arguments)
    compare("display name", wanted.display_name or wanted.name, have and have.display_name)
    if wanted.description:  # Set-FleetService leaves the description alone when none is given
        compare("description", wanted.description, have and have.description)
    compare("account", wanted.account or DEFAULT_ACCOUNT, have and have.account, fold_case=True)
    compare("start type", wanted.start_type or DEFAULT_START_TYPE, have and have.start_type)
    compare("dependencies", ", ".join(wanted.dependencies), have and ", ".join(have.dependencies))
    compare("recovery", _recovery(wanted), have and _deployed_recovery(have))
    if wanted.stop_timeout_seconds and wanted.stop_timeout_seconds > 0:
        compare("stop timeout", f"{wanted.stop_timeout_seconds} s",
                have and (f"{have.stop_timeout_seconds} s" if have.stop_timeout_seconds else "not set"))
    compare("hosting", wanted.hosting, have and have.hosting)
    if wanted.hosting == "nssm":
        for label, new, old in (
                ("working directory", wanted.working_directory, have and have.working_directory),
                ("stdout", wanted.stdout_path, have and have.stdout_path),
                ("stderr", wanted.stderr_path, have and have.stderr_path),
                ("rotate bytes", wanted.rotate_bytes or 0, have and (have.rotate_bytes or 0)),
                ("restart delay ms", wanted.restart_delay_milliseconds or 0,
                 have and (have.restart_delay_milliseconds or 0)),
                ("throttle ms", wanted.throttle_milliseconds, have and have.throttle_milliseconds)):
            compare(label, new, old)
    changes += environment_changes(dict(wanted.environment), None if have is None else have.environment,
                                   None if have is None else have.environment_sha256)
    return changes


def environment_changes(wanted: Mapping[str, str], have: Mapping[str, str] | None,
                        have_sha256: Mapping[str, str] | None = None) -> list[FieldChange]:
    """Per variable: added, changed or removed, compared by the hash of the host's value where the host gives one
    (it may mask a secret's value). A secret shows as `***` on both sides; a removed variable's old value is never
    shown (nothing says whether it was a secret)."""
    old_env = dict(have or {})
    hashes = dict(have_sha256 or {})
    changes: list[FieldChange] = []
    for key in sorted(set(wanted) | set(old_env) | set(hashes)):
        new, old = wanted.get(key), old_env.get(key)
        present = key in old_env or key in hashes
        if key in hashes and new is not None:
            if hashlib.sha256(new.encode("utf-8")).hexdigest() == hashes[key]:
                continue
        elif new == old and (new is not None or not present):
            continue
        if not present:
            old = None
        name = f"environment {key}"
        if new is None:
            changes.append(FieldChange(name, "(set)", None))
            continue
        secret = is_secret_name(key) or _is_known_secret(new) or (old is not None and _is_known_secret(old))
        shown_old = None if old is None else (DIFF_MASK if secret else redact(old))
        changes.append(FieldChange(name, shown_old, DIFF_MASK if secret else redact(new), secret))
    return changes


def file_changes(release: Release, deployed: Deployed) -> list[FileChange]:
    """Each rendered file that is added, removed or changed, with a unified diff of its text (masked)."""
    wanted = {_key(path): (path, text) for path, text in release.files if path != SERVICE_DEFINITION_FILE}
    have = {_key(f.path): f for f in deployed.files if _key(f.path) != _key(SERVICE_DEFINITION_FILE)}
    changes: list[FileChange] = []
    for key in sorted(set(wanted) | set(have)):
        path = wanted[key][0] if key in wanted else have[key].path.replace("\\", "/")
        new_text = wanted[key][1] if key in wanted else None
        old = have.get(key)
        if old is None:
            changes.append(FileChange(path, "added", _unified(path, [], (new_text or "").splitlines())))
        elif new_text is None:
            changes.append(FileChange(path, "removed", (f"removed ({old.size} bytes)",)))
        elif old.text is None:
            if hashlib.sha256(new_text.encode("utf-8")).hexdigest() != old.sha256:
                note = f"changed (the host's copy, {old.size} bytes, is binary or over 256 KiB: not shown)"
                changes.append(FileChange(path, "changed", (note,)))
        elif old.text != new_text:
            changes.append(FileChange(path, "changed", _unified(path, old.text.splitlines(), new_text.splitlines())))
    return changes


def group_identical(results: Mapping[str, HostDiffResult]) -> list[tuple[tuple[str, ...], HostDiffResult]]:
    """Hosts whose diffs (or errors) are identical, together, in the order their first host was targeted."""
    groups: dict[tuple[HostDiff | None, str | None], list[str]] = {}
    for host, result in results.items():
        groups.setdefault((result.diff, result.error), []).append(host)
    return [(tuple(hosts), results[hosts[0]]) for hosts in groups.values()]


def read_diffs(prepared: PreparedDeploy, *, connect: Connect | None = None) -> dict[str, HostDiffResult]:
    """Ask every targeted host what it has now (read-only, in parallel) and diff it with its release. Blue-green:
    the colour the deploy would start, against the live colour (what serves the traffic it takes over)."""
    factory = connect or prepared.fleet.client_factory()
    colours = prepared.colours

    def one(host: str) -> HostDiffResult:
        release = prepared.releases[host]
        client = factory(host)
        try:
            if colours is not None:
                return HostDiffResult(host, _blue_green_diff(client, colours[host]))
            deployed = client.get_fleet_deployed(app=release.app, root=release.root,
                                                 service_name=release.service.name)
        except Exception as err:  # noqa: BLE001 - reported per host
            return HostDiffResult(host, None, describe_error(err))
        finally:
            client.close()
        return HostDiffResult(host, diff_host(release, deployed))

    return _each_host(list(prepared.plan.hosts), one, prepared.fleet.forks)


def _blue_green_diff(client: NodeClient, mine: ColourSet) -> HostDiff:
    """The release a blue-green deploy starts on this host (as `colour_changes` decides) against the live colour's
    service and release; on a host not yet on blue-green, against its single service (which blue replaces)."""
    plain, ref = mine.playbook.service.name, mine.releases["blue"]
    state = client.get_fleet_state(app=ref.app, root=ref.root, service_name=plain, proxy_port=mine.ports.listen)
    live = live_colour(state, mine.ports)
    info = state.colour(live) if live is not None else None
    if live is None or info is None:
        deployed = client.get_fleet_deployed(app=ref.app, root=ref.root, service_name=plain)
        return diff_host(mine.releases["blue"], deployed)
    running = info.service is not None and info.service.state == "Running"
    # The live colour already runs its release: the deploy changes nothing (compared with itself, drift shows).
    stays = info.release == mine.releases[live].id and running and state.live == live
    deployed = client.get_fleet_deployed(app=ref.app, root=ref.root, service_name=f"{plain}-{live}",
                                         release=info.release)
    return diff_host(mine.releases[live if stays else other(live)], deployed)


def read_rollback_diffs(prepared: PreparedRollback, plan: RollbackPlan, *,
                        connect: Connect | None = None) -> dict[str, HostDiffResult]:
    """--diff on a rollback dry run: for each host switching back, the release it returns to (its files and the
    definition kept with it, which the rollback restores) against what it has now; a host that stays changes
    nothing; a refused host says why."""
    if prepared.colours is not None:
        raise ConfigError("--diff is not available for a blue-green rollback (it switches the port proxy back to "
                          "the other colour, which keeps its own service and release): use --dry-run without --diff",
                          key="--diff")
    factory = connect or prepared.fleet.client_factory()

    def one(host: str) -> HostDiffResult:
        choice, ref = plan.choices[host], prepared.references[host]
        if choice.action == "stay":
            return HostDiffResult(host, HostDiff(ref.service.name, True, (), ()))
        if choice.action != "switch" or choice.target is None:
            return HostDiffResult(host, None, f"not rolled back: {choice.reason}")
        client = factory(host)
        try:
            now = client.get_fleet_deployed(app=ref.app, root=ref.root, service_name=ref.service.name)
            back = client.get_fleet_deployed(app=ref.app, root=ref.root, service_name=ref.service.name,
                                             release=choice.target)
        except Exception as err:  # noqa: BLE001 - reported per host
            return HostDiffResult(host, None, describe_error(err))
        finally:
            client.close()
        return HostDiffResult(host, diff_kept_release(ref, back, now))

    return _each_host(list(prepared.plan.hosts), one, prepared.fleet.forks)


def diff_kept_release(ref: Release, back: Deployed, now: Deployed) -> HostDiff:
    """What switching to the release `back` lists changes on a host that has `now`. Pure. The definition is the
    one kept in that release (without one, a rollback keeps the current definition: no service change); files the
    node could not show as text are left out on both sides."""
    texts = {f.path: f.text for f in back.files if f.text is not None}
    stored = texts.get(SERVICE_DEFINITION_FILE)
    definition: ServiceDefinition | None = None
    if stored is not None:
        try:
            definition = ServiceDefinition.from_public_json(json.loads(stored), password=ref.service.password)
        except (ValueError, KeyError, TypeError):
            definition = None
    release = Release(back.release or "", "", ref.app, ref.root, "", ref.exe_name, tuple(sorted(texts.items())),
                      definition or ref.service)
    unreadable = {_key(f.path) for f in back.files if f.text is None}
    files = tuple(c for c in file_changes(release, now) if _key(c.path) not in unreadable)
    service = () if definition is None else tuple(service_changes(definition, now.service))
    return HostDiff(release.service.name, now.service is not None, service, files)


def _each_host(hosts: list[str], one: Callable[[str], HostDiffResult], forks: int) -> dict[str, HostDiffResult]:
    outcomes = run_parallel(hosts, one, forks=forks)
    return {host: outcome.value if outcome.value is not None else HostDiffResult(host, None, outcome.error)
            for host, outcome in outcomes.items()}


def _argument_changes(new: Sequence[str], old: Sequence[str] | None) -> list[FieldChange]:
    if old is not None and tuple(new) == tuple(old):
        return []
    new_shown = [_masked_argument(a) for a in new]
    # An old argument where the new one is a secret is masked too: its old value may be the old secret.
    old_shown = None if old is None else [
        DIFF_MASK if i < len(new) and new_shown[i] != new[i] else _masked_argument(a) for i, a in enumerate(old)]
    secret = any(s != a for s, a in zip(new_shown, new, strict=True))
    return [FieldChange("arguments", None if old_shown is None else join_command_line(old_shown),
                        join_command_line(new_shown), secret)]


def _masked_argument(argument: str) -> str:
    return DIFF_MASK if _is_known_secret(argument) else argument


def _is_known_secret(value: str) -> bool:
    return redact(value) != value


def _recovery(wanted: ServiceDefinition) -> str:
    actions = list(wanted.recovery_actions)
    if not actions and wanted.recovery_restart_seconds:
        actions = [f"restart/{wanted.recovery_restart_seconds * 1000}"] * 3  # what Set-FleetService applies
    reset = wanted.recovery_reset_seconds if wanted.recovery_reset_seconds is not None \
        else DEFAULT_RECOVERY_RESET_SECONDS
    return _recovery_text(actions, reset)


def _deployed_recovery(have: DeployedService) -> str:
    return _recovery_text(list(have.recovery_actions), have.recovery_reset_seconds)


def _recovery_text(actions: list[str], reset: int | None) -> str:
    if not actions or all(a.startswith("none/") for a in actions):
        return "none"
    return f"{', '.join(actions)}; reset after {reset if reset is not None else '?'} s"


def _unified(path: str, old: list[str], new: list[str]) -> tuple[str, ...]:
    lines = difflib.unified_diff(old, new, fromfile=f"{path} (on the host)", tofile=f"{path} (this deploy)",
                                 lineterm="", n=3)
    return tuple(_mask_line(line) for line in lines)


def _mask_line(line: str) -> str:
    """A diff line with known secrets masked, and the value of anything that names a password/secret/token."""
    return _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + DIFF_MASK, redact(line))


def _key(path: str) -> str:
    # Windows paths: either separator, any case.
    return path.replace("\\", "/").lower()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)
