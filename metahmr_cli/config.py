"""The one configuration system: dataclasses, filled from defaults, an optional config file and CLI flags.

Precedence: command-line flag > config file (``--config FILE``, TOML or JSON) > dataclass default.
Unknown keys are rejected with the closest valid name, so a typo never passes silently.

Example config file for ``metahmr process --config run.toml``::

    device = "cuda"
    batch_size = 32
    [tto]
    schedule = "metahmr"
    max_steps = 14
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from metahmr_cli.errors import ConfigError

T = TypeVar("T")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON (``.json``) config file into a dict.

    Raises:
        ConfigError: the file is missing, of another type, or does not parse.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    text = path.read_bytes()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() == ".toml":
            data = tomllib.loads(text.decode("utf-8"))
        else:
            raise ConfigError(f"Config file {path}: use a .toml or .json file (got {path.suffix or 'no suffix'}).")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Config file {path} does not parse: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a table/object at the top level.")
    return data


def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - unresolved forward references
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert simple file/CLI values to the field's type (paths, tuples, numbers); validate Literals."""
    tp = _unwrap_optional(tp)
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, allowed))}.")
        return value
    if tp is Path:
        return Path(value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def apply_overrides(cfg: T, overrides: dict[str, Any], *, prefix: str = "") -> T:
    """Return a copy of the dataclass ``cfg`` with ``overrides`` applied.

    ``overrides`` may be nested dicts (``{"tto": {"max_steps": 5}}``) or dotted keys (``{"tto.max_steps": 5}``).
    Values that are ``None`` are ignored (an unset CLI flag).

    Raises:
        ConfigError: a key does not exist (the message names the closest valid key) or a value is not allowed.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError("apply_overrides expects a dataclass instance")
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if "." in key:
            head, rest = key.split(".", 1)
            nested.setdefault(head, {})
            if not isinstance(nested[head], dict):
                raise ConfigError(f"{prefix}{head}: cannot set both {head} and {key}.")
            nested[head][rest] = value
        else:
            if isinstance(value, dict) and isinstance(nested.get(key), dict):
                nested[key].update(value)
            else:
                nested[key] = value
    names = {f.name for f in dataclasses.fields(cfg)}
    types_ = _field_types(type(cfg))
    changes: dict[str, Any] = {}
    for key, value in nested.items():
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"Unknown setting {prefix}{key!r}.{hint} Valid settings: {', '.join(sorted(names))}.")
        if value is None:
            continue
        current = getattr(cfg, key)
        field_type = _unwrap_optional(types_.get(key))
        if isinstance(value, dict) and (dataclasses.is_dataclass(current) or _is_dataclass_type(field_type)):
            base = current if dataclasses.is_dataclass(current) else field_type()
            changes[key] = apply_overrides(base, value, prefix=f"{prefix}{key}.")
        else:
            changes[key] = _coerce(value, types_.get(key), f"{prefix}{key}")
    return dataclasses.replace(cfg, **changes)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a (nested) dataclass config; paths become strings."""

    def convert(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: convert(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, Path):
            return str(obj)
        if isinstance(obj, dict):
            return {str(k): convert(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [convert(v) for v in obj]
        if isinstance(obj, float | int | str | bool) or obj is None:
            return obj
        return str(obj)

    return convert(cfg)


def build_config(cls: type[T], config_file: str | Path | None = None, **cli_overrides: Any) -> T:
    """Defaults < config file < CLI flags (flags left as ``None`` do not override)."""
    cfg = cls()
    if config_file is not None:
        cfg = apply_overrides(cfg, load_config_file(config_file))
    return apply_overrides(cfg, {k: v for k, v in cli_overrides.items() if v is not None})


def resolve_device(device: str = "auto") -> str:
    """Map ``auto`` to ``cuda`` when a GPU is visible, else ``cpu``; validate explicit choices."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} was asked for but no CUDA device is visible; use --device cpu.")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise ConfigError(f"--device {device!r}: use auto, cpu, cuda or cuda:N.")
    return device


def resolve_dtype(name: str):
    """``float32`` | ``float64`` | ``bfloat16`` | ``float16`` → torch dtype."""
    import torch

    table = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
             "float16": torch.float16}
    if name not in table:
        raise ConfigError(f"dtype {name!r}: use one of {', '.join(table)}.")
    return table[name]
