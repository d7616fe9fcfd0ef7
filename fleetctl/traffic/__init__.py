"""Traffic: the load balancers a rollout drains hosts from and returns them to (nginx, HAProxy over SSH).

`make_balancer(traffic, playbook_path, pool, ssh)` builds the balancer a playbook's `traffic:` section describes;
`Balancer` is what the rollout uses (repoint, prepare, drain, ready, move: blue-green's switch of a backend
between its colours' ports). The node-local port proxy of blue-green is a node operation (`Switch-FleetColour`),
not part of this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetctl.config.playbook import Traffic
from fleetctl.traffic.backends import Backend, BackendState, Pool
from fleetctl.traffic.balancers import Balancer, DrainResult, HaproxyBalancer, NginxBalancer
from fleetctl.traffic.config_file import ConfigFile, TemplateSource, command
from fleetctl.traffic.remote import BalancerError, BalancerHost
from fleetctl.transport.ssh import SshSettings


def balancer_settings(host_name: str, hostvars: Mapping[str, Any]) -> SshSettings:
    """How to reach the balancer's host: its inventory connection variables (ConfigError when wrong)."""
    return SshSettings.from_hostvars(host_name, hostvars)


def make_balancer(traffic: Traffic, playbook_path: Path, pool: Pool, ssh: SshSettings) -> Balancer:
    """The balancer of `traffic` (kind nginx or haproxy); reads the template now (ConfigError if it cannot)."""
    if traffic.kind not in ("nginx", "haproxy") or not traffic.config_path or not traffic.template:
        raise ValueError(f"traffic kind {traffic.kind!r} has no load balancer")
    host = BalancerHost(ssh)
    template = TemplateSource.read(playbook_path, traffic.template)
    if traffic.kind == "nginx":
        config = ConfigFile(host, traffic.config_path, template, command(traffic.check_command, ["nginx", "-t"]),
                            command(traffic.reload_command, ["nginx", "-s", "reload"]), "nginx")
        return NginxBalancer(config, pool, float(traffic.drain))
    config = ConfigFile(host, traffic.config_path, template,
                        command(traffic.check_command, ["haproxy", "-c", "-f", "{config}"]),
                        command(traffic.reload_command, []), "HAProxy")
    assert traffic.admin_socket is not None
    return HaproxyBalancer(config, pool, traffic.admin_socket, float(traffic.drain_timeout))


__all__ = ["Backend", "BackendState", "Balancer", "BalancerError", "BalancerHost", "DrainResult",
           "HaproxyBalancer", "NginxBalancer", "Pool", "balancer_settings", "make_balancer"]
