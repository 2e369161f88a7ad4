"""The codebook fit's config tree (configs/codebook.py), checked as strictly as training's.

`check_codebook_config(config)` runs first in mio_jax/codebook/fit.py: an unknown or a missing key,
or a value that cannot work, is one ConfigError line naming the key. The values are in
configs/codebook.py; what each does is in docs/codebook.md.
"""

from __future__ import annotations

import dataclasses

from mio_jax.config.keys import ConfigError, check_section
from mio_jax.config.training import MeshSection

__all__ = ["ConfigError", "CodebookConfig", "check_codebook_config"]

CHOICES = {
    "algorithm": ("lloyd", "minibatch"),
    "init": ("kmeans++", "random"),
    "reseed": ("farthest", "none"),
    "matmul_precision": ("default", "high", "highest"),
    "utilisation.method": ("none", "usage_ema"),
}


@dataclasses.dataclass(frozen=True)
class DataSection:
  embeddings: str  # a folder of .npy [n_i, d] float files, or a glob of them
  streams: int  # file i is read by stream i % streams; each gives global_batch / streams rows
  shuffle: bool  # per pass: files and each file's rows in a permutation seeded by seed


@dataclasses.dataclass(frozen=True)
class UtilisationSection:
  method: str  # "none" | "usage_ema": re-seed clusters used under min_usage x the uniform share
  usage_decay: float  # mini-batch: the usage EMA's decay per step
  min_usage: float  # fraction of 1 / num_clusters


@dataclasses.dataclass(frozen=True)
class CodebookConfig:
  data: DataSection
  num_clusters: int
  global_batch: int
  passes: int
  algorithm: str  # "lloyd" | "minibatch"
  init: str
  init_points: int
  block_size: int
  matmul_precision: str
  reseed: str
  reseed_pool: int
  utilisation: UtilisationSection
  seed: int
  mesh: MeshSection
  checkpoint_every: int
  keep: int
  async_checkpoint: bool
  log_every: int


def _check_values(c) -> None:
  for key, allowed in CHOICES.items():
    value = c
    for part in key.split("."):
      value = value[part]
    if value not in allowed:
      raise ConfigError(f"config.{key}={value!r} is not one of {', '.join(allowed)}")
  positive = ("num_clusters", "global_batch", "passes", "block_size", "reseed_pool", "keep", "log_every")
  for key in positive:
    if int(c[key]) < 1:
      raise ConfigError(f"config.{key}={c[key]} must be at least 1")
  if c.checkpoint_every < 0:
    raise ConfigError(f"config.checkpoint_every={c.checkpoint_every} must be 0 (only at the end) or positive")
  if c.init_points < c.num_clusters:
    raise ConfigError(f"config.init_points={c.init_points} must be at least config.num_clusters="
                      f"{c.num_clusters}")
  if not 0.0 <= c.utilisation.usage_decay < 1.0:
    raise ConfigError(f"config.utilisation.usage_decay={c.utilisation.usage_decay} must be in [0, 1)")
  if not 0.0 <= c.utilisation.min_usage < 1.0:
    raise ConfigError(f"config.utilisation.min_usage={c.utilisation.min_usage} must be in [0, 1)")
  if not c.data.embeddings:
    raise ConfigError("config.data.embeddings is empty: name a folder of .npy embedding files")


def check_codebook_config(config) -> None:
  """ConfigError naming the first unknown or missing key, or bad value, of a codebook fit config."""
  check_section(config, CodebookConfig, "config")
  _check_values(config)
