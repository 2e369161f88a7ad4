"""What config.data's sources read: each source's shards and kinds, and the mixed-shards switch.

The data presets (MIO's mixture per stage) are in configs/data.py; config.data's keys are declared
in mio_jax/config/training.py (DataSection).
"""

from __future__ import annotations

import logging
import os

from mio_jax import storage
from mio_jax.data.shards import KINDS


def under_data_dir(data_cfg, pattern: str) -> str:
  """A shard glob made absolute: relative ones are under data_cfg.data_dir."""
  if os.path.isabs(pattern) or storage.is_remote(pattern):
    return pattern
  return os.path.join(data_cfg.data_dir, pattern)


def source_shards(data_cfg, name: str) -> tuple[str, tuple[str, ...]]:
  """(glob, kinds kept) of source `name`: with data.mixed_shards set, that glob and the kind `name`
  (every source reads its own kind from one job's shards), else the source's shards and kinds."""
  if data_cfg.mixed_shards:
    if name not in KINDS:
      raise ValueError(f"config.data.mixed_shards is set but source {name!r} is not a sample kind "
                       f"({', '.join(KINDS)}); give it shards and kinds instead")
    return data_cfg.mixed_shards, (name,)
  kinds = tuple(k for k in data_cfg.sources[name].kinds.split(",") if k)
  unknown = set(kinds) - set(KINDS)
  if unknown:
    raise ValueError(f"config.data.sources.{name}.kinds: unknown kinds {sorted(unknown)}")
  return data_cfg.sources[name].shards, kinds


def shards_if_mixed(config) -> None:
  """data.mixed_shards set means training on shards: switches data.source from the smoke
  presets' "synthetic" to "shards" (the train loop calls it once the config is validated)."""
  if config.data.mixed_shards and config.data.source != "shards":
    logging.getLogger("mio_jax.data").info(
        "config.data.mixed_shards=%r: data.source %r -> 'shards'", config.data.mixed_shards,
        config.data.source)
    config.data.source = "shards"
