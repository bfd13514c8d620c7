"""The one configuration system: dataclasses, filled from defaults, an optional config file and CLI flags.

Precedence: command-line flag > config file (``--config FILE``, TOML or JSON) > dataclass default.
Unknown keys are rejected with the closest valid name, so a typo never passes silently, and every value is checked
against the type of its field (``batch_size = "abc"``, ``render = "no"``, ``tto = 5``, ``video_stride = 1.5`` are
errors that name the setting). Files are bounded: at most :data:`MAX_FILE_BYTES`, nested at most
:data:`MAX_DEPTH` levels, text values of at most :data:`MAX_TEXT_CHARS` characters; messages quote at most
:data:`QUOTE_CHARS` characters of a bad value.

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
import functools
import json
import math
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from metahmr_cli.errors import ConfigError

T = TypeVar("T")


MAX_FILE_BYTES = 16 * 1024 * 1024
"""Largest config (or imported JSON) file read."""
MAX_DEPTH = 32
"""Deepest nesting of tables / arrays accepted in a config or JSON file (settings nest 3 levels)."""
MAX_TEXT_CHARS = 10_000
"""Longest text value of a setting (paths included)."""
MAX_ITEMS = 1_000_000
"""Most items of a list setting (e.g. inputs)."""
QUOTE_CHARS = 100
"""Characters of a bad value quoted in a message."""


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, saying how long the value was when cut (for messages)."""
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    text = repr(value) if not isinstance(value, list | tuple | dict) or len(value) <= limit else \
        f"<{type(value).__name__} of {len(value):,} items>"
    return text if len(text) <= limit else text[:limit] + "..."


def _depth_exceeds(data: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` (iterative: a deep file cannot exhaust the stack here)."""
    stack = [(data, 1)]
    while stack:
        obj, depth = stack.pop()
        if isinstance(obj, dict | list | tuple):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (obj.values() if isinstance(obj, dict) else obj))
    return False


def parse_json_text(text: str | bytes, source: str, error: type[Exception] = ConfigError,
                    invalid: str = "is not valid JSON") -> Any:
    """``json.loads`` with the bounds of this module: a file nested deeper than :data:`MAX_DEPTH` levels is an
    ``error`` naming ``source`` (never a RecursionError); text that does not parse is ``f"{source} {invalid}: ..."``.
    """
    try:
        data = json.loads(text)
    except RecursionError:
        data = None
        deep = True
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{source} {invalid}: {exc}") from None
    else:
        deep = _depth_exceeds(data, MAX_DEPTH)
    if deep:
        raise error(f"{source} nests tables/arrays more than {MAX_DEPTH} levels deep; no valid file does. "
                    "Check that it is the right file.")
    return data


def read_bounded(path: Path, what: str, error: type[Exception] = ConfigError) -> bytes:
    """The bytes of a user file of at most :data:`MAX_FILE_BYTES` (larger: an ``error`` naming it)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror or exc}).") from None
    if size > MAX_FILE_BYTES:
        raise error(f"{what} {path} is {size / 2**20:.1f} MB; at most {MAX_FILE_BYTES // 2**20} MB are read. "
                    "Check that it is the right file.")
    return path.read_bytes()


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON (``.json``) config file into a dict.

    Raises:
        ConfigError: the file is missing, of another type, too large, nested too deep, or does not parse.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ConfigError(f"Config file {path}: use a .toml or .json file (got {path.suffix or 'no suffix'}).")
    text = read_bounded(path, "Config file")
    if suffix == ".json":
        data = parse_json_text(text, f"Config file {path}", invalid="does not parse")
    else:
        try:
            data = tomllib.loads(text.decode("utf-8"))
        except RecursionError:
            raise ConfigError(f"Config file {path} nests tables/arrays more than {MAX_DEPTH} levels deep; no valid "
                              "file does. Check that it is the right file.") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Config file {path} does not parse: {exc}") from None
        if _depth_exceeds(data, MAX_DEPTH):
            raise ConfigError(f"Config file {path} nests tables/arrays more than {MAX_DEPTH} levels deep; no valid "
                              "file does. Check that it is the right file.")
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a table/object at the top level.")
    return data


@functools.cache
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


def _describe(value: Any) -> str:
    """A bad value for a message: quoted (cut), with its kind."""
    kind = {bool: "true/false", int: "a whole number", float: "a number", str: "text", list: "a list",
            tuple: "a list", dict: "a table"}.get(type(value), type(value).__name__)
    return f"{quote(value)} ({kind})"


def _type_name(tp: Any) -> str:
    """What a field type accepts, in words."""
    tp = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a table"
    if _is_dataclass_type(tp):
        return "a table of settings"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text", Path: "a path"}.get(
        tp, getattr(tp, "__name__", str(tp)))


class _Mismatch(Exception):
    """A value does not fit a field type (turned into a ConfigError naming the field)."""


def _check_text(value: str, key: str) -> str:
    if len(value) > MAX_TEXT_CHARS:
        raise ConfigError(f"Setting {key}: the value is {len(value):,} characters long; at most {MAX_TEXT_CHARS:,} "
                          f"are allowed (got {quote(value)}).")
    return value


def _coerce_to(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to the field type ``tp`` (int -> float, list -> tuple, str -> Path ...); raises
    :class:`_Mismatch` when it does not fit."""
    if tp is Any or tp is typing.Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for alt in typing.get_args(tp):
            if alt is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce_to(value, alt, key)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise _Mismatch
        return value
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"Setting {key}: must be a finite number, got {quote(value)}.")
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str):
            return _check_text(value, key)
        raise _Mismatch
    if tp is Path:
        if isinstance(value, str | os.PathLike):
            return Path(_check_text(os.fspath(value), key))
        raise _Mismatch
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if origin is tuple and isinstance(value, str) and args[-1:] == (Ellipsis,) and args[0] is str:
            return _check_text(value, key)  # "a,b": the config's own validation splits it
        if origin is tuple and isinstance(value, str) and args[-1:] == (Ellipsis,) and args[0] in (int, float):
            # a flag's "256,384": numbers separated by commas
            value = [v.strip() for v in _check_text(value, key).split(",") if v.strip()]
            try:
                value = [args[0](v) for v in value]
            except ValueError:
                raise ConfigError(f"Setting {key}: expected numbers separated by commas, got {quote(value)}.") from None
        if not isinstance(value, list | tuple):
            raise _Mismatch
        if len(value) > MAX_ITEMS:
            raise ConfigError(f"Setting {key}: {len(value):,} items; at most {MAX_ITEMS:,} are allowed.")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"Setting {key}: expected {len(args)} values, got {len(value)} ({quote(value)}).")
            items = [_coerce_item(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce_item(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else list(items)
    if origin is dict:
        if isinstance(value, dict):
            return value
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value


def _coerce_item(value: Any, tp: Any, key: str) -> Any:
    try:
        return _coerce_to(value, tp, key)
    except _Mismatch:
        raise ConfigError(f"Setting {key}: expected {_type_name(tp)}, got {_describe(value)}.") from None


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against (and converted to) the type ``tp`` of the field ``key``.

    Raises:
        ConfigError: one line naming the field, what it accepts and (at most :data:`QUOTE_CHARS` characters of)
            the value.
    """
    if value is None or tp is None:
        return value
    return _coerce_item(value, tp, key)


def check_types(cfg: Any, prefix: str = "") -> None:
    """Check every field of the dataclass ``cfg`` (and of nested ones) against its type, converting in place
    where :func:`apply_overrides` would (int -> float, list -> tuple ...): the check of configs built in Python.

    Raises:
        ConfigError: naming the first field whose value does not fit.
    """
    types_ = _field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_types(value, prefix=f"{key}.")
            continue
        coerced = _coerce(value, types_.get(f.name), key)
        if coerced is not value:
            object.__setattr__(cfg, f.name, coerced)


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
            close = difflib.get_close_matches(key, sorted(names), n=1) if len(key) <= QUOTE_CHARS else []
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"Unknown setting {quote(prefix + key)}.{hint} Valid settings: "
                              f"{', '.join(sorted(names))}.")
        if value is None:
            continue
        current = getattr(cfg, key)
        field_type = _unwrap_optional(types_.get(key))
        if isinstance(value, dict) and (dataclasses.is_dataclass(current) or _is_dataclass_type(field_type)):
            base = current if dataclasses.is_dataclass(current) else field_type()
            changes[key] = apply_overrides(base, value, prefix=f"{prefix}{key}.")
        elif _is_dataclass_type(field_type) and not isinstance(value, field_type):
            raise ConfigError(f"Setting {prefix}{key}: expected a table of settings ([{prefix}{key}] in a TOML "
                              f"file, an object in JSON), got {_describe(value)}.")
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


def resolve_dtype(name: str):
    """``float32`` | ``float64`` | ``bfloat16`` | ``float16`` → torch dtype."""
    import torch

    table = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
             "float16": torch.float16}
    if name not in table:
        raise ConfigError(f"dtype {name!r}: use one of {', '.join(table)}.")
    return table[name]
