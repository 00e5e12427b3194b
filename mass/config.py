"""Strict dataclass configs: defaults <- YAML file <- `key.sub=value` overrides.

Each recipe declares one dataclass at the top of its file, built from `setting(...)` fields
(a default plus a help line) and `nested(...)` sub-configs. `load_config` merges, in order,
the dataclass defaults, an optional YAML file and the command-line overrides. Unknown keys and
values of the wrong type raise `MassError` naming the key, so a typo never passes silently.

    cfg = load_config(EvalConfig, "my-eval.yaml", ["sampling.temperature=0.7", "limit=20"])
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from mass.errors import MassError


def setting(default: Any, help: str) -> Any:
    """A config field with its help line (shown by `mass <command> --help`)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def nested(cls: type, help: str) -> Any:
    """A sub-config field: its keys are written `name.key`."""
    return dataclasses.field(default_factory=cls, metadata={"help": help})


def load_config(cls: type, yaml_path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Any:
    """Build `cls` from its defaults, then the YAML file, then `key.sub=value` overrides."""
    tree: dict[str, Any] = {}
    if yaml_path is not None:
        tree = _read_yaml(Path(yaml_path))
    for item in overrides:
        key, value = _parse_override(item)
        _set_path(tree, key.split("."), value, key)
    return _build(cls, tree, prefix="", default=cls())


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config, for JSON results and checkpoints."""
    return dataclasses.asdict(cfg)


def describe(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) for every leaf setting of `cls`, nested keys included. Defaults
    are read from a default instance, so a parent's own default for a sub-config shows."""
    rows = []
    hints = typing.get_type_hints(cls)
    defaults = cls() if defaults is None else defaults
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(hint):
            rows += describe(hint, prefix + f.name + ".", value)
            continue
        rows.append((prefix + f.name, _type_name(hint), repr(value), f.metadata.get("help", "")))
    return rows


def format_help(cls: type) -> str:
    """The settings table printed under `--help`."""
    rows = describe(cls)
    width = max(len(r[0]) for r in rows)
    lines = []
    for key, type_name, default, help_text in rows:
        lines.append(f"  {key:<{width}}  {help_text}")
        lines.append(f"  {'':<{width}}  [{type_name}, default {default}]")
    return "\n".join(lines)


# --- merging -------------------------------------------------------------------------------

def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MassError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise MassError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MassError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise MassError(f"override '{item}' must look like key=value (for example sampling.temperature=0.7)")
    key, raw = item.split("=", 1)
    key = key.strip().removeprefix("--")
    if not key:
        raise MassError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # a plain string such as a LaTeX snippet
    return key, value


def _set_path(tree: dict[str, Any], parts: list[str], value: Any, full_key: str) -> None:
    for part in parts[:-1]:
        child = tree.setdefault(part, {})
        if not isinstance(child, dict):
            raise MassError(f"config key '{full_key}': '{part}' is a setting, not a group")
        tree = child
    tree[parts[-1]] = value


def _build(cls: type, tree: dict[str, Any], prefix: str, default: Any) -> Any:
    """`default` (a `cls` instance: a field's own default, which may differ from `cls()`) with
    the settings of `tree` applied on top."""
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in tree.items():
        key = prefix + str(name)
        if name not in by_name:
            raise MassError(f"unknown config key '{key}'{_suggest(str(name), by_name, prefix)}")
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise MassError(f"config key '{key}' is a group of settings; set its keys as {key}.<name>=...")
            kwargs[name] = _build(hint, value, key + ".", default=getattr(default, name))
        else:
            kwargs[name] = _coerce(value, hint, key)
    try:
        return dataclasses.replace(default, **kwargs)
    except MassError:
        raise
    except (TypeError, ValueError) as e:
        raise MassError(f"invalid config{' ' + prefix.rstrip('.') if prefix else ''}: {e}") from None


def _suggest(name: str, by_name: dict[str, Any], prefix: str) -> str:
    close = difflib.get_close_matches(name, list(by_name), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except MassError as e:
                errors.append(str(e))
        raise MassError(f"config key '{key}' expects {_type_name(hint)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise MassError(f"config key '{key}' must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise MassError(f"config key '{key}' expects a list (for example {key}=[1,2]), got {value!r}")
        item_hint = args[0] if args else Any
        items = [_coerce(v, item_hint, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a path or model name that YAML read as a number
    else:
        raise TypeError(f"unsupported config type {hint!r} for '{key}'")
    raise MassError(f"config key '{key}' expects {_type_name(hint)}, got {value!r} ({type(value).__name__})")


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + "/".join(map(str, args))
    if origin in (list, tuple):
        return f"list[{_type_name(args[0]) if args else 'any'}]"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))
