"""YAML inventories (`all`/`children`/`hosts`/`vars`) and the YAML/JSON loader shared with group_vars files.

The structure rules are Ansible's yaml inventory plugin's; where Ansible only warns (an unknown key, a group that
is not a mapping) we stop with a ConfigError, because a typo in an inventory must not silently drop hosts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from fleetctl.config.control_chars import has_control, printable
from fleetctl.config.inventory_data import InventoryBuilder, Where
from fleetctl.config.inventory_ranges import HostRangeError, expand_host_entry
from fleetctl.config.templating import UnsafeText
from fleetctl.config.yamlfile import check_node_limits
from fleetctl.errors import ConfigError

_SECTIONS = ("vars", "children", "hosts")
_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on big inventories


class InventoryLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe YAML plus Ansible's `!unsafe` (a value never templated); `!vault` is refused in `_vault`."""


def _unsafe(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return UnsafeText(loader.construct_scalar(node))
    return loader.construct_object(node, deep=True)


def _vault(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None, None, "Ansible Vault values (!vault) are not supported; use env('NAME') or file('path')",
        node.start_mark)


InventoryLoader.add_constructor("!unsafe", _unsafe)
InventoryLoader.add_constructor("!vault", _vault)


class YamlSyntaxError(ConfigError):
    """The text is not YAML at all (an extensionless inventory may then be INI)."""


def load_yaml_file(path: Path) -> Any:
    """Parse a YAML or JSON file; syntax errors become one ConfigError with the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read file: {err}", file=path) from None
    return parse_inventory_text(text, path)


def parse_inventory_text(text: str, path: Path) -> Any:
    """The YAML document in `text`, checked as every YAML file is (duplicate keys, nesting, alias expansion)."""
    try:
        loader = InventoryLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            check_node_limits(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except ConfigError as err:
        raise ConfigError(err.detail, file=path, line=err.line, key=err.key) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = err.problem or err.context or "invalid YAML"
        raise YamlSyntaxError(f"YAML syntax error: {problem}", file=path,
                              line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as err:
        raise YamlSyntaxError(f"YAML syntax error: {err}", file=path) from None


def line_of(path: Path, keys: Sequence[Any]) -> int | None:
    """The line of the mapping key at `keys` (a path from the document root); only called on the error path."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return None
    line: int | None = None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                line, node = k.start_mark.line + 1, v
                break
        else:
            break
    return line


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean"}.get(type(value), type(value).__name__)


def parse_yaml_inventory(path: Path, data: Any, builder: InventoryBuilder) -> None:
    """Add the groups and hosts of one already-loaded YAML inventory document to `builder`."""
    if data is None:
        raise ConfigError("inventory file is empty", file=path)
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of group names at the top level, got {_kind(data)}", file=path)
    if "plugin" in data:
        raise ConfigError("inventory plugin configurations are not supported; expected a static inventory",
                          file=path, line=line_of(path, ["plugin"]), key="plugin")
    for name, body in data.items():
        _parse_group(path, builder, name, body, (name,))


def _fail(path: Path, keys: tuple[Any, ...], message: str) -> ConfigError:
    return ConfigError(message, file=path, line=line_of(path, keys), key=".".join(str(k) for k in keys))


def _parse_group(path: Path, builder: InventoryBuilder, name: Any, body: Any, keys: tuple[Any, ...]) -> str:
    if not isinstance(name, str):
        raise _fail(path, keys, f"group names must be strings, got {_kind(name)}; quote it")
    if has_control(name):
        raise _fail(path, keys, f"group name {printable(name)!r} holds control or bidi characters")
    if body is not None and not isinstance(body, dict):
        raise _fail(path, keys, f"expected a group (a mapping with hosts/children/vars), got {_kind(body)}")
    builder.add_group(name, Where(path))
    if not body:
        return name
    for section, value in body.items():
        here = keys + (section,)
        if section not in _SECTIONS:
            raise _fail(path, here, "unknown key: a group may only have 'hosts', 'children' and 'vars'")
        if isinstance(value, str):
            value = {value: None}  # Ansible allows `hosts: web1` for a single host
        if value is None:
            continue
        if not isinstance(value, dict):
            raise _fail(path, here, f"expected a mapping, got {_kind(value)}")
        if section == "vars":
            for var, val in value.items():
                builder.set_group_var(name, var, val, Where(path))
        elif section == "children":
            for child, child_body in value.items():
                child_name = _parse_group(path, builder, child, child_body, here + (child,))
                builder.add_child(name, child_name, Where(path))
        else:
            _parse_hosts(path, builder, name, value, here)
    return name


def _parse_hosts(path: Path, builder: InventoryBuilder, group: str, hosts: dict[Any, Any],
                 keys: tuple[Any, ...]) -> None:
    for entry, host_vars in hosts.items():
        here = keys + (entry,)
        if not isinstance(entry, str):
            raise _fail(path, here, f"host names must be strings, got {_kind(entry)}; quote it")
        if has_control(entry):
            raise _fail(path, here, f"host name {printable(entry)!r} holds control or bidi characters")
        if host_vars is not None and not isinstance(host_vars, dict):
            raise _fail(path, here, f"expected the host's variables as a mapping, got {_kind(host_vars)}")
        try:
            names, port = expand_host_entry(entry)
        except HostRangeError as err:
            raise _fail(path, here, str(err)) from None
        where = Where(path, keys=here)
        for host in names:
            builder.add_host(host, group, port, where)
            if host_vars:
                for var, val in host_vars.items():
                    builder.set_host_var(host, var, val, where)
