"""Which hosts a playbook command acts on: the inventory, the playbook's `hosts:` pattern and `--limit`,
and each host's variables for rendering. Loading only: no host is contacted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetctl.config.connection import render_connection_vars
from fleetctl.config.environments import active_environment, extra_variables
from fleetctl.config.inventory import Host, Inventory, load_inventory
from fleetctl.config.playbook import (
    Playbook,
    PlaybookSource,
    load_playbook,
    merge_variables,
)
from fleetctl.config.sizes import Size
from fleetctl.config.templating import is_template, render_string
from fleetctl.errors import ConfigError
from fleetctl.plan import Plan, make_plan, parse_size_option


@dataclass(frozen=True)
class RolloutOverrides:
    """Command-line settings that override the playbook's `rollout:` section."""

    canary: str | None = None
    batch: str | None = None
    max_failed: str | None = None


@dataclass
class Targets:
    """A loaded playbook and the inventory hosts it acts on, in inventory order."""

    source: PlaybookSource
    inventory: Inventory
    hosts: list[Host]
    extra_vars: dict[str, Any]
    settings: Playbook  # host-independent sections rendered (artifact, rollout, ...), the environment's rollout on top
    environment: str | None = None  # the fleet.yml environment chosen with -E (its vars are in extra_vars)

    def host_variables(self, host: Host, builtins: dict[str, Any] | None = None) -> dict[str, Any]:
        """Variables for rendering the playbook on `host`: playbook vars < host vars < builtins < --var.

        Values stay unrendered: templates render them lazily, so a command only needs the variables it uses
        (`plan` needs no password from the environment)."""
        base = {"inventory_hostname": host.name, "group_names": [g for g in host.groups if g != "all"]}
        return merge_variables(self.source, dict(host.vars), self.extra_vars, {**base, **(builtins or {})})

    def host_value(self, host: Host, name: str, default: Any = None) -> Any:
        """One variable of `host`, rendered."""
        variables = self.host_variables(host)
        if name not in variables:
            return default
        value = variables[name]
        if isinstance(value, str) and is_template(value):
            return render_string(value, variables, source=f"inventory host {host.name}", key=name)
        return value

    def connection_vars(self, host: Host) -> dict[str, Any]:
        """The host's connection variables (`fleet_*`, `ansible_*`), rendered; only these, since other variables
        may need values a command does not have (e.g. `version` for `status`)."""
        return render_connection_vars(self.host_variables(host), source=f"inventory host {host.name}")

    def render_for(self, host: Host, builtins: dict[str, Any] | None = None) -> Playbook:
        return self.source.render(self.host_variables(host, builtins), host=host.name)


def load_targets(
    playbook: str | Path,
    inventories: Sequence[str | Path],
    *,
    limit: str | None = None,
    extra_vars: list[str] | None = None,
    builtins: dict[str, Any] | None = None,
) -> Targets:
    """Load the playbook and inventory and select the hosts; every problem is a ConfigError (exit 2). The
    environment chosen with -E adds its variables under `-e` and its rollout settings over the playbook's."""
    source = load_playbook(playbook)
    extra = extra_variables(extra_vars)
    environment = active_environment()
    settings = source.render_global(merge_variables(source, {}, extra, builtins))
    if environment is not None:
        settings = environment.apply_rollout(settings)
    inventory = load_inventory(list(inventories))
    selected = inventory.select(settings.hosts or "all")
    if limit is not None:
        if not limit.strip():
            raise ConfigError("expected a host pattern, got an empty one (omit --limit to target the playbook's "
                              "hosts)", key="--limit")
        limited = {h.name for h in inventory.select(limit)}
        selected = [h for h in selected if h.name in limited]
        if not selected:
            raise ConfigError(
                f"--limit '{limit}' matches no host of the playbook's hosts pattern '{settings.hosts}'",
                file=source.path,
                key="hosts",
            )
    return Targets(source=source, inventory=inventory, hosts=selected, extra_vars=extra, settings=settings,
                   environment=environment.name if environment is not None else None)


def plan_rollout(targets: Targets, overrides: RolloutOverrides) -> Plan:
    """Batches for a deploy or rollback of `targets`: the playbook's rollout settings, CLI overrides on top."""
    rollout = targets.settings.rollout
    batch = parse_size_option(overrides.batch, "--batch") or rollout.batch
    canary = parse_size_option(overrides.canary, "--canary") or rollout.canary
    max_failed = parse_size_option(overrides.max_failed, "--max-failed", allow_zero=True)
    if max_failed is None:
        max_failed = rollout.max_failed
    spread_values = None
    if rollout.spread_by:
        spread_values = {}
        for host in targets.hosts:
            spread_values[host.name] = targets.host_value(host, rollout.spread_by, "")
    return make_plan(
        [h.name for h in targets.hosts],
        batch=batch,
        canary=canary,
        max_failed=max_failed if isinstance(max_failed, Size) else None,
        spread_values=spread_values,
        spread_by=rollout.spread_by,
        canary_bake=float(rollout.canary_bake),
    )
