"""Reading YAML files strictly, remembering the line of every mapping key so errors can point at it.

Strictly means: a key written twice in one mapping is an error (YAML says keys are unique; PyYAML keeps the last
one silently), and so is a document nested deeper than `MAX_DEPTH` or whose aliases expand it by more than
`MAX_ALIAS_EXPANSION` values (the "billion laughs": 700 bytes that print as a gigabyte). Every YAML file fleetctl
reads goes through these checks (`check_mapping_keys`, `check_node_limits`); the inventory loader shares them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleetctl.errors import ConfigError

KeyPath = tuple[str | int, ...]


MAX_DEPTH = 64  # mappings and lists inside each other; real playbooks and inventories use fewer than 10
MAX_ALIAS_EXPANSION = 100_000  # values that aliases add to a document when it is expanded
_MERGE_TAG = "tag:yaml.org,2002:merge"
_CBase: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed


def check_mapping_keys(node: yaml.MappingNode) -> None:
    """Refuse a key written twice in one mapping. Keys that a merge (`<<: *defaults`) brings in may be
    overridden, as YAML's merge key intends; only the mapping's own keys must be unique."""
    seen: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        ident = (key_node.tag, key_node.value)
        line = key_node.start_mark.line + 1
        if ident in seen:
            raise ConfigError(f"duplicate key '{key_node.value}' (first at line {seen[ident]}); YAML keys must be "
                              "unique, and which one would win is not obvious", line=line, key=key_node.value)
        seen[ident] = line


def check_node_limits(root: yaml.Node) -> None:
    """Refuse documents nested deeper than MAX_DEPTH, with recursive aliases, or whose aliases expand them by more
    than MAX_ALIAS_EXPANSION values; duplicate keys too (`check_mapping_keys`). Iterative: no recursion limit."""
    size: dict[int, int] = {}  # id(node) -> values in its expansion
    distinct = 0
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    active: set[int] = set()
    while stack:
        node, depth, done = stack.pop()
        ident = id(node)
        if done:
            active.discard(ident)
            children = _children(node)
            size[ident] = 1 + sum(size[id(c)] for c in children)
            continue
        if ident in size:
            continue
        if ident in active:
            raise ConfigError("an alias refers to the value that contains it (a recursive alias)",
                              line=node.start_mark.line + 1)
        if depth > MAX_DEPTH:
            raise ConfigError(f"nested more than {MAX_DEPTH} levels deep", line=node.start_mark.line + 1)
        distinct += 1
        if isinstance(node, yaml.MappingNode):
            check_mapping_keys(node)
        elif isinstance(node, yaml.ScalarNode) and "\x00" in node.value:
            # Windows APIs end a string at NUL: what a node saw would not be what the file says.
            path = _path_to(root, node)
            raise ConfigError("the value holds a NUL character", line=node.start_mark.line + 1,
                              key=".".join(str(p) for p in path) if path else None)
        active.add(ident)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) in active:
                raise ConfigError("an alias refers to the value that contains it (a recursive alias)",
                                  line=child.start_mark.line + 1)
            stack.append((child, depth + 1, False))
    added = size[id(root)] - distinct
    if added > MAX_ALIAS_EXPANSION:
        raise ConfigError(f"aliases expand this document by {added} values (at most {MAX_ALIAS_EXPANSION}): "
                          "an alias bomb? write the values out or use fewer nested aliases")


def _path_to(root: yaml.Node, target: yaml.Node) -> KeyPath | None:
    """The key path from `root` to `target` (error path only)."""
    stack: list[tuple[yaml.Node, KeyPath]] = [(root, ())]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                stack.append((key_node, path + (name,)))
                stack.append((value_node, path + (name,)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, path + (i,)) for i, item in enumerate(node.value))
    return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _LineLoader(_CBase):  # type: ignore[misc, valid-type]
    """Safe YAML (libyaml's parser when installed, which also caps nesting); `parse_yaml` checks the composed
    document with `check_node_limits` before constructing it."""


@dataclass
class YamlDocument:
    """A parsed YAML file and the line where each key path starts."""

    path: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, key_path: KeyPath) -> int | None:
        """The line of the deepest known prefix of `key_path`."""
        for end in range(len(key_path), -1, -1):
            line = self.lines.get(tuple(key_path[:end]))
            if line is not None:
                return line
        return None


def _index_lines(node: yaml.Node, prefix: KeyPath, lines: dict[KeyPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                path = prefix + (key_node.value,)
                lines[path] = key_node.start_mark.line + 1
                _index_lines(value_node, path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = prefix + (i,)
            lines[path] = item.start_mark.line + 1
            _index_lines(item, path, lines)


def load_yaml(path: str | Path, *, what: str = "YAML file") -> YamlDocument:
    """Parse one YAML file; every problem becomes a ConfigError naming the file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", file=p) from None
    except IsADirectoryError:
        raise ConfigError(f"expected a {what}, found a directory", file=p) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text ({err.reason})", file=p) from None
    except OSError as err:
        raise ConfigError(f"cannot read {what}: {err.strerror}", file=p) from None
    return parse_yaml(text, p)


def parse_yaml(text: str, path: Path) -> YamlDocument:
    try:
        loader = _LineLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                check_node_limits(node)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except ConfigError as err:
        raise ConfigError(err.detail, file=path, line=err.line, key=err.key) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = err.problem or "invalid YAML"
        context = f" {err.context}" if err.context else ""
        raise ConfigError(
            f"YAML syntax error: {problem}{context}", file=path, line=(mark.line + 1) if mark else None
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"YAML syntax error: {err}", file=path) from None
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    return YamlDocument(path=path, data=data, lines=lines)
