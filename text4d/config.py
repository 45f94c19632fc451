"""Structured configs: dataclass schemas + YAML files + ``key=value`` overrides.

Every command takes ``--config FILE`` and dotlist overrides (as the seeds'
``input=... radius=2``). OmegaConf merges them onto the dataclass schema, so an
unknown key or a value of the wrong type is an error that names the key,
before any work starts. The same validation serves live edits from the viewer
(:func:`set_value`), with optional bounds declared once in field metadata::

    lambda_rgb: float = field(default=10000.0, metadata={"min": 0.0, "help": "..."})
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from text4d.errors import ConfigError

T = TypeVar("T")
# The presets shipped with text4d (configs/dynamic/4d.yaml, configs/recon/dnerf.yaml, ...): one place that knows where.
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
_ABSENT = object()


def _describe(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None)
    msg = str(e).splitlines()[0]
    return f"config key '{key}': {msg}" if key else msg


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
    """Build a ``schema`` instance from defaults, then the YAML file, then dotlist overrides.

    A bad value is reported with where it came from: the YAML file, or the command line item
    (``key=value``) that set it, so the user fixes the right one.
    """
    merged = OmegaConf.structured(schema)
    overrides = list(overrides or [])
    yaml_layer = None
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            yaml_layer = OmegaConf.load(path)
        except Exception as e:  # yaml.YAMLError and friends, whatever the YAML library raises
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        try:
            merged = OmegaConf.merge(merged, yaml_layer)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{_describe(e)} (in {path})") from e
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value")

    def source(key: str) -> str:
        """Where the value of ``key`` came from, as the end of an error message."""
        for item in reversed(overrides):  # the last override of a key is the one that counts
            name = item.split("=", 1)[0].strip()
            if key == name or key.startswith((name + ".", name + "[")) or name.startswith(key + "."):
                return f" (command line override {item})"
        if yaml_layer is not None and OmegaConf.select(yaml_layer, key, default=_ABSENT) is not _ABSENT:
            return f" (in {path})"
        return ""

    if overrides:
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(overrides))
        except OmegaConfBaseException as e:
            where = source(str(getattr(e, "full_key", "") or "")) or f" (command line overrides {' '.join(overrides)})"
            raise ConfigError(_describe(e) + where) from e
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e) + source(str(getattr(e, "full_key", "") or ""))) from e
    if not isinstance(cfg, schema):  # what to_object makes of a structured config (typed as any container)
        raise TypeError(f"OmegaConf built a {type(cfg).__name__}, not a {schema.__name__}")
    validate(cfg, source=source)
    return cfg


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def _field(cfg: Any, key: str) -> tuple[Any, dataclasses.Field]:
    """Resolve a dotted key to (owning dataclass instance, its field)."""
    obj = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        if not dataclasses.is_dataclass(obj) or not hasattr(obj, part):
            raise ConfigError(f"unknown config key '{key}'")
        obj = getattr(obj, part)
    fields = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
    if parts[-1] not in fields:
        raise ConfigError(f"unknown config key '{key}'")
    return obj, fields[parts[-1]]


def _check_bounds(key: str, value: Any, meta: Any, where: str = "") -> None:
    """Raise when ``value`` breaks the field's declared bounds; ``where`` ends the message (its source)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}' must be a finite number, got {value}{where}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise ConfigError(f"config key '{key}' must be >= {lo}, got {value}{where}")
    if hi is not None and value > hi:
        raise ConfigError(f"config key '{key}' must be <= {hi}, got {value}{where}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"config key '{key}' must be one of {list(choices)}, got {value!r}{where}")


_YAML_BOOL_WORDS = {"true": ("true", "yes", "on", "y"), "false": ("false", "no", "off", "n")}


def _unread_yaml_bool(value: str, choices: Any) -> str:
    """The choice a YAML boolean stood for: YAML reads a bare ``no`` as False, stored in a str field as "False"."""
    words = _YAML_BOOL_WORDS.get(value.lower())
    if words is None or value in choices:
        return value
    matches = [c for c in choices if isinstance(c, str) and c.lower() in words]
    return matches[0] if len(matches) == 1 else value


def validate(cfg: Any, prefix: str = "", source: Callable[[str], str] | None = None) -> None:
    """Check every field's declared bounds (``metadata`` min/max/choices), recursively.

    ``source(key)`` ends an error message with where the bad value came from (see :func:`load_config`).
    """
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            validate(value, key + ".", source)
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            if isinstance(value, str) and f.metadata.get("choices") is not None:
                value = _unread_yaml_bool(value, f.metadata["choices"])
                setattr(cfg, f.name, value)
            _check_bounds(key, value, f.metadata, source(key) if source is not None else "")


def set_value(cfg: Any, key: str, value: Any) -> Any:
    """Validate and set one (dotted) key in place; return the value as stored.

    ``value`` may be a string as typed in a GUI box; it is converted to the
    field's type. Refused values raise :class:`ConfigError` and leave ``cfg``
    unchanged.
    """
    obj, field = _field(cfg, key)
    current = getattr(obj, field.name)
    kind = type(current) if current is not None else str
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(value)
            converted: Any = value.lower() in ("true", "1", "yes", "on")
        elif kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        elif kind in (int, float, str, bool):
            converted = kind(value)
        else:
            merged = OmegaConf.to_object(OmegaConf.merge(OmegaConf.create({"v": current}), {"v": value}))
            assert isinstance(merged, dict)  # the merge of two {"v": ...} configs
            converted = merged["v"]
    except (TypeError, ValueError, OmegaConfBaseException) as e:
        raise ConfigError(f"config key '{key}' expects {kind.__name__}, got {value!r}") from e
    if isinstance(converted, (int, float, str)) and not isinstance(converted, bool):
        _check_bounds(key, converted, field.metadata)
    setattr(obj, field.name, converted)
    return converted


def get_value(cfg: Any, key: str) -> Any:
    obj, field = _field(cfg, key)
    return getattr(obj, field.name)


def field_type(cfg: Any, key: str) -> Any:
    """The declared type of the (dotted) config ``key`` (a front end picks its widget by it)."""
    owner = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part)
    return typing.get_type_hints(type(owner))[parts[-1]]


def editable_fields(cfg: Any, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    """All (dotted key, field, value) pairs, for building edit panels in viewers."""
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.extend(editable_fields(value, f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", f, value))
    return out
