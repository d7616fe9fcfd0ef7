"""Reading YAML files strictly, remembering the line of every mapping key so errors can point at it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleetctl.errors import ConfigError

KeyPath = tuple[str | int, ...]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records where each key and list item starts, and refuses duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[int, int] = {}  # id(node) -> line; resolved into KeyPath lines after construction


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ConfigError(
                f"duplicate key '{key}' (first at line {seen[key]})",
                line=key_node.start_mark.line + 1,
                key=str(key),
            )
        seen[key] = key_node.start_mark.line + 1
        result[key] = loader.construct_object(value_node, deep=deep)
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)  # type: ignore[arg-type]


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
