"""Strict key checks of a config tree against a schema of frozen dataclasses.

A schema field is one key. Its annotation says what the key holds: another schema dataclass (a
section, checked in turn), `dict[str, Schema]` (named entries, each checked against Schema), or
anything else (a value, not looked into). Every key is required unless declared `optional(...)`;
defaults that dataclasses reused as schemas carry (ModelConfig, MediaConfig) serve code that builds
them directly and do not make a key optional. The tree's values live in configs/, not here.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Iterable


class ConfigError(ValueError):
  """A config that cannot work; the message is one line naming the key."""


def optional(default: Any = None, *, keys_of: type | None = None):
  """A key that may be absent; its reader applies `default`. `keys_of`: the value is a group of
  keys, any of that dataclass's fields (e.g. overrides of some BlockSizes fields)."""
  return dataclasses.field(default=default, metadata={"optional": True, "keys_of": keys_of})


def check_known(keys: Iterable[str], known: Iterable[str], where: str) -> None:
  """ConfigError for the first key that is not one of `known`, with the closest known key if any."""
  known = list(known)
  for key in keys:
    if key not in known:
      close = difflib.get_close_matches(key, known, n=1)
      hint = f"did you mean {where}.{close[0]}?" if close else f"{where} has {', '.join(sorted(known))}"
      raise ConfigError(f"{where}.{key} is not a known key ({hint})")


def check_section(cfg: Any, schema: type, where: str) -> None:
  """Every key of `cfg` is a field of `schema`, and every field not declared optional is a key of
  `cfg`; sections and named entries are checked the same way. Raises ConfigError naming the key."""
  keys = _keys(cfg, where)
  # A field marked derived (ModelConfig.image_base, ...) is set by code, never a key.
  fields = {f.name: f for f in dataclasses.fields(schema) if not f.metadata.get("derived")}
  check_known(keys, fields, where)
  hints = typing.get_type_hints(schema)
  for name, field in fields.items():
    key = f"{where}.{name}"
    if name not in keys:
      if not field.metadata.get("optional"):
        raise ConfigError(f"{key} is missing")
      continue
    value, kind = cfg[name], hints[name]
    if field.metadata.get("keys_of") is not None:
      if value is not None:
        check_known(_keys(value, key), [f.name for f in dataclasses.fields(field.metadata["keys_of"])], key)
    elif dataclasses.is_dataclass(kind):
      check_section(value, kind, key)
    elif typing.get_origin(kind) is dict and dataclasses.is_dataclass(typing.get_args(kind)[1]):
      for entry in _keys(value, key):
        check_section(value[entry], typing.get_args(kind)[1], f"{key}.{entry}")


def _keys(cfg: Any, where: str) -> list[str]:
  if not hasattr(cfg, "keys"):
    raise ConfigError(f"{where}={cfg!r} must be a group of keys")
  return list(cfg.keys())
