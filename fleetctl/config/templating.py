"""Jinja2 templating of inventory and playbook values: strict undefined, `env()`/`file()`, Ansible's common filters.

A value that is exactly one `{{ expression }}` keeps the expression's type (`"{{ base_port + 1 }}"` is an int),
as in Ansible; anything else renders to a string. Variables may refer to each other: `render_vars` resolves
them lazily, in any order, and reports loops.

Inventory values and playbooks come from git and reviewers, so templates run in Jinja2's sandbox (no attribute
walk to `os`, no huge repetitions) and `file()` reads only under the project directory (`project.py`).
Values read by `env()`/`file()` are registered as secrets, and so is anything rendered from a secret (taint):
an expression that read a secret-named variable, `env()`, `file()` or another tainted value, whatever filters
it went through (`lower`, `b64encode`, `replace`, `~` ...), and the whole value that holds it.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from jinja2 import (
    StrictUndefined,
    Template,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
    pass_context,
)
from jinja2.exceptions import SecurityError
from jinja2.nativetypes import NativeEnvironment
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from fleetctl.config.project import find_project
from fleetctl.config.redaction import is_secret_name, register_secret
from fleetctl.errors import ConfigError

_MARKERS = ("{{", "{%", "{#")


class UndefinedVariableError(ConfigError):
    """A template used a variable nobody defined; `message` is Jinja's ("'x' is undefined") with a guess."""

    def __init__(self, message: str, *, file: str | None, key: str | None, undefined: str) -> None:
        super().__init__(message, file=file, key=key)
        self.undefined = undefined  # "'x' is undefined (did you mean 'y'?)": what `plan` lists per host


class UnsafeText(str):
    """A string that must never be templated (YAML `!unsafe`), as in Ansible."""


def is_template(value: Any) -> bool:
    return isinstance(value, str) and not isinstance(value, UnsafeText) and any(m in value for m in _MARKERS)


def _to_bool(value: Any) -> bool:
    # Ansible's `bool` filter: the YAML/INI spellings of true, everything else false.
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value == 1
    return str(value).strip().lower() in ("yes", "on", "1", "true", "y", "t")


def _to_json(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, default=str, **kwargs)


def _to_nice_json(value: Any, indent: int = 4, **kwargs: Any) -> str:
    return json.dumps(value, default=str, indent=indent, sort_keys=True, **kwargs)


def _to_yaml(value: Any, **kwargs: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, **kwargs)


def _regex_replace(value: Any, pattern: str, replacement: str = "", ignorecase: bool = False) -> str:
    return re.sub(pattern, replacement, str(value), flags=re.IGNORECASE if ignorecase else 0)


def _mandatory(value: Any, msg: str | None = None) -> Any:
    return value  # StrictUndefined already fails on undefined input; kept so Ansible templates parse


def _ternary(value: Any, true_val: Any, false_val: Any, none_val: Any = None) -> Any:
    if value is None and none_val is not None:
        return none_val
    return true_val if value else false_val


class _Helpers:
    """`env()` and `file()`, bound to the source being rendered so errors can name it."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.key: str | None = None

    def on_secret(self) -> None:
        """Called whenever a secret is read; `_LazyVars` marks what is being rendered as tainted."""

    def env(self, name: str, default: Any = None) -> Any:
        value = os.environ.get(str(name))
        if value is None:
            if default is not None:
                return default  # the playbook's own text, not a secret
            raise ConfigError(f"env('{name}'): environment variable {name} is not set", file=self.source,
                              key=self.key)
        self.on_secret()
        register_secret(value)
        return value

    def file(self, path: str) -> str:
        self.on_secret()
        full = find_project(self.base_dir).readable(str(path), base=self.base_dir, what=f"file({str(path)!r}):",
                                                     file=self.source, key=self.key)
        try:
            text = full.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"file('{path}'): cannot read {full}: {err.strerror or err}", file=self.source,
                              key=self.key) from None
        # Like Ansible's file lookup: trailing newlines are not part of a password.
        value = text.rstrip()
        register_secret(value)
        return value


# Repetition (`'x' * n`, `[0] * n`) and powers beyond this are refused: a template is configuration, and one
# line of it must not eat the controller's memory.
_MAX_SIZE = 10_000_000


class _SandboxedNativeEnvironment(SandboxedEnvironment, NativeEnvironment):
    """Jinja2's sandbox (no `__globals__`/`__class__` walks, no unsafe method calls) with native result types."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > _MAX_SIZE:
                    raise SecurityError(f"repetition to {len(seq) * n} items is more than {_MAX_SIZE}")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 \
                and right * max(abs(left).bit_length(), 1) > 4096:
            raise SecurityError(f"{left} ** {right} is too large")
        return super().call_binop(context, operator, left, right)


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    # Called on each `{{ expression }}`'s value: one that read a secret is itself a secret.
    lazy = context.parent
    if isinstance(lazy, _LazyVars):
        lazy.expression_done(value)
    return value


def _environment() -> NativeEnvironment:
    env = _SandboxedNativeEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, finalize=_finalize)
    env.filters.update({
        "bool": _to_bool, "to_json": _to_json, "to_nice_json": _to_nice_json, "to_yaml": _to_yaml,
        "regex_replace": _regex_replace, "mandatory": _mandatory, "ternary": _ternary,
        "b64encode": lambda v: base64.b64encode(str(v).encode()).decode(),
        "b64decode": lambda v: base64.b64decode(str(v)).decode(),
        "basename": lambda v: os.path.basename(str(v)), "dirname": lambda v: os.path.dirname(str(v)),
        "quote": lambda v: "'" + str(v).replace("'", "'\"'\"'") + "'",
    })
    return env


_ENV = _environment()


# One `{{ expression }}` and nothing else: its value keeps its type.
_SINGLE_EXPRESSION = re.compile(r"^\{\{((?:(?!\{\{|\}\}|\{%|\{#).)*)\}\}$", re.DOTALL)
_RESULT = "__fleetctl_result"


@functools.lru_cache(maxsize=4096)
def _compile(template: str) -> tuple[Template, bool]:
    # The same group template is rendered once per host; compiling it once saves most of the time.
    m = _SINGLE_EXPRESSION.match(template)
    if m:
        # Jinja folds constant output to text (`{{ 1 + 2 }}` yields '3'); an assignment keeps the native value.
        return _ENV.from_string("{% set " + _RESULT + " = (" + m.group(1) + ") %}"), True
    return _ENV.from_string(template), False


def _evaluate(template: str, variables: Mapping[str, Any]) -> Any:
    compiled, single = _compile(template)
    context = compiled.new_context(variables, shared=True)  # type: ignore[arg-type]
    parts = list(compiled.root_render_func(context))
    if single:
        value = context.vars[_RESULT]
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()
        return value
    # str() of a StrictUndefined raises UndefinedError, which the caller reports.
    return "".join(str(p) for p in parts)


# A tainted value longer than this is not registered whole (the expressions in it still are): the registry is
# one regex, and a rendered config file of 100 KB would slow every line of output for nothing.
_MAX_WHOLE_SECRET = 65536


def _register_tainted(value: Any) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _register_tainted(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _register_tainted(item)
    elif value is not None and not isinstance(value, bool) and len(str(value)) <= _MAX_WHOLE_SECRET:
        register_secret(value)


class _LazyVars(Mapping[str, Any]):
    """The variables a template sees: each is rendered on first use, so order of definition does not matter.

    Taint: `_secret_reads` counts reads of secrets (a secret-named or tainted variable, `env()`, `file()`).
    A render during which it moved produced a secret; so did each `{{ expression }}` during which it moved
    (`expression_done`), which catches a derived secret inside a long text."""

    def __init__(self, raw: Mapping[str, Any], helpers: _Helpers) -> None:
        self._raw = raw
        self._helpers = helpers
        self._done: dict[str, Any] = {}
        self._tainted: set[str] = set()
        self._active: list[str] = []
        self._secret_reads = 0
        self._outputs: list[int] = []  # per active render: `_secret_reads` at its last expression
        helpers.on_secret = self._secret_read  # type: ignore[method-assign]
        self._globals = {**_ENV.globals, "env": helpers.env, "file": helpers.file}

    def _secret_read(self) -> None:
        self._secret_reads += 1

    def expression_done(self, value: Any) -> None:
        if self._outputs and self._outputs[-1] != self._secret_reads:
            _register_tainted(value)
            self._outputs[-1] = self._secret_reads

    def __getitem__(self, key: str) -> Any:
        if key in self._done:
            if key in self._tainted:
                self._secret_read()
            return self._done[key]
        if key not in self._raw:
            return self._globals[key]
        if key in self._active:
            chain = " -> ".join(self._active[self._active.index(key):] + [key])
            raise ConfigError(f"variables refer to each other in a loop: {chain}", file=self._helpers.source,
                              key=self._active[0])
        self._active.append(key)
        reads = self._secret_reads
        try:
            value = self._render(self._raw[key], key)
        finally:
            self._active.pop()
        if is_secret_name(key) or reads != self._secret_reads:
            self._tainted.add(key)
            _register_tainted(value)
            self._secret_read()  # whoever asked for it now holds a secret
        self._done[key] = value
        return value

    def _suggest_variable(self, message: str | None) -> str:
        """For "'prot' is undefined": the nearest variable this render could see."""
        from fleetctl.config.suggest import did_you_mean

        found = re.match(r"^'([A-Za-z_][A-Za-z0-9_]*)' is undefined$", message or "")
        return did_you_mean(found.group(1), self._raw) if found else ""

    def _render(self, value: Any, key: str) -> Any:
        if isinstance(value, str):
            return self.render(value, key) if is_template(value) else value
        if isinstance(value, dict):
            return {k: self._render(v, f"{key}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self._render(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return value

    def render(self, template: str, key: str) -> Any:
        helpers = self._helpers
        outer, helpers.key = helpers.key, key
        reads = self._secret_reads
        self._outputs.append(reads)
        try:
            value = _evaluate(template, self)
        except ConfigError:
            raise
        except SecurityError as err:
            raise ConfigError(f"template {template!r} does something templates may not do: {err}",
                              file=helpers.source, key=key) from None
        except UndefinedError as err:
            undefined = f"{err.message}{self._suggest_variable(err.message)}"
            raise UndefinedVariableError(f"undefined variable in template {template!r}: {undefined}",
                                         file=helpers.source, key=key, undefined=undefined) from None
        except TemplateSyntaxError as err:
            raise ConfigError(f"template syntax error in {template!r}: {err.message}", file=helpers.source,
                              key=key) from None
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as err:
            raise ConfigError(f"cannot render template {template!r}: {err}", file=helpers.source,
                              key=key) from None
        finally:
            helpers.key = outer
            self._outputs.pop()
        if reads != self._secret_reads:
            _register_tainted(value)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._done or key in self._raw or key in self._globals

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def render_string(template: str, variables: Mapping[str, Any], *, source: str, key: str,
                  base_dir: Path | None = None) -> Any:
    """Render one value against `variables` (themselves rendered as needed); ConfigError names source/key."""
    if not is_template(template):
        return template
    lazy = _LazyVars(variables, _Helpers(source, base_dir or Path.cwd()))
    return lazy.render(template, key)


def render_vars(variables: Mapping[str, Any], *, source: str, base_dir: Path | None = None) -> dict[str, Any]:
    """Every variable with its templates resolved (recursively, in any order); loops are a ConfigError."""
    lazy = _LazyVars(variables, _Helpers(source, base_dir or Path.cwd()))
    return {key: lazy[key] for key in variables}


def template_strings(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every templated string in a YAML tree, with its key path (for checking them one by one)."""
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from template_strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from template_strings(v, (*path, i))
