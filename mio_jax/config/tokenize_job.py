"""The tokenization job's config tree (configs/tokenize.py), checked as strictly as training's.

`check_tokenize_config_keys(config)` runs first in mio_jax/tokenize/job.py's run(): an unknown or a
missing key is one ConfigError line naming it. The values are in configs/tokenize.py.
"""

from __future__ import annotations

import dataclasses

from mio_jax.config.keys import ConfigError, check_section, optional
from mio_jax.tokenize.media import MediaConfig

__all__ = ["ConfigError", "TokenizeConfig", "check_tokenize_config_keys"]


@dataclasses.dataclass(frozen=True)
class MediaSection(MediaConfig):
  """config.media: every MediaConfig field (each required here) but the image side and resize
  (pair_video_mode may also be "auto" and num_frames 0: the image tokenizer's; job.media_config)."""
  image_size: int = optional(256)  # the image tokenizer's own side replaces it
  image_resize: str = optional("center_crop")  # the image tokenizer's own policy replaces it


@dataclasses.dataclass(frozen=True)
class TokenizeConfig:
  input: str  # manifests (comma-separated) or tfds:NAME/SPLIT
  output_dir: str
  tfds_data_dir: str
  image_tokenizer: str
  speech_tokenizer: str
  image_batch_size: int
  image_conv_impl: str
  speech_batch_size: int
  speech_pad_multiple: int
  shard_size: int
  process_index: int
  process_count: int
  distributed_init: bool
  num_workers: int
  prefetch_shards: int
  progress: bool
  media: MediaSection


def check_tokenize_config_keys(config) -> None:
  """ConfigError naming the first unknown or missing key of the tokenization job's config."""
  check_section(config, TokenizeConfig, "config")
